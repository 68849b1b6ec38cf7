"""Benchmark training quality against time: the sample profile, or a budget run on the full world.

    python benchmarks/train.py                          # sample profile (100 rooms), its training config
    python benchmarks/train.py --world full --minutes 30  # 100 rooms x 100 people, 30-minute budget
    python benchmarks/train.py --on-the-fly             # the same, composites rebuilt every epoch
    python benchmarks/train.py --refine                 # U-Net at 64 px + a mask refiner at 128 px

Builds the dataset (sample world, scene depth) under data/bench/, trains, evaluates on the test
groups, and prints measured figures next to the targets:

* sample profile on 2 CPU cores: <= 5 minutes of training reaches, on held-out backgrounds
  (``unseen_bg``), mask IoU >= 0.95 and depth RMSE <= 0.08;
* the full world: what 30 minutes of CPU training reach (no target; reported).

A budget in minutes is turned into ``samples_per_epoch`` from a measured step time, so the run
stays deterministic (the schedule knows its length from the start).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH, verdict  # noqa: E402

from depthmask_utils.config import get_profile  # noqa: E402
from depthmask_utils.evaluate import evaluate, real_photo_check  # noqa: E402
from depthmask_utils.pipeline import ensure_stats  # noqa: E402
from depthmask_utils.train import TrainConfig, train  # noqa: E402


def step_seconds(cfg: TrainConfig) -> float:
    """Seconds per training step of ``cfg``'s model at its last size, measured here (3 steps)."""
    from depthmask_utils.losses import MultiTaskLoss
    from depthmask_utils.models import build_model

    model = build_model(cfg.model, **cfg.model_options).to(memory_format=torch.channels_last)
    crit, s = MultiTaskLoss(), cfg.sizes[-1]
    opt = torch.optim.AdamW(model.parameters())
    x = torch.rand(cfg.batch_size, 3, s, s).contiguous(memory_format=torch.channels_last)
    y = torch.rand(cfg.batch_size, 1, s, s)
    for i in range(4):
        if i == 1:
            t0 = time.perf_counter()
        loss, _ = crit(model(x, x * 0.9), (y > 0.5).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / 3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", choices=["sample", "full"], default="sample")
    ap.add_argument("--minutes", type=float, help="training budget (default: the profile's epochs)")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--on-the-fly", action="store_true", help="rebuild composites with new placements each epoch")
    ap.add_argument("--keep", action="store_true", help="keep the run folder")
    ap.add_argument("--refine", action="store_true",
                    help="train at the labels' size with the model at its usual size and a full-size mask refiner")
    args = ap.parse_args()
    torch.set_num_threads(2)

    sample = get_profile("sample")
    if args.world == "sample":
        profile = sample
    else:  # the assignment's 100 x 100 world, stored at the sample size so a CPU can train on it
        profile = replace(sample, name="fullworld", n_fg=100, placements=4)
    t0 = time.perf_counter()
    dataset = ensure_stats(profile, BENCH)
    print(f"dataset {dataset}: {profile.expected_composites} composites at {profile.size}px "
          f"(built or reused in {time.perf_counter() - t0:.0f} s)")

    cfg = TrainConfig.from_dict({**sample.train, "on_the_fly": args.on_the_fly, "checkpoint_every": 10**9})
    if args.epochs:
        cfg.epochs = args.epochs
    if args.refine:  # the U-Net keeps its working size; data, loss and scores at the stored size
        cfg.model_options = {**cfg.model_options, "refine_from": cfg.sizes[-1]}
        cfg.sizes = (profile.size,)
    if args.minutes:
        per_step = step_seconds(cfg)
        cfg.samples_per_epoch = int(args.minutes * 60 / per_step / cfg.epochs) * cfg.batch_size
        print(f"budget {args.minutes} min at {per_step:.2f} s/step -> {cfg.samples_per_epoch} samples per epoch "
              f"x {cfg.epochs} epochs")
    run = BENCH / f"run_{profile.name}{'_otf' if args.on_the_fly else ''}{'_refine' if args.refine else ''}"
    shutil.rmtree(run, ignore_errors=True)
    result = train(dataset, run, cfg, progress=False)
    minutes = result.seconds / 60
    m = evaluate(run, dataset)
    photos, _ = real_photo_check(run, dataset)
    print(f"\ntrained {cfg.model} {cfg.model_options} at {cfg.sizes}px for {result.steps} steps in {minutes:.1f} min "
          f"({result.steps * cfg.batch_size / result.seconds:.0f} samples/s) on {torch.get_num_threads()} threads")
    for name, g in [("all test", m["test"]), *m["groups"].items()]:
        print(f"  {name:12s} n={g['n']:5d}  mask IoU {g['mask_iou']:.4f}  Dice {g['mask_dice']:.4f}  "
              f"boundary F {g['mask_boundary_f']:.4f} | depth RMSE {g['depth_rmse']:.4f}  AbsRel {g['depth_abs_rel']:.4f}  "
              f"delta1 {g['depth_delta1']:.4f}  SSIM {g['depth_ssim']:.4f}  RMSE aligned {g['depth_rmse_aligned']:.4f}")
    print(f"  real photographs (scikit-image, held-out people): mask IoU {photos['mask_iou'].mean():.4f} "
          f"(min {photos['mask_iou'].min():.4f}, {photos['mask_iou'].idxmin()})")
    if args.world == "sample":
        g = m["groups"]["unseen_bg"]
        print(f"targets (held-out backgrounds): mask IoU >= 0.95: {verdict(g['mask_iou'] >= 0.95)} ({g['mask_iou']:.4f}); "
              f"depth RMSE <= 0.08: {verdict(g['depth_rmse'] <= 0.08)} ({g['depth_rmse']:.4f}); "
              f"<= 5 min of training: {verdict(minutes <= 5)} ({minutes:.1f} min)")
    print(json.dumps({"history": result.history}, indent=None)[:2000])
    if not args.keep:
        shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    main()
