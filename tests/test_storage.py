import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from depthmask_utils.errors import DatasetError
from depthmask_utils.storage import (atomic_write_bytes, decode_image, decode_png_gray, encode_jpeg_bgr, encode_png,
                                     open_shard, write_shard)


def test_fast_png_is_lossless_and_readable_by_pil():
    rng = np.random.default_rng(0)
    for arr in (rng.integers(0, 256, (37, 53), np.uint8), np.zeros((8, 8), np.uint8)):
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(arr)))), arr)
    rgba = rng.integers(0, 256, (5, 6, 4), np.uint8)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(rgba)))), rgba)


def test_jpeg_bgr_matches_pil_decoding():
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 250  # red
    dec = np.asarray(Image.open(io.BytesIO(encode_jpeg_bgr(rgb[..., ::-1].copy(), 95))))
    assert dec[..., 0].mean() > 240 and dec[..., 2].mean() < 10


def test_shards_are_reproducible_and_atomic(tmp_path):
    members = [("a/x.png", b"123"), ("b/y.jpg", b"4567")]
    write_shard(tmp_path / "one.zip", members)
    write_shard(tmp_path / "two.zip", iter(members))
    assert (tmp_path / "one.zip").read_bytes() == (tmp_path / "two.zip").read_bytes()

    def boom():
        yield "a", b"1"
        raise RuntimeError("worker died")

    with pytest.raises(RuntimeError):
        write_shard(tmp_path / "three.zip", boom())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.zip", "two.zip"]


def test_bad_shards_and_members_are_named(tmp_path):
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="bad.zip"):
        open_shard(tmp_path / "bad.zip")
    with pytest.raises(DatasetError, match="missing"):
        open_shard(tmp_path / "none.zip")
    with pytest.raises(DatasetError, match="mask/x.png"):
        decode_image(b"garbage", "mask/x.png")
    atomic_write_bytes(tmp_path / "f.bin", b"ok")
    assert (tmp_path / "f.bin").read_bytes() == b"ok"
    assert zipfile.is_zipfile(tmp_path / "bad.zip") is False


def test_fast_png_reader_agrees_with_pil_or_declines():
    rng = np.random.default_rng(1)
    mask = np.zeros((64, 48), np.uint8)
    mask[10:40, 5:30] = rng.integers(0, 256, (30, 25))
    assert np.array_equal(decode_png_gray(encode_png(mask)), mask)
    assert np.array_equal(decode_png_gray(encode_png(mask)), np.asarray(Image.open(io.BytesIO(encode_png(mask)))))
    for im in (Image.fromarray(mask), Image.fromarray(np.dstack([mask] * 3)), Image.fromarray(mask.astype(np.uint16) * 200)):
        buf = io.BytesIO()
        im.save(buf, "PNG")  # PIL's adaptive filters, RGB, 16-bit: not the fast path's format
        got = decode_png_gray(buf.getvalue())
        assert got is None or np.array_equal(got, np.asarray(im))
    assert decode_png_gray(b"not a png") is None
