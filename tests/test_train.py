import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

from depthmask_utils import train as T
from depthmask_utils.errors import ConfigError
from depthmask_utils.train import (RunError, TrainConfig, amp_enabled, load_checkpoint, make_scaler, one_cycle,
                                   read_history, train, validation_items)

TINY = ["--size", "32", "--batch-size", "8", "--workers", "0", "--no-progress", "--device", "cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "depthmask_utils", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=600, **kw)


def tiny_config(**kw):
    return TrainConfig(**{"epochs": 2, "sizes": (32,), "batch_size": 8, "workers": 0, "device": "cpu",
                          "model_options": {"base": 8, "levels": 3}, "checkpoint_every": 5, **kw})


def test_train_writes_a_run_that_loads_with_weights_only(labelled, tmp_path, monkeypatch):
    r = train(labelled, tmp_path / "run", tiny_config(), progress=False, log=lambda *_: None)
    assert len(r.history) == 2 and r.steps == r.history[-1]["step"] > 0
    for name in ("config.json", "split.json", "history.csv", "model.pt", "checkpoints/last.pt"):
        assert (tmp_path / "run" / name).exists(), name
    assert list((tmp_path / "run" / "tb").iterdir())  # TensorBoard events
    assert torch.load(tmp_path / "run" / "model.pt", weights_only=True)["kind"] == "model"
    h = read_history(tmp_path / "run")
    assert list(h["epoch"]) == [1, 2] and h["val_mask_iou"].between(0, 1).all()
    assert (h["val_loss"] > 0).all() and (h["train_loss"] > 0).all()  # both losses, to plot on one axis
    # Training again with the same configuration does nothing more.
    again = train(labelled, tmp_path / "run", tiny_config(), progress=False, log=lambda *_: None)
    assert again.resumed_from == r.steps and again.history == r.history
    # A run made before a TrainConfig field existed (no depth_scale in its config.json) still resumes.
    path = tmp_path / "run" / "config.json"
    old = json.loads(path.read_text())
    del old["config"]["depth_scale"]
    path.write_text(json.dumps(old))
    assert train(labelled, tmp_path / "run", tiny_config(), progress=False, log=lambda *_: None).history == r.history
    with pytest.raises(RunError, match="differs in: depth_scale"):
        train(labelled, tmp_path / "run", tiny_config(depth_scale=0.5), progress=False)
    # "auto" follows the hardware; a resume where it picks another type says so (a T4's run on an A100)
    recorded = json.loads(path.read_text())["precision"]
    monkeypatch.setattr(T, "cpu_has_bf16", lambda: recorded == "torch.float32")  # the other answer
    said = []
    train(labelled, tmp_path / "run", tiny_config(), progress=False, log=said.append)
    assert any(f"began with the forward pass in {recorded}, continues in" in line for line in said), said
    monkeypatch.undo()
    # Another configuration in the same folder is refused, naming what differs.
    with pytest.raises(RunError, match="differs in: lr"):
        train(labelled, tmp_path / "run", tiny_config(lr=1e-2), progress=False)


def test_losses_are_logged_every_n_steps_and_add_up_to_the_epoch_loss(labelled, tmp_path):
    import numpy as np
    import pandas as pd

    r = train(labelled, tmp_path / "run", tiny_config(epochs=1, log_every=3, checkpoint_every=1000), progress=False,
              log=lambda *_: None)
    rows = pd.read_csv(tmp_path / "run" / "steps.csv")
    want = list(range(3, r.steps + 1, 3)) + ([r.steps] if r.steps % 3 else [])  # and the epoch's last step
    assert rows["step"].tolist() == want
    widths = np.diff([0] + want)  # each row is the mean of the steps since the one before
    assert (rows["loss"] * widths).sum() / r.steps == pytest.approx(r.history[0]["train_loss"], rel=1e-4)


def test_one_cycle_runs_for_any_number_of_steps():
    # torch's OneCycleLR with pct_start=0.25 divides by zero at 4 steps (a warm-up of exactly one step)
    for total in range(1, 40):
        opt = torch.optim.AdamW(torch.nn.Linear(1, 1).parameters(), lr=1e-3)
        sched = one_cycle(opt, 1e-3, total)
        lrs = [sched.get_last_lr()[0]]
        for _ in range(total - 1):
            opt.step()
            sched.step()
            lrs.append(sched.get_last_lr()[0])
        assert max(lrs) <= 1e-3 * (1 + 1e-9), (total, lrs)
        if total >= 5:  # shorter runs have no step left to warm up over
            assert lrs[0] < max(lrs) and lrs[-1] < max(lrs), (total, lrs)  # warms up, then anneals


def test_validation_items_spread_over_the_split():
    assert validation_items(list(range(10)), 4) == [0, 2, 5, 7]
    assert validation_items(list(range(10)), None) == validation_items(list(range(10)), 10) == list(range(10))
    assert validation_items(list(range(3)), 50) == [0, 1, 2]
    with pytest.raises(ValueError, match="val_samples must be at least 1"):
        TrainConfig(val_samples=0)


def test_validating_on_a_subset_reports_on_it_and_trains_the_same_weights(labelled, tmp_path):
    from depthmask_utils.data import CompositeDataset, make_loader
    from depthmask_utils.evaluate import load_model
    from depthmask_utils.train import evaluate_loader

    quiet = {"progress": False, "log": lambda *_: None}
    whole = train(labelled, tmp_path / "whole", tiny_config(epochs=1), **quiet)
    part = train(labelled, tmp_path / "part", tiny_config(epochs=1, val_samples=5), **quiet)
    a, b = (torch.load(tmp_path / r / "model.pt", weights_only=True)["state_dict"] for r in ("whole", "part"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # validation only reports
    model, _ = load_model(tmp_path / "part")
    val = CompositeDataset(labelled, "val").items
    assert len(val) > 5
    for items, result in ((validation_items(val, 5), part), (val, whole)):
        m = evaluate_loader(model, make_loader(CompositeDataset(labelled, items, 32), 64, workers=0), torch.device("cpu"))
        assert len(m["mask_iou"]) == len(items)
        assert result.final["val_depth_rmse"] == pytest.approx(float(m["depth_rmse"].mean()), abs=1e-6)


def test_unknown_geometry_is_refused_before_a_run_starts():
    with pytest.raises(ValueError, match="geometry must be one of"):
        TrainConfig(geometry="rotate")


def test_mixed_precision_where_the_hardware_computes_it_and_only_when_asked(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert amp_enabled(gpu, TrainConfig(amp=True)) and not amp_enabled(gpu, TrainConfig(amp=False))
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: False, raising=False)
    assert not T.cpu_has_bf16()
    assert not amp_enabled(cpu, TrainConfig(amp=True))  # emulated bfloat16 is slower than float32
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert T.cpu_has_bf16() and amp_enabled(cpu, TrainConfig(amp=True)) and not amp_enabled(cpu, TrainConfig(amp=False))
    assert T.amp_dtype(cpu) == torch.bfloat16
    assert not make_scaler(cpu, TrainConfig(amp=True)).is_enabled()  # bfloat16 needs no loss scaling


@pytest.mark.parametrize("capability, dtype, scaled", [((7, 5), torch.float16, True),  # Colab's T4
                                                        ((7, 0), torch.float16, True),  # V100
                                                        ((8, 0), torch.bfloat16, False),  # A100
                                                        ((9, 0), torch.bfloat16, False)])  # H100
def test_gpus_below_compute_capability_8_train_in_float16_with_loss_scaling(monkeypatch, capability, dtype, scaled):
    # A T4 reports bfloat16 "supported" by emulation (torch.cuda.is_bf16_supported() is True there):
    # the rule must follow the tensor cores, i.e. the compute capability.
    from depthmask_utils import precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    gpu = torch.device("cuda", 0)
    assert precision.amp_dtype(gpu) == T.amp_dtype(gpu) == dtype
    assert amp_enabled(gpu, TrainConfig(amp=True))
    assert (T.forward_dtype(gpu, TrainConfig()) == torch.float16) == scaled  # what make_scaler turns the scaler on by
    assert T.forward_dtype(gpu, TrainConfig()) == dtype and T.forward_dtype(gpu, TrainConfig(amp=False)) == torch.float32
    # asked for by name, either type on any GPU (to compare them), with the scaler float16 needs
    for name, asked in (("float16", torch.float16), ("bfloat16", torch.bfloat16)):
        cfg = TrainConfig(autocast_dtype=name)
        assert T.forward_dtype(gpu, cfg) == asked
        assert T.forward_dtype(gpu, replace(cfg, amp=False)) == torch.float32  # amp off wins
        assert T.make_scaler(torch.device("cpu"), cfg).is_enabled() == (asked == torch.float16)


def test_a_named_autocast_dtype_is_honoured_even_on_a_cpu_without_native_bfloat16(monkeypatch):
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: False, raising=False)
    cpu = torch.device("cpu")
    assert T.forward_dtype(cpu, TrainConfig()) == torch.float32  # auto: emulated bfloat16 is slower than float32
    assert T.forward_dtype(cpu, TrainConfig(autocast_dtype="bfloat16")) == torch.bfloat16  # asked for: done
    mps = torch.device("mps")  # a device where training runs no autocast: a named type is refused, not dropped
    assert T.forward_dtype(mps, TrainConfig()) == torch.float32
    with pytest.raises(ConfigError, match="autocast_dtype float16: training runs autocast on CUDA and CPUs, not on mps"):
        T.forward_dtype(mps, TrainConfig(autocast_dtype="float16"))


@pytest.mark.parametrize("bf16, autocast_dtype, expected", [(False, "auto", torch.float32), (True, "auto", torch.bfloat16),
                                                             pytest.param(False, "float16", torch.float16,  # emulated here
                                                                          marks=pytest.mark.slow)])
def test_train_step_fits_a_toy_batch_in_float32_bfloat16_and_float16(monkeypatch, bf16, autocast_dtype, expected,
                                                                      toy_scene):
    # bfloat16 keeps 8 bits of mantissa, float16 5 bits of exponent (its scaler on): the forward pass in
    # either must still fit, with float32 weights and loss
    from depthmask_utils.models import SmallUNet

    monkeypatch.setattr(T, "cpu_has_bf16", lambda: bf16)
    batch = {k: (v * 255).round().to(torch.uint8) for k, v in toy_scene.items()}  # as the loader gives
    torch.manual_seed(0)
    cfg, cpu = tiny_config(augment=False, lr=3e-3, autocast_dtype=autocast_dtype), torch.device("cpu")
    net = SmallUNet(base=8, levels=2).to(memory_format=torch.channels_last)
    seen = []
    net.heads.register_forward_hook(lambda mod, args, out: seen.append(out["mask"].dtype))
    opt, crit = torch.optim.AdamW(net.parameters(), cfg.lr), T.make_criterion(cfg)
    scaler, gen = make_scaler(cpu, cfg), torch.Generator().manual_seed(0)
    steps = [T.train_step(net, crit, opt, scaler, batch, cfg, cpu, gen) for _ in range(150)]
    assert all(t.dim() == 0 and t.device == cpu for loss, parts in steps for t in (loss, *parts.values()))
    losses = [loss.item() for loss, _ in steps]  # tensors, read here: the loop itself never waits on a device
    assert seen[0] == expected
    assert scaler.is_enabled() == (expected == torch.float16)
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert losses[-1] < 0.25 * losses[0], (losses[0], losses[-1])


def test_progressive_sizes():
    cfg = TrainConfig(epochs=6, sizes=(64, 112, 224))
    assert [cfg.size_at(e) for e in range(6)] == [64, 64, 112, 112, 224, 224]


@pytest.mark.slow
@pytest.mark.parametrize("precision", [[], ["--set", "autocast_dtype=float16", "--set", "model_options.base=8"]],
                         ids=["auto", "float16"])  # a narrow net: float16 is emulated, and slow, on a CPU
def test_killed_run_resumes_to_the_same_weights(labelled, tmp_path, precision):
    """SIGKILL a real training process after its first mid-epoch checkpoint, re-run the same
    command, and compare with a run that was never interrupted. float16 is a T4's path: the
    GradScaler's scale and growth count travel in the checkpoint too (emulated on this CPU)."""
    args = ["train", labelled, "--epochs", "3", "--checkpoint-every", "4", *TINY, *precision]
    ref = cli(*args, "--out", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "depthmask_utils", *map(str, args), "--out", str(run)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = run / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "model.pt").exists(), "the run finished before it could be killed"
    ck = load_checkpoint(ckpt)
    step = ck["step"]
    if precision:  # the scaler was on, and its state is what the resume restores
        assert ck["scaler"]["scale"] > 0 and "_growth_tracker" in ck["scaler"]
        assert json.loads((run / "config.json").read_text())["precision"] == "torch.float16"
    else:
        assert ck["scaler"] == {}  # bfloat16 or float32: nothing to scale
    resumed = cli(*args, "--out", run)
    assert resumed.returncode == 0, resumed.stderr
    assert f"step {step}" in resumed.stdout
    a = torch.load(tmp_path / "ref" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    ha, hb = read_history(tmp_path / "ref"), read_history(run)
    assert ha.drop(columns="seconds").equals(hb.drop(columns="seconds"))


def test_bad_inputs_are_named(labelled, built, tmp_path):
    r = cli("train", built, "--out", tmp_path / "r", *TINY)
    assert r.returncode == 2 and "has no depth labels" in r.stderr and "Traceback" not in r.stderr
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(RunError, match="last.pt: not a readable checkpoint"):
        load_checkpoint(run / "checkpoints" / "last.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(RunError, match="not a depthmask checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    r = cli("evaluate", tmp_path / "foreign.pt", labelled)
    assert r.returncode == 2 and "foreign.pt" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_ddp_on_cpu_with_two_gloo_processes(labelled, tmp_path):
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                        "-m", "depthmask_utils", "train", str(labelled), "--out", str(tmp_path / "ddp"),
                        "--epochs", "1", *TINY], capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    h = read_history(tmp_path / "ddp")
    single = TrainConfig(epochs=1, sizes=(32,), batch_size=8)
    assert len(h) == 1 and (tmp_path / "ddp" / "model.pt").exists()
    # Two processes split each epoch: half the steps of a single process with the same batch size.
    from depthmask_utils.data import CompositeDataset, EpochBatchSampler

    n = len(CompositeDataset(labelled, "train"))
    assert h["step"].iloc[0] == len(EpochBatchSampler(n, single.batch_size, drop_last=True, world=2))


def test_validation_computes_two_metrics_and_they_equal_the_full_set():
    from depthmask_utils.metrics import all_metrics
    from depthmask_utils.models import SmallUNet
    from depthmask_utils.train import evaluate_loader

    g = torch.Generator().manual_seed(0)
    batches = [{k: torch.randint(0, 256, (4, c, 32, 32), dtype=torch.uint8, generator=g)
                for k, c in (("fg_bg", 3), ("bg", 3), ("mask", 1), ("depth", 1))} for _ in range(2)]
    torch.manual_seed(0)
    model = SmallUNet(base=4, levels=2)
    quick = evaluate_loader(model, batches, torch.device("cpu"))
    full = evaluate_loader(model, batches, torch.device("cpu"), every_metric=True)
    assert set(quick) == {"mask_iou", "depth_rmse"} and set(full) > set(quick) and model.training
    assert all(torch.equal(quick[k], full[k]) for k in quick) and quick["mask_iou"].shape == (8,)
    with torch.no_grad():
        x = {k: v.float() / 255 for k, v in batches[0].items()}
        model.eval()
        out = model(x["fg_bg"], x["bg"])
        ref = all_metrics(torch.sigmoid(out["mask"]), x["mask"], out["depth"], x["depth"])
    assert torch.allclose(full["depth_ssim"][:4], ref["depth_ssim"]) and torch.equal(quick["depth_rmse"][:4], ref["depth_rmse"])
