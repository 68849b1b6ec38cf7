import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from depthmask_utils.checkpoint import read_split
from depthmask_utils.data import CompositeDataset, to_inputs
from depthmask_utils.evaluate import evaluate, export_onnx, pair_inputs, predict
from depthmask_utils.errors import InputError
from depthmask_utils.train import TrainConfig, train

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def run(labelled, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    cfg = TrainConfig(epochs=1, sizes=(32,), batch_size=8, workers=0, device="cpu", model_options={"base": 8, "levels": 3})
    train(labelled, out, cfg, progress=False, log=lambda *_: None)
    return out


def cli(*args):
    return subprocess.run([sys.executable, "-m", "depthmask_utils", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=600)


def test_evaluate_writes_metrics_per_group(run, labelled):
    m = evaluate(run, labelled)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test"] == m["test"]
    keys = {"mask_iou", "mask_dice", "mask_boundary_f", "depth_rmse", "depth_abs_rel", "depth_delta1", "depth_ssim"}
    assert keys <= set(m["test"]) and set(m["groups"]) == {"unseen_bg", "unseen_fg", "unseen_both"}
    assert m["test"]["n"] == sum(g["n"] for g in m["groups"].values())
    bounded = ("mask_iou", "mask_dice", "mask_boundary_f", "depth_rmse", "depth_delta1")
    assert all(0 <= m["test"][k] <= 1 for k in bounded) and m["test"]["depth_abs_rel"] >= 0
    assert m["input_size"] == 32 and m["label_size"] == 64
    per_image = (run / "per_image.csv").read_text().splitlines()
    assert len(per_image) == m["test"]["n"] + 1
    # the outline's calibration covers every soft pixel of every test mask, at the labels' size
    split = read_split(run)
    test = CompositeDataset(labelled, "test", split_spec=split)
    masks = to_inputs(test[list(range(len(test)))], "cpu")["mask"]
    o = saved["outline"]
    assert o == m["outline"] and len(o["alpha"]) == len(o["pixels"]) == 20
    assert sum(o["pixels"]) == int(((masks > 0) & (masks < 1)).sum()) > 0
    assert all(v is None or 0 <= v <= 1 for k in ("mean_prob", "counted_as_person") for v in o[k])


def test_predict_any_size_and_folders(run, tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "bg").mkdir()
    (tmp_path / "comp").mkdir()
    for name, (w, h) in {"a": (100, 75), "b": (40, 64)}.items():
        bg = rng.integers(0, 255, (h, w, 3), np.uint8)
        comp = bg.copy()
        comp[h // 4:h // 2, w // 3:w // 2] = 250
        Image.fromarray(bg).save(tmp_path / "bg" / f"{name}.png")
        Image.fromarray(comp).save(tmp_path / "comp" / f"{name}.jpg")
    written = predict(run, tmp_path / "bg", tmp_path / "comp", tmp_path / "out", device="cpu")
    assert sorted(p.name for p in written) == ["a_depth.png", "a_mask.png", "b_depth.png", "b_mask.png"]
    assert Image.open(tmp_path / "out" / "a_mask.png").size == (100, 75)
    assert Image.open(tmp_path / "out" / "b_depth.png").size == (40, 64)
    # a background of another size is resized, and said so
    Image.fromarray(rng.integers(0, 255, (30, 30, 3), np.uint8)).save(tmp_path / "small.png")
    notes = []
    predict(run, tmp_path / "small.png", tmp_path / "comp" / "a.jpg", tmp_path / "out2", device="cpu", log=notes.append)
    assert notes and "resized" in notes[0] and Image.open(tmp_path / "out2" / "a_mask.png").size == (100, 75)


def test_predict_names_bad_files(run, tmp_path):
    (tmp_path / "fake.jpg").write_text("this is not a picture")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "bg.png")
    r = cli("predict", run, "--bg", tmp_path / "bg.png", "--fg-bg", tmp_path / "fake.jpg", "--out", tmp_path / "o")
    assert r.returncode == 2 and "fake.jpg: not a readable image" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "bgs").mkdir()
    (tmp_path / "comps").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "comps" / "x.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "bgs" / "y.png")
    with pytest.raises(InputError, match="no background named like x.png"):
        pair_inputs(tmp_path / "bgs", tmp_path / "comps")


def test_export_onnx_matches_pytorch(run, tmp_path):
    r = export_onnx(run, tmp_path / "model.onnx")
    assert (tmp_path / "model.onnx").stat().st_size == r["bytes"] > 0
    assert max(r["max_abs_diff"].values()) < 1e-4
    out = cli("export", run, "--out", tmp_path / "cli.onnx")
    assert out.returncode == 0 and "onnxruntime vs PyTorch" in out.stdout


def test_a_refined_model_trains_evaluates_and_exports(labelled, tmp_path):
    from depthmask_utils.models import MaskRefiner

    run = tmp_path / "refined"
    cfg = TrainConfig(epochs=1, sizes=(32,), batch_size=8, workers=0, device="cpu",
                      model_options={"base": 8, "levels": 2, "refine_from": 16})
    train(labelled, run, cfg, progress=False, log=lambda *_: None)
    from depthmask_utils.evaluate import load_model

    model, meta = load_model(run, "cpu")
    assert isinstance(model, MaskRefiner) and meta["size"] == 32
    m = evaluate(run, labelled)
    assert 0 <= m["test"]["mask_iou"] <= 1
    r = export_onnx(run, tmp_path / "refined.onnx")
    assert max(r["max_abs_diff"].values()) < 1e-4


def test_an_unshuffled_model_trains_evaluates_and_exports(labelled, tmp_path):
    """The sample profile's combination: unshuffle, nearest upsampling, depth_scale and flip-only geometry."""
    from depthmask_utils.evaluate import load_model

    run = tmp_path / "unshuffled"
    cfg = TrainConfig(epochs=1, sizes=(32,), batch_size=8, workers=0, device="cpu", depth_scale=0.5,
                      geometry="flip", model_options={"base": 8, "levels": 2, "unshuffle": 2, "upsample": "nearest"})
    train(labelled, run, cfg, progress=False, log=lambda *_: None)
    model, meta = load_model(run, "cpu")
    assert model.unshuffle == 2 and model.up[0].mode == "nearest" and meta["size"] == 32
    assert 0 <= evaluate(run, labelled)["test"]["mask_iou"] <= 1
    r = export_onnx(run, tmp_path / "unshuffled.onnx")
    assert max(r["max_abs_diff"].values()) < 1e-4
