"""The student's whole path on their own photos, in one report.

    python benchmarks/own_photos.py --fg ../shared/real-photos/fg --bg ../shared/real-photos/bg --minutes 3

Input checks, the automatic floor estimate, generate, depth labels from a network teacher (``mini``
offline, per composite: the teacher has to see the subject), statistics, training the sample
profile's model for ``--minutes``, evaluation on held-out backgrounds, and a prediction on one
held-out composite. Prints what it measured: the share of each photo found to be floor and of the
placements standing on one, how often the subject is visible in its depth label, labelling time,
and the held-out mask IoU. Depth is scored against the teacher's labels (there is no exact depth for
real photos), so depth figures say how well the model learnt its teacher, not the truth.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT  # noqa: E402
from train import measured_seconds  # noqa: E402

from depthmask_utils.config import get_profile, train_config  # noqa: E402
from depthmask_utils.data import CompositeDataset  # noqa: E402
from depthmask_utils.depth import label_depth  # noqa: E402
from depthmask_utils.evaluate import evaluate, predict  # noqa: E402
from depthmask_utils.overlay import generate  # noqa: E402
from depthmask_utils.placement import dataset_floors  # noqa: E402
from depthmask_utils.stats import dataset_stats  # noqa: E402
from depthmask_utils.storage import read_json  # noqa: E402
from depthmask_utils.train import train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fg", required=True, help="foregrounds with alpha (any subject)")
    ap.add_argument("--bg", required=True, help="background photos")
    ap.add_argument("--minutes", type=float, default=3.0, help="training budget")
    ap.add_argument("--placements", type=int, default=20, help="placements per (bg, fg, flip)")
    ap.add_argument("--teacher", default="mini", help="depth teacher (a network: mini offline)")
    ap.add_argument("--mode", default="per-composite", choices=["per-composite", "bg-plus-foreground"])
    ap.add_argument("--out", default=str(ROOT / "data" / "bench" / "own_photos"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    sample = get_profile("sample")
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    dataset = out / "dataset"

    t0 = time.perf_counter()
    r = generate(args.bg, args.fg, dataset, size=sample.size, placements=args.placements, scale=sample.scale,
                 seed=0, progress=False, floor_teacher=args.teacher, log=lambda line: print("  " + line))
    t_gen = time.perf_counter() - t0
    floors = dataset_floors(dataset)
    shares = [f.mask.mean() for f in floors] if floors else []
    print(f"generate: {r.composites} composites in {t_gen:.1f} s (floor estimate included); floor share of each "
          f"photo: {np.round(shares, 2).tolist()}; placements on a floor: {r.on_floor} of {r.composites} "
          f"({r.on_floor / r.composites:.0%})")

    t0 = time.perf_counter()
    lab = label_depth(dataset, args.teacher, mode=args.mode, progress=False, device="cpu",  # a ViT teacher at full's side
                      input_size=None if args.teacher == "mini" else get_profile("full").teacher_input)
    t_lab = time.perf_counter() - t0
    visible = read_json(dataset / "dataset.json")["depth"]["person_visible"]
    print(f"labels: {args.teacher} ({args.mode}), {lab.teacher_images} teacher images in {lab.seconds:.1f} s "
          f"({lab.teacher_images / max(lab.seconds, 1e-9):.0f} images/s; {t_lab:.1f} s with room depths and checks); "
          f"subject visible in its depth label: {visible['share']:.0%} of {visible['checked']}")
    dataset_stats(dataset, progress=False)

    cfg = train_config(sample, ["checkpoint_every=1000000000", "val_samples=null"])
    per_step, per_epoch = measured_seconds(cfg, dataset)
    n_train = len(CompositeDataset(dataset, "train", seed=cfg.seed).items)
    steps_per_epoch = n_train // cfg.batch_size
    cfg = replace(cfg, epochs=max(1, int(args.minutes * 60 / (steps_per_epoch * per_step + per_epoch))))
    print(f"train: {n_train} training composites, {per_step:.2f} s/step -> {cfg.epochs} epochs for {args.minutes} min")
    run = out / "run"
    result = train(dataset, run, cfg, progress=False)
    m = evaluate(run, dataset)
    print(f"trained {result.steps} steps in {result.seconds / 60:.1f} min")
    for name, g in [("all test", m["test"]), *m["groups"].items()]:
        print(f"  {name:12s} n={g['n']:4d}  mask IoU {g['mask_iou']:.4f}  boundary F {g['mask_boundary_f']:.4f} | "
              f"depth RMSE vs the teacher {g['depth_rmse']:.4f}")

    test = CompositeDataset(dataset, "unseen_bg")
    item = test.items[0]
    sample_dir = out / "predict_in"
    sample_dir.mkdir()
    from PIL import Image

    x = test[0]
    Image.fromarray(x["fg_bg"].permute(1, 2, 0).numpy()).save(sample_dir / f"{item.id}.png")
    Image.fromarray(x["bg"].permute(1, 2, 0).numpy()).save(sample_dir / f"{item.id}_bg.png")
    written = predict(run, sample_dir / f"{item.id}_bg.png", sample_dir / f"{item.id}.png", out / "predictions")
    print(f"predict: {', '.join(p.name for p in written)} in {out / 'predictions'}")
    print(f"\nsummary: floor share {np.mean(shares) if shares else 0:.0%} of the frame, {r.on_floor / r.composites:.0%} "
          f"of placements on a floor; subject visible in {visible['share']:.0%} of depth labels; labelling "
          f"{lab.teacher_images / max(lab.seconds, 1e-9):.0f} images/s; held-out backgrounds mask IoU "
          f"{m['groups']['unseen_bg']['mask_iou']:.3f}")


if __name__ == "__main__":
    main()
