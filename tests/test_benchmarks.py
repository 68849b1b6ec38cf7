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


SPEED = [str(ROOT / "benchmarks" / "train_speed.py"), "--sizes", "32", "--batch", "2", "--steps", "2", "--warm", "1",
         "--rooms", "3", "--people", "3", "--workers", "0", "--dtypes", "float32", "bfloat16", "--device", "cpu"]
SPEED_LINE = r"^\s+32 px  (float32 |bfloat16) (resident|loader  )\s+([\d.]+) images/s\s+([\d.]+) ms/step(.*)$"


@pytest.mark.slow
def test_train_speed_measures_every_type_and_source_in_one_process(tmp_path):
    import re

    from depthmask_utils.train import TrainConfig, forward_dtype

    out = subprocess.run([sys.executable, *SPEED, "--data", str(tmp_path / "speed")], capture_output=True, text=True,
                         check=True).stdout
    lines = re.findall(SPEED_LINE, out, re.M)
    auto = str(forward_dtype(torch.device("cpu"), TrainConfig())).removeprefix("torch.")  # this CPU's own choice
    assert [(d.strip(), s.strip()) for d, s, *_ in lines] == [("float32", "resident"), ("bfloat16", "resident"),
                                                            (auto, "loader")]
    assert all(float(ms) > 0 for *_, ms, _ in lines)
    assert "x float32" in lines[1][-1] and f"x resident {auto}" in lines[2][-1]  # the loader against the model alone
    assert "no GPU here" in out


@pytest.mark.slow
def test_train_speed_under_ddp_checks_that_the_processes_agree(tmp_path):
    from test_distributed import torchrun

    # two gloo processes, uncertainty weighting: DDP averages the model's gradients, train_step the loss's
    r = torchrun(*SPEED, "--data", tmp_path / "speed")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 process(es)" in r.stdout and "uncertainty loss weights" in r.stdout
    assert r.stdout.count("weights' largest gap to process 0: 0.0e+00") == 3
    assert "every process ends each line with process 0's weights and loss weights: met" in r.stdout
    # and the check itself sees a difference where there is one
    probe = tmp_path / "probe.py"
    probe.write_text("import sys, torch\n"
                     f"sys.path.insert(0, {str(ROOT / 'benchmarks')!r})\n"
                     "from train_speed import equal_to_first_process\n"
                     "torch.distributed.init_process_group('gloo')\n"
                     "r = torch.distributed.get_rank()\n"
                     "gap = equal_to_first_process([torch.zeros(3), torch.full((2,), 0.25 * r)])\n"
                     f"open(f'{tmp_path}/gap{{r}}', 'w').write(str(gap))\n"
                     "torch.distributed.destroy_process_group()\n")  # exiting with it open can abort
    r = torchrun(probe)
    assert r.returncode == 0, r.stderr[-3000:]
    assert [(tmp_path / f"gap{rank}").read_text() for rank in (0, 1)] == ["0.25", "0.25"]  # both see the largest gap
