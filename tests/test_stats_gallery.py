import io
import json
import subprocess
import sys
import zipfile

import numpy as np
from PIL import Image

from depthmask_utils.depth import label_depth
from depthmask_utils.gallery import make_galleries
from depthmask_utils.stats import batch_averaged, dataset_stats, load_stats, moments_from_hist
from depthmask_utils.storage import read_manifest


def test_moments_from_hist_exact():
    vals = np.random.default_rng(0).integers(0, 256, 10_000)
    hist = np.bincount(vals, minlength=256)[None]
    m, s, n = moments_from_hist(hist)
    assert n == 10_000
    assert abs(m[0] - vals.mean() / 255) < 1e-12 and abs(s[0] - vals.std() / 255) < 1e-12


def test_dataset_stats_against_brute_force(dataset):
    label_depth(dataset, "scene", progress=False)
    st = dataset_stats(dataset, workers=2, batch=8, progress=False)
    rows = read_manifest(dataset / "manifest.csv")
    pix = {"fg_bg": [], "mask": [], "depth": []}
    for r in rows:
        with zipfile.ZipFile(dataset / r["shard"]) as zf:
            for cat, ext in (("fg_bg", "jpg"), ("mask", "png"), ("depth", "png")):
                pix[cat].append(np.asarray(Image.open(io.BytesIO(zf.read(f"{cat}/{r['id']}.{ext}")))))
    for cat, arrs in pix.items():
        a = np.stack(arrs).astype(np.float64) / 255
        a = a.reshape(-1, a.shape[-1] if a.ndim == 4 else 1)
        assert np.allclose(st.exact[cat]["mean"], a.mean(0), atol=1e-12)
        assert np.allclose(st.exact[cat]["std"], a.std(0), atol=1e-12)
    fg = np.concatenate([np.asarray(Image.open(p))[np.asarray(Image.open(p))[..., 3] >= 128][:, :3]
                         for p in sorted((dataset / "fg").glob("*.png"))]).astype(np.float64) / 255
    assert np.allclose(st.exact["fg"]["mean"], fg.mean(0), atol=1e-12)
    saved = load_stats(dataset)
    assert set(saved) == {"bg", "fg", "fg_bg", "mask", "depth"}
    assert set(saved["fg_bg"]) == {"mean", "std", "count"} and len(saved["fg_bg"]["std"]) == 3
    assert saved["mask"]["count"] == len(rows) * 64 * 64
    # the reference approximation misses between-batch variance: too small
    assert all(a < e for a, e in zip(st.batch_averaged["fg_bg"]["std"], st.exact["fg_bg"]["std"]))


def test_batch_averaged_is_the_mean_of_batch_stds():
    got = batch_averaged([([0.1], [0.2]), ([0.3], [0.4])])
    assert np.allclose(got["mean"], [0.2]) and np.allclose(got["std"], [0.3])


def test_galleries_are_written(dataset):
    label_depth(dataset, "scene", progress=False)
    paths = make_galleries(dataset, n=8, strips=2)
    assert {p.name for p in paths} == {"bg.png", "fg.png", "fg_mask.png", "fg_bg.png", "mask.png", "depth.png",
                                       "strips.png"}
    for p in paths:
        im = Image.open(p)
        assert im.size[0] > 300 and np.asarray(im.convert("L")).std() > 10  # not blank


def test_cli_stats_and_gallery(dataset):
    out = subprocess.run([sys.executable, "-m", "depthmask_utils", "stats", str(dataset), "--workers", "1"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "fg_bg" in out.stdout and json.loads((dataset / "stats.json").read_text())["bg"]["count"] == 3 * 64 * 64
    out = subprocess.run([sys.executable, "-m", "depthmask_utils", "gallery", str(dataset), "--n", "4"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and (dataset / "gallery" / "strips.png").exists()
    out = subprocess.run([sys.executable, "-m", "depthmask_utils", "stats", str(dataset / "nope")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "dataset.json: missing" in out.stderr and "Traceback" not in out.stderr
