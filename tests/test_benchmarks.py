"""The pieces of the benchmarks that compute a figure, checked on inputs with a known answer."""

import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
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


def test_train_benchmark_rejects_an_unknown_set_in_one_line():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train.py"), "--set", "no_such=1"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "no_such: not a training value" in result.stderr
