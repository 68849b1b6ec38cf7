import numpy as np
import pytest
from PIL import Image

from depthmask_utils.backgrounds import center_crop_box, load_backgrounds, prepare_background, to_rgb
from depthmask_utils.errors import InputError


def _gradient(w=60, h=40):
    x = np.linspace(0, 255, w, dtype=np.float64)
    return np.stack([np.tile(x, (h, 1)), np.tile(x[::-1], (h, 1)), np.full((h, w), 90.0)], -1).astype(np.uint8)


@pytest.mark.parametrize("mode", ["RGB", "L", "LA", "P", "CMYK", "RGBA", "I;16", "I", "F"])
def test_any_mode_becomes_rgb(tmp_path, mode):
    base = Image.fromarray(_gradient())
    if mode == "I;16":
        im = Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 257)
        assert im.mode == "I;16"
    elif mode == "I":
        im = Image.fromarray(np.asarray(base.convert("L"), np.int32) * 257)
        assert im.mode == "I"
    elif mode == "F":
        im = base.convert("F")
    else:
        im = base.convert(mode)
    suffix = ".tif" if mode in ("CMYK", "I", "F") else ".png"
    im.save(tmp_path / f"x{suffix}")
    arr, rgb = prepare_background(tmp_path / f"x{suffix}", 32)
    assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8 and rgb.mode == "RGB"
    if mode in ("I;16", "I"):
        # 16-bit is rescaled from its full range, not clipped at 255
        gray = np.asarray(base.convert("L"), np.int16)
        assert np.abs(np.asarray(rgb)[..., 0].astype(np.int16) - gray).max() <= 1


def test_16bit_not_clipped():
    im = Image.fromarray(np.full((4, 4), 65535, np.uint16))
    assert np.asarray(to_rgb(im)).min() == 255


def test_exif_orientation_applied(tmp_path):
    im = Image.fromarray(_gradient(60, 40))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    im.save(tmp_path / "rot.jpg", exif=exif.tobytes())
    _, rgb = prepare_background(tmp_path / "rot.jpg", 16)
    assert rgb.size == (40, 60)


def test_center_crop_box():
    assert center_crop_box(100, 60) == (20, 0, 80, 60)
    assert center_crop_box(60, 101) == (0, 20, 60, 80)


def test_folder_report(tmp_path):
    Image.fromarray(_gradient()).save(tmp_path / "a.png")
    Image.fromarray(_gradient()).save(tmp_path / "b_copy.png")  # exact duplicate
    Image.fromarray(np.ascontiguousarray(_gradient()[:, ::-1])).save(tmp_path / "c.png")
    (tmp_path / "d.jpg").write_text("hello")
    (tmp_path / "e.jpg").write_bytes((tmp_path / "a.png").read_bytes()[:100])
    out = load_backgrounds(tmp_path, 24)
    assert out.sources == ["a.png", "c.png"]
    reasons = {s["file"]: s["reason"] for s in out.skipped}
    assert "duplicate of a.png" in reasons["b_copy.png"]
    assert "not an image" in reasons["d.jpg"]
    assert "e.jpg" in reasons


def test_empty_folder(tmp_path):
    with pytest.raises(InputError, match="no images found"):
        load_backgrounds(tmp_path, 24)
