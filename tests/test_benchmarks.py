"""The pieces of the benchmarks that compute a figure, checked on inputs with a known answer."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from mask_ceiling import jpeg_roundtrip, oracle_alpha  # noqa: E402


def test_oracle_alpha_recovers_the_blend_and_jpeg_disturbs_it():
    rng = np.random.default_rng(0)
    bg = rng.integers(0, 120, (32, 32, 3)).astype(np.uint8)
    colour = np.zeros((32, 32, 3), np.float32)
    colour[8:24, 8:24] = (230, 40, 200)
    alpha = np.zeros((32, 32), np.float32)
    alpha[8:24, 8:24] = np.linspace(0.05, 1, 16)[None, :]  # a ramp across the person
    fg_bg = np.rint(alpha[..., None] * colour + (1 - alpha[..., None]) * bg).astype(np.uint8)
    a = oracle_alpha(fg_bg, bg, colour, alpha > 0)[0, 0].numpy()
    assert np.abs(a - alpha).max() < 2 / 255  # rounding to uint8 only
    assert a[:, :4].max() == 0  # beyond the reach of the known colour
    # Through a JPEG the same oracle is off by more, and more so with 4:2:0 chroma than with 4:4:4.
    err = {c: np.abs(oracle_alpha(jpeg_roundtrip(fg_bg, 90, c), bg, colour, alpha > 0)[0, 0].numpy() - alpha).mean()
           for c in ("420", "444")}
    assert err["420"] > err["444"] > np.abs(a - alpha).mean()


def test_train_benchmark_set_applies_values_through_the_config():
    import argparse

    import pytest
    from train import apply_sets

    from depthmask_utils.train import TrainConfig

    ap = argparse.ArgumentParser()
    base = TrainConfig(model_options={"base": 16, "unshuffle": 2}, workers=1)
    cfg = apply_sets(ap, base, ["edge_weight=5", "model_options.refine=8", "sizes=[64,128]", "geometry=flip"])
    assert cfg.edge_weight == 5 and cfg.sizes == (64, 128) and cfg.geometry == "flip"
    assert cfg.model_options == {"base": 16, "unshuffle": 2, "refine": 8} and cfg.workers == 1
    assert base.edge_weight == 1 and "refine" not in base.model_options  # the profile's config is left alone
    for bad in (["workers=4"], ["no_such=1"], ["model_options={}"], ["edge_weight"], ["geometry=warp"]):
        with pytest.raises(SystemExit):  # argparse's error: a message and exit code 2
            apply_sets(ap, base, bad)
