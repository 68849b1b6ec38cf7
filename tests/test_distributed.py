"""Training on two processes (torchrun, gloo on the CPU) is training, not two trainings that drift."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from depthmask_utils import distributed
from depthmask_utils.data import CompositeDataset, make_loader
from depthmask_utils.evaluate import load_model
from depthmask_utils.train import RunError, TrainConfig, read_history, validate, validation_items

PROBE = Path(__file__).with_name("ddp_probe.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
CFG = {"epochs": 2, "sizes": [32], "batch_size": 8, "workers": 0, "device": "cpu", "checkpoint_every": 3,
       "model_options": {"base": 8, "levels": 3}, "val_samples": 25}


def torchrun(*args, wait=True, **kw):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, **{"timeout": 300, **kw})


@pytest.mark.slow
def test_both_processes_end_with_the_same_model_and_loss_weights_and_validate_as_one(labelled, tmp_path):
    run = tmp_path / "ddp"
    r = torchrun(PROBE, labelled, run, json.dumps({**CFG, "weighting": "uncertainty"}))
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = (torch.load(run / f"rank{i}.pt", weights_only=True) for i in (0, 1))
    assert a["open_after_train"] and b["open_after_train"]  # the group lives as long as the process ...
    assert [(run / f"rank{i}.exit").read_text() for i in (0, 1)] == ["closed", "closed"]  # ... and ends with it
    assert not torch.equal(a["criterion"]["log_vars"], torch.zeros(2))  # the loss weights did learn
    torch.testing.assert_close(a["criterion"], b["criterion"], rtol=0, atol=0)  # ... the same on both
    torch.testing.assert_close(a["model"], b["model"], rtol=0, atol=0)
    # Validation split over the processes gives what one process gives over the whole split.
    model, meta = load_model(run)
    items = validation_items(CompositeDataset(labelled, "val").items, CFG["val_samples"])
    one = validate(model, make_loader(CompositeDataset(labelled, items, 32), 64, workers=0), torch.device("cpu"))
    assert a["validation"] == b["validation"]
    for k, v in one.items():  # float32 per image, batched differently: equal to ~1e-7
        assert a["validation"][k] == pytest.approx(v, abs=1e-6)
    h = read_history(run)
    assert h["val_mask_iou"].iloc[-1] == pytest.approx(one["val_mask_iou"], abs=1e-6)
    assert json.loads((run / "config.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_a_killed_ddp_run_resumes_to_the_same_weights_as_an_uninterrupted_one(labelled, tmp_path):
    cli = ["-m", "depthmask_utils", "train", labelled, "--epochs", "2", "--size", "32", "--batch-size", "8",
           "--workers", "0", "--no-progress", "--device", "cpu", "--checkpoint-every", "3"]
    r = torchrun(*cli, "--out", tmp_path / "whole")
    assert r.returncode == 0, r.stderr[-3000:]
    proc = torchrun(*cli, "--out", tmp_path / "killed", wait=False)
    last = tmp_path / "killed" / "checkpoints" / "last.pt"
    while not last.exists() and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "model.pt").exists(), "killed too late to test a resume"
    r = torchrun(*cli, "--out", tmp_path / "killed")
    assert r.returncode == 0, r.stderr[-3000:]
    whole, resumed = (torch.load(tmp_path / d / "model.pt", weights_only=True)["state_dict"] for d in ("whole", "killed"))
    torch.testing.assert_close(resumed, whole, rtol=0, atol=0)
    h_whole, h_resumed = read_history(tmp_path / "whole"), read_history(tmp_path / "killed")
    assert h_resumed[["step", "train_loss", "val_mask_iou"]].equals(h_whole[["step", "train_loss", "val_mask_iou"]])


@pytest.mark.slow
def test_a_mismatched_run_folder_stops_every_process_with_its_message_and_other_world_sizes_are_refused(labelled,
                                                                                                       tmp_path):
    from depthmask_utils.train import train

    one = TrainConfig.from_dict({**CFG, "epochs": 1})
    train(labelled, tmp_path / "run", one, progress=False, log=lambda *_: None)
    # Another configuration in the same folder: the first process finds out; both must stop, with its message.
    r = torchrun("-m", "depthmask_utils", "train", labelled, "--out", tmp_path / "run", "--epochs", "3", "--size", "32",
                 "--batch-size", "8", "--workers", "0", "--no-progress", "--device", "cpu", timeout=300)
    assert r.returncode != 0 and "was trained with 1 process(es), not 2" in r.stderr
    assert r.stderr.count("error: ") == 2  # both processes said it, in one line each, and neither hung


def test_the_group_is_ended_at_exit_unless_the_process_is_dying_of_an_error(monkeypatch):
    import socket

    with socket.socket() as s:  # a free port for a one-process group
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        monkeypatch.setattr(sys, "last_value", RuntimeError("uncaught"), raising=False)
        distributed._end_group()  # NCCL could wait forever for what a dead peer never joins: left to the OS
        assert torch.distributed.is_initialized()
        monkeypatch.delattr(sys, "last_value")
        distributed._end_group()  # a clean exit ends it
        assert not torch.distributed.is_initialized()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def test_without_torchrun_the_helpers_are_single_process():
    assert distributed.environment() == (0, 1, 0) and not distributed.active()
    assert distributed.init(1, cuda=False) is False and not torch.distributed.is_initialized()  # nothing to make
    assert distributed.sum_over_processes([1.5, 2.0], torch.device("cpu")) == [1.5, 2.0]
    assert distributed.gather({"a": 1}) == [{"a": 1}] and distributed.shard(list(range(5)), 1, 2) == [1, 3]
    calls = []
    distributed.on_first_process(lambda: calls.append(1), 0, RunError)
    distributed.on_first_process(lambda: calls.append(2), 1, RunError)
    assert calls == [1]
