import errno
import io
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from depthmask_utils import storage
from depthmask_utils.errors import DatasetError, InputError
from depthmask_utils.compositing import ForegroundPyramid, blend_premultiplied, composite, premultiply
from depthmask_utils.overlay import generate
from depthmask_utils.placement import placement_rng, plan_placements
from depthmask_utils.dataset import verify
from depthmask_utils.sample import render_person
from depthmask_utils.storage import decode_image, read_json, read_manifest

ROOT = Path(__file__).resolve().parent.parent


@settings(max_examples=60, deadline=None)
@given(fw=st.integers(1, 300), fh=st.integers(1, 300), size=st.integers(32, 256), n=st.integers(1, 20),
       lo=st.floats(0.2, 0.6), span=st.floats(0.0, 0.4), seed=st.integers(0, 2**32 - 1))
def test_placements_distinct_in_bounds_deterministic(fw, fh, size, n, lo, span, seed):
    scale = (lo, min(1.0, lo + span))
    try:
        boxes = plan_placements(fw, fh, size, n, scale, np.random.default_rng(seed))
    except ValueError as exc:  # refused only when the frame cannot hold n distinct boxes
        from depthmask_utils.placement import fit_box

        sizes = {fit_box(fw, fh, size, hh / size) for hh in range(1, size + 1) if lo * size - 1 <= hh <= scale[1] * size + 1}
        assert sum((size - w + 1) * (size - h + 1) for w, h in sizes) < 4 * n, exc
        return
    again = plan_placements(fw, fh, size, n, scale, np.random.default_rng(seed))
    assert np.array_equal(boxes, again)
    assert len({tuple(b) for b in boxes.tolist()}) == n
    x, y, w, h = boxes.T
    assert (x >= 0).all() and (y >= 0).all() and (x + w <= size).all() and (y + h <= size).all()
    assert (w >= 1).all() and (h >= 1).all()
    # aspect kept to within rounding
    assert np.all(np.abs(w / h - fw / fh) <= (fw / fh) * (1 / h) + 1 / h + 1e-9)


def test_shard_members_are_composite_and_encode_png():
    # The generator blends into one working frame and pastes masks into one PNG row buffer, restoring
    # both after each composite; the bytes must be those of the plain functions, in every position.
    from depthmask_utils.overlay import shard_members

    rng = np.random.default_rng(5)
    bgr = rng.integers(0, 256, (64, 64, 3), np.uint8)
    pyramids = [ForegroundPyramid(rng.integers(0, 256, (90, 40, 4), np.uint8), 70, 8)]
    rows = [{"id": f"c{i}", "fg": 0, "flip": i % 2, "x": x, "y": y, "w": w, "h": h}
            for i, (x, y, w, h) in enumerate([(0, 0, 20, 45), (44, 19, 20, 45), (10, 30, 5, 11), (0, 0, 28, 64),
                                              (30, 2, 12, 27), (0, 0, 20, 45)])]
    members = list(shard_members(bgr, pyramids, rows, 90))
    assert [m for m, _ in members] == [f"{c}/{r['id']}.{e}" for r in rows for c, e in (("fg_bg", "jpg"), ("mask", "png"))]
    for r, ((_, jpeg), (_, png)) in zip(rows, zip(members[::2], members[1::2])):
        fg_bg, mask = composite(bgr, pyramids[0].placed(r["flip"], r["w"], r["h"]), r["x"], r["y"])
        assert jpeg == storage.encode_jpeg_bgr(fg_bg, 90) and png == storage.encode_png(mask)


def test_placement_streams_differ_per_key():
    a = plan_placements(50, 100, 224, 20, (0.35, 0.65), placement_rng(0, 1, 2, 0))
    b = plan_placements(50, 100, 224, 20, (0.35, 0.65), placement_rng(0, 1, 2, 1))
    c = plan_placements(50, 100, 224, 20, (0.35, 0.65), placement_rng(0, 2, 1, 0))
    assert not np.array_equal(a, b) and not np.array_equal(a, c)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), x=st.integers(0, 30), y=st.integers(0, 30))
def test_composite_outside_is_bg_inside_is_fg(seed, x, y):
    rng = np.random.default_rng(seed)
    bg = rng.integers(0, 256, (64, 64, 3), np.uint8)
    fg = rng.integers(0, 256, (20, 16, 4), np.uint8)
    fg[..., 3] = rng.choice([0, 255, 128], size=(20, 16))
    out, mask = composite(bg, premultiply(fg), x, y)
    outside = mask == 0
    assert np.array_equal(out[outside], bg[outside])
    placed_fg = np.zeros_like(bg)
    placed_fg[y:y + 20, x:x + 16] = fg[..., :3]
    inside = mask == 255
    assert np.array_equal(out[inside], placed_fg[inside])
    half = mask == 128
    expected = (placed_fg[half].astype(int) * 128 / 255 + bg[half].astype(int) * 127 / 255)
    assert np.abs(out[half] - expected).max() <= 1.0


def test_blend_equals_the_integer_formula_for_every_pair():
    # Every (background value, alpha) pair, and a premultiplied colour at both ends of its range.
    a = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 256, axis=1)
    bg = np.repeat(np.arange(256, dtype=np.uint8)[None, :], 256, axis=0)
    for colour in (np.zeros_like(a), a):
        fgp = np.dstack([colour, colour, colour, a])
        bg3 = np.dstack([bg, bg, bg])
        expected = colour[..., None] + (bg3.astype(np.uint16) * (255 - a[..., None].astype(np.uint16)) + 127) // 255
        assert expected.max() <= 255
        assert np.array_equal(blend_premultiplied(bg3, fgp), expected.astype(np.uint8))


@settings(max_examples=20, deadline=None)
@given(x=st.integers(0, 40), y=st.integers(0, 40), colour=st.tuples(*[st.integers(0, 255)] * 3))
def test_stored_composite_matches_up_to_jpeg_tolerance(x, y, colour):
    yy, xx = np.mgrid[0:64, 0:64]
    bg = np.dstack([xx * 3, yy * 3, 255 - xx * 2]).astype(np.uint8)  # photo-like: smooth
    fg = np.zeros((20, 20, 4), np.uint8)
    fg[...] = colour + (255,)
    out, mask = composite(bg, premultiply(fg), x, y)
    inside = np.zeros((64, 64), bool)
    inside[y + 4:y + 16, x + 4:x + 16] = True  # away from the edge, where JPEG rings
    far = np.ones((64, 64), bool)
    far[max(0, y - 8):y + 28, max(0, x - 8):x + 28] = False
    for chroma in storage.JPEG_CHROMA:  # the stored 4:4:4, and 4:2:0 for folders made before it
        dec = decode_image(storage.encode_jpeg_bgr(np.ascontiguousarray(out[..., ::-1]), 90, chroma)).astype(int)
        # JPEG error: small on average, bounded everywhere
        for got, want in ((dec[inside], np.array(colour)), (dec[far], bg[far])):
            err = np.abs(got - want)
            assert err.mean() <= 4 and err.max() <= 40


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 50), h=st.integers(8, 90), flip=st.integers(0, 1))
def test_pyramid_composite_leaves_the_room_untouched_outside_the_mask(seed, h, flip):
    fg = render_person(seed, 120)
    pyr = ForegroundPyramid(fg, 96)
    w = max(1, round(h * fg.shape[1] / fg.shape[0]))
    bg = np.random.default_rng(seed).integers(0, 256, (96, 96 + w, 3), np.uint8)
    placed = pyr.placed(flip, w, h)
    assert (placed[..., :3] <= placed[..., 3:]).all()
    out, mask = composite(bg, placed, 3, 2)
    assert np.array_equal(out[mask == 0], bg[mask == 0])
    inside = mask == 255
    assert np.array_equal(out[inside], placed[..., :3][placed[..., 3] == 255])


def test_premultiplied_resize_does_not_bleed():
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 0] = 255  # transparent pixels are pure red
    rgba[10:30, 10:30] = (0, 0, 255, 255)  # an opaque blue square
    placed = ForegroundPyramid(rgba, 40).placed(0, 13, 13)
    edge = placed[..., 3] > 0
    assert placed[..., 0][edge].max() <= 2, "red from transparent pixels leaked into the edge"


def test_generate_counts_manifest_and_verify(built):
    info = read_json(built / "dataset.json")
    rows = read_manifest(built / "manifest.csv")
    assert info["counts"]["composites"] == len(rows) == 3 * 4 * 2 * 3
    assert list(rows[0])[:10] == storage.MANIFEST_FIELDS
    assert len({r["id"] for r in rows}) == len(rows)
    with zipfile.ZipFile(built / "shards" / "bg_000.zip") as zf:
        names = zf.namelist()
        assert len(names) == 2 * 4 * 2 * 3 and all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        r = rows[5]
        mask = decode_image(zf.read(f"mask/{r['id']}.png"))
        x, y, w, h = (int(r[k]) for k in "xywh")
        assert mask[y:y + h, x:x + w].max() == 255 and mask.sum() == mask[y:y + h, x:x + w].sum()
        assert decode_image(zf.read(f"fg_bg/{r['id']}.jpg")).shape == (64, 64, 3)
    assert [f["method"] for f in info["inputs"]["fg"]] == ["alpha"] * 3 + ["fuzzy-select"]
    assert verify(built, workers=1).ok


def test_verify_finds_a_wrong_mask_and_a_missing_member(dataset):
    shard = dataset / "shards" / "bg_001.zip"
    with zipfile.ZipFile(shard) as zf:
        members = [(n, zf.read(n)) for n in zf.namelist()]
    bad = np.zeros((64, 64), np.uint8)
    members = [(n, storage.encode_png(bad) if i == 1 else d) for i, (n, d) in enumerate(members)][:-1]
    storage.write_shard(shard, members)
    report = verify(dataset, workers=1)
    assert not report.ok
    text = "\n".join(report.problems)
    assert "pixels differ from the fg alpha" in text and "missing" in text and "bg_001.zip" in text
    assert verify(dataset, workers=1, shards=["bg_000.zip"]).ok  # one other shard: nothing wrong there
    assert verify(dataset, workers=1, shards=["bg_001.zip"]).problems == report.problems
    out = subprocess.run([sys.executable, "-m", "depthmask_utils", "verify", str(dataset)], capture_output=True, text=True)
    assert out.returncode == 1 and "Traceback" not in out.stderr


def _files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and (p.suffix in (".zip",) or p.name == "manifest.csv")}


@pytest.mark.slow
def test_resume_after_kill_is_byte_identical(world, tmp_path):
    args = [sys.executable, "-m", "depthmask_utils", "generate", "--bg", str(world / "bg"), "--fg", str(world / "fg"),
            "--size", "128", "--placements", "40", "--workers", "1"]  # ~0.1 s a shard: the kill lands mid-run
    ref = tmp_path / "ref"
    subprocess.run(args + ["--out", str(ref)], check=True, capture_output=True)
    victim = tmp_path / "victim"
    proc = subprocess.Popen(args + ["--out", str(victim)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not list((victim / "shards").glob("bg_*.zip")):
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    finished = sorted(p.name for p in (victim / "shards").glob("bg_*.zip"))
    assert 1 <= len(finished) < 3, "the kill should land mid-run"
    assert not (victim / "dataset.json").exists(), "an interrupted dataset must not look finished"
    subprocess.run(args + ["--out", str(victim)], check=True, capture_output=True)
    assert not list((victim / "shards").glob(".*tmp*")), "temporary files left behind"
    assert _files(victim) == _files(ref)


def test_disk_full_mid_shard_leaves_no_finished_looking_shard(world, tmp_path, monkeypatch):
    calls = {"n": 0}

    class FillsUp(io.BufferedWriter):
        def write(self, data):
            calls["n"] += 1
            if calls["n"] == 30:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data)

    def failing_open(path, mode="r", buffering=-1, **kw):
        assert mode == "wb"
        return FillsUp(io.FileIO(path, "w"), max(buffering, 1))

    monkeypatch.setattr(storage, "open", failing_open, raising=False)  # write_shard's open
    out = tmp_path / "ds"
    with pytest.raises(DatasetError, match="disk full"):
        generate(world / "bg", world / "fg", out, size=64, placements=3, workers=1, progress=False)
    assert calls["n"] >= 30
    assert list((out / "shards").iterdir()) == [], "a half shard or its temporary file was left behind"
    assert not (out / "dataset.json").exists()
    monkeypatch.delattr(storage, "open")
    generate(world / "bg", world / "fg", out, size=64, placements=3, workers=1, progress=False)
    assert verify(out, workers=1).ok


def test_bad_inputs_are_listed_not_silently_dropped(world, tmp_path):
    bg, fg = tmp_path / "bg", tmp_path / "fg"
    shutil.copytree(world / "bg", bg)
    shutil.copytree(world / "fg", fg)
    (bg / "broken.jpg").write_bytes((bg / "room_000.jpg").read_bytes()[:300])
    (bg / "readme.png").write_text("not an image")
    Image.fromarray(np.zeros((30, 30, 4), np.uint8), "RGBA").save(fg / "ghost.png")
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 30, 3), np.uint8)).save(fg / "busy.jpg")
    # A photo of a person that was never cut out would be a silently smaller dataset: it stops generate.
    cli = [sys.executable, "-m", "depthmask_utils", "generate", "--bg", str(bg), "--fg", str(fg), "--size", "48",
           "--placements", "2"]
    out = subprocess.run(cli + ["--out", str(tmp_path / "ds0")], capture_output=True, text=True)
    assert out.returncode == 2 and "busy.jpg" in out.stderr and "chapter 01" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "ds0" / "dataset.json").exists()
    (fg / "busy.jpg").unlink()
    lines = []
    r = generate(bg, fg, tmp_path / "ds", size=48, placements=2, workers=2, progress=False, log=lines.append)
    assert (r.n_bg, r.n_fg) == (3, 4) and r.composites == 3 * 4 * 2 * 2
    skipped = {s["file"]: s["reason"] for s in read_json(tmp_path / "ds" / "dataset.json")["skipped"]}
    assert set(skipped) == {"broken.jpg", "readme.png", "ghost.png"}
    assert "fully transparent" in skipped["ghost.png"]
    assert lines[0].startswith("inputs: 3 backgrounds, 4 foregrounds; skipped 3: ") and "ghost.png" in lines[0]
    out = subprocess.run(cli + ["--out", str(tmp_path / "ds2")], capture_output=True, text=True)
    assert out.returncode == 0 and "skipped fg ghost.png: fully transparent" in out.stderr


def test_unusable_folders_fail_clearly(world, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no images found"):
        generate(empty, world / "fg", tmp_path / "ds", size=48, placements=2, progress=False)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.png").write_text("nope")
    with pytest.raises(InputError, match="no usable backgrounds.*a.png"):
        generate(junk, world / "fg", tmp_path / "ds", size=48, placements=2, progress=False)
    out = subprocess.run([sys.executable, "-m", "depthmask_utils", "generate", "--bg", str(empty), "--fg",
                          str(world / "fg"), "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert out.returncode == 2 and "error:" in out.stderr and str(empty) in out.stderr and "Traceback" not in out.stderr


def test_other_parameters_refuse_to_mix(built, tmp_path, world):
    dst = tmp_path / "ds"
    shutil.copytree(built, dst)
    with pytest.raises(DatasetError, match="other parameters"):
        generate(world / "bg", world / "fg", dst, size=64, placements=4, workers=1, progress=False)


def test_composites_are_stored_with_full_resolution_chroma(built, tmp_path, world):
    import json

    params = json.loads((built / "params.json").read_text())
    assert params["jpeg_chroma"] == "444"
    with zipfile.ZipFile(built / "shards" / "bg_000.zip") as zf:
        jpeg = zf.read(next(n for n in zf.namelist() if n.startswith("fg_bg/")))
    assert [layer[1:3] for layer in Image.open(io.BytesIO(jpeg)).layer] == [(1, 1)] * 3
    with pytest.raises(ValueError, match="jpeg_chroma must be one of 444, 420"):
        generate(world / "bg", world / "fg", tmp_path / "x", size=64, jpeg_chroma="4:4:4", progress=False)
    # A folder from before the option holds OpenCV's default, 4:2:0: it is that dataset, not this one.
    dst = tmp_path / "old"
    shutil.copytree(built, dst)
    (dst / "params.json").write_text(json.dumps({k: v for k, v in params.items() if k != "jpeg_chroma"}))
    kw = dict(size=params["size"], placements=params["placements"], workers=1, progress=False)
    with pytest.raises(DatasetError, match="differs in: jpeg_chroma"):
        generate(world / "bg", world / "fg", dst, **kw)
    assert generate(world / "bg", world / "fg", dst, jpeg_chroma="420", **kw).shards_written == 0
    # The option reaches the workers: a fresh 4:2:0 dataset stores 4:2:0 members.
    fresh = generate(world / "bg", world / "fg", tmp_path / "420", jpeg_chroma="420", **kw)
    assert fresh.composites == params["placements"] * 2 * 3 * 4 and read_json(tmp_path / "420" / "params.json")["jpeg_chroma"] == "420"
    with zipfile.ZipFile(tmp_path / "420" / "shards" / "bg_000.zip") as zf:
        jpeg = zf.read(next(n for n in zf.namelist() if n.startswith("fg_bg/")))
    assert Image.open(io.BytesIO(jpeg)).layer[0][1:3] == (2, 2)


def test_a_dataset_planned_by_an_older_version_is_not_resumed(built, tmp_path, world):
    import json

    from depthmask_utils.placement import PLAN_VERSION

    dst = tmp_path / "ds"
    shutil.copytree(built, dst)
    params = json.loads((dst / "params.json").read_text())
    assert params["plan_version"] == PLAN_VERSION
    info = json.loads((built / "dataset.json").read_text())
    # Finished by an older version that deflated masks otherwise: nothing to write, so it is kept.
    (dst / "params.json").write_text(json.dumps({**params, "png_deflate": "zlib-1"}))
    before = {f: f.read_bytes() for f in dst.rglob("*") if f.is_file()}
    kept = generate(world / "bg", world / "fg", dst, size=info["params"]["size"],
                    placements=info["params"]["placements"], workers=1, progress=False)
    assert kept.shards_written == 0 and kept.composites == info["counts"]["composites"]
    assert {f: f.read_bytes() for f in dst.rglob("*") if f.is_file()} == before  # params.json included
    next(dst.glob("shards/*.zip")).unlink()  # unfinished: a resume would mix two plans
    # The same for a dataset whose masks another deflate wrote (other bytes for the same pixels).
    for older in ({"plan_version": PLAN_VERSION - 1}, {"png_deflate": "zlib-1"}):
        (dst / "params.json").write_text(json.dumps({**params, **older}))
        with pytest.raises(DatasetError, match="other parameters"):
            generate(world / "bg", world / "fg", dst, size=info["params"]["size"],
                     placements=info["params"]["placements"], workers=1, progress=False)


def test_a_finished_dataset_made_with_other_values_is_not_reused_silently(dataset):
    import json
    from dataclasses import replace

    from depthmask_utils.config import get_profile
    from depthmask_utils.pipeline import check_dataset_matches, ensure_dataset

    # The profile the `built` fixture was generated with, and a data root holding it where the pipeline looks.
    profile = replace(get_profile("sample"), name="tiny", size=64, placements=3, scale=(0.35, 0.65), seed=0,
                      min_composites=0)
    check_dataset_matches(profile, dataset)  # the same values: reused as it is
    root = dataset.parent / "root"
    (root / "tiny").mkdir(parents=True)
    dataset.rename(root / "tiny" / "dataset")
    assert ensure_dataset(profile, root) == root / "tiny" / "dataset"
    with pytest.raises(DatasetError, match="jpeg_chroma '444' \\(profile 'tiny': '420'\\)"):
        ensure_dataset(replace(profile, jpeg_chroma="420"), root)
    # A folder from before the option (no jpeg_chroma in params.json) holds 4:2:0 composites.
    params = root / "tiny" / "dataset" / "params.json"
    params.write_text(json.dumps({k: v for k, v in json.loads(params.read_text()).items() if k != "jpeg_chroma"}))
    with pytest.raises(DatasetError, match="jpeg_chroma '420'.*Delete the folder"):
        check_dataset_matches(profile, root / "tiny" / "dataset")
    with pytest.raises(DatasetError, match="size 64 \\(profile 'tiny': 128\\)"):
        check_dataset_matches(replace(profile, size=128, jpeg_chroma="420"), root / "tiny" / "dataset")


def test_each_room_holds_its_turn_of_the_people(world, tmp_path):
    from depthmask_utils.placement import foregrounds_for

    said = []
    out = tmp_path / "ds"
    result = generate(world / "bg", world / "fg", out, size=64, placements=3, workers=1, progress=False,
                      fg_per_bg=2, log=said.append)
    rows = read_manifest(out / "manifest.csv")
    assert result.composites == len(rows) == 3 * 2 * 2 * 3  # rooms x people per room x flips x placements
    assert "3 bg x 2 of 4 fg x 2 flips -> 36 composites" in repr(result)
    assert "people per background: 2 of 4, in turn, so each appears in as many rooms" in said
    for bg in range(3):
        assert sorted({int(r["fg"]) for r in rows if int(r["bg"]) == bg}) == foregrounds_for(bg, 4, 2)
    assert read_json(out / "dataset.json")["counts"]["fg_per_bg"] == 2
    assert read_json(out / "params.json")["fg_per_bg"] == 2
    assert verify(out, workers=1).ok
    with pytest.raises(DatasetError, match="differs in: fg_per_bg"):  # every person now: not these shards
        generate(world / "bg", world / "fg", out, size=64, placements=3, workers=1, progress=False, fg_per_bg=0)


def test_a_sample_world_dataset_of_other_counts_is_not_reused(world, tmp_path):
    from dataclasses import replace

    from depthmask_utils.config import get_profile
    from depthmask_utils.pipeline import check_dataset_matches

    base = tmp_path / "tiny"  # a data root's profile folder: the sample world beside its dataset
    shutil.copytree(world, base / "world")
    generate(base / "world" / "bg", base / "world" / "fg", base / "dataset", size=64, placements=3, workers=1,
             progress=False)
    profile = replace(get_profile("sample"), name="tiny", n_bg=3, n_fg=4, size=64, placements=3, min_composites=0)
    check_dataset_matches(profile, base / "dataset")
    # The course's sample world grew from 8 to 32 people: a dataset of the old world must not feed it.
    with pytest.raises(DatasetError, match="fg 4 \\(profile 'tiny': 32\\)"):
        check_dataset_matches(replace(profile, n_fg=32), base / "dataset")
    with pytest.raises(DatasetError, match="fg_per_bg None \\(profile 'tiny': 2\\)"):
        check_dataset_matches(replace(profile, fg_per_bg=2), base / "dataset")
