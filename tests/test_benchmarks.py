"""The pieces of the benchmarks that compute a figure, checked on inputs with a known answer."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from mask_ceiling import jpeg_roundtrip, oracle_alpha  # noqa: E402
from mask_errors import error_breakdown, iou_at  # noqa: E402


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


def test_train_benchmark_rejects_an_unknown_set_in_one_line():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train.py"), "--set", "no_such=1"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "no_such: not a training value" in result.stderr


def test_mask_errors_places_a_shifted_outline_on_the_outline_and_a_blob_beyond_it():
    t = torch.zeros(1, 1, 32, 32)
    t[..., 8:24, 8:24] = 1
    t[..., 8:24, 24] = 0.4  # a soft column that the truth, binarised at 0.5, counts as room
    shifted = torch.roll((t >= 0.5).float(), 1, -1)  # one column too many on the right, one too few on the left
    b = error_breakdown(shifted, t)
    assert b["on_outline"] == b["within_1px"] == 1.0 and b["beyond_2px"] == 0
    assert b["false_person"] == b["false_room"] == 0.5 and b["wrong_per_image"] == 32
    blob = (t >= 0.5).float()
    blob[..., 0:2, 0:2] = 1  # four pixels of person far from anybody
    assert error_breakdown(blob, t) == {"on_outline": 0.0, "within_1px": 0.0, "within_2px": 0.0, "beyond_2px": 1.0,
                                        "false_person": 1.0, "false_room": 0.0, "wrong_per_image": 4.0}
    # the soft column at 0.4: a prediction of 0.45 there is person at a threshold of 0.4, room at 0.5
    prob = (t >= 0.5).float()
    prob[..., 8:24, 24] = 0.45
    assert iou_at(prob, t, 0.5) == 1.0 and iou_at(prob, t, 0.4) == pytest.approx(256 / 272)
