"""Where a trained model's mask is wrong: on the outline or away from it, too much or too little.

    python benchmarks/mask_errors.py data/sample/run data/sample/dataset            # unseen rooms
    python benchmarks/mask_errors.py data/sample/run data/sample/dataset --group unseen_fg

Runs the run's model on one test group, as chapter 13's ``evaluate`` does, binarises at 0.5 like
the IoU, and prints:

* the share of wrong pixels that lie on the true outline (a pixel of the binary mask next to one of
  the other class), within 1 and 2 px of it, and further away;
* the share counted as person where the truth is room (too much), and the other way round;
* the IoU with only the prediction binarised at 0.4-0.6 (the truth stays at 0.5): a best threshold
  away from 0.5 means the errors have a side;
* the outline's calibration near 0.5 (``metrics.outline_calibration``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from depthmask_utils.checkpoint import read_split
from depthmask_utils.data import CompositeDataset, make_loader, to_inputs
from depthmask_utils.evaluate import GROUPS, load_model, predict_batch
from depthmask_utils.metrics import iou, outline_calibration, outline_counts

THRESHOLDS = (0.4, 0.45, 0.5, 0.55, 0.6)


def error_breakdown(prob: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Where the binarised (N, 1, H, W) prediction ``prob`` differs from the binarised ``target``
    (both at 0.5): shares of the wrong pixels on the outline, within 1 and 2 px of it, beyond 2 px;
    too much (``false_person``) and too little (``false_room``); and ``wrong_per_image``."""
    p, t = (prob >= 0.5).float(), (target >= 0.5).float()
    # the outline: pixels of either class with a 4- or 8-neighbour of the other class
    outline = F.max_pool2d(t, 3, 1, 1) - (-F.max_pool2d(-t, 3, 1, 1))
    within = {k: F.max_pool2d(outline, 2 * k + 1, 1, k) for k in (1, 2)}
    wrong = (p != t).float()
    n = wrong.sum().clamp_min(1)
    return {"on_outline": float((wrong * outline).sum() / n), "within_1px": float((wrong * within[1]).sum() / n),
            "within_2px": float((wrong * within[2]).sum() / n),
            "beyond_2px": float((wrong * (1 - within[2])).sum() / n),
            "false_person": float((p * (1 - t)).sum() / n), "false_room": float(((1 - p) * t).sum() / n),
            "wrong_per_image": float(wrong.sum() / len(wrong))}


def iou_at(prob: torch.Tensor, target: torch.Tensor, threshold: float) -> float:
    """Mean per-image IoU with the prediction binarised at ``threshold`` and the truth at 0.5."""
    return float(iou((prob >= threshold).float(), target).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--group", choices=GROUPS, default="unseen_bg")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model, meta = load_model(args.run)
    split = read_split(args.run)
    items = split.select(CompositeDataset(args.dataset, "test", split_spec=split).items, args.group)
    if not items:
        sys.exit(f"{args.run}: no test composites in group {args.group}")
    probs, masks = [], []
    for batch in make_loader(CompositeDataset(args.dataset, items, split_spec=split), 64, workers=0):
        x = to_inputs(batch, "cpu")
        probs.append(predict_batch(model, x["fg_bg"], x["bg"], meta["size"])[0])
        masks.append(x["mask"])
    prob, mask = torch.cat(probs), torch.cat(masks)
    b = error_breakdown(prob, mask)
    print(f"{args.run} on {args.group} ({len(prob)} composites): {b['wrong_per_image']:.1f} wrong pixels per image")
    print(f"  wrong pixels on the true outline {b['on_outline']:.1%}, within 1 px {b['within_1px']:.1%}, "
          f"within 2 px {b['within_2px']:.1%}, beyond 2 px {b['beyond_2px']:.1%}")
    print(f"  counted as person where the truth is room {b['false_person']:.1%}, the other way round {b['false_room']:.1%}")
    print("  IoU with the prediction binarised at " + ", ".join(f"{t}: {iou_at(prob, mask, t):.4f}" for t in THRESHOLDS))
    c = outline_calibration(outline_counts(prob, mask))
    print("  outline calibration (alpha bin: mean probability, share counted as person):")
    for a, n, mp, share in zip(c["alpha"], c["pixels"], c["mean_prob"], c["counted_as_person"]):
        if 0.3 < a < 0.7 and n:  # an empty bin has no mean
            print(f"    {a - 0.025:.2f}-{a + 0.025:.2f}: {mp:.3f}, {share:.1%} ({n} pixels)")


if __name__ == "__main__":
    main()
