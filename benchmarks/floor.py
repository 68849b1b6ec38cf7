"""The automatic floor estimate against the sample world's exact floor masks.

    python benchmarks/floor.py                 # world seed 11 (none of the course's, nor mini's), 400 rooms
    python benchmarks/floor.py --seed 0 --rooms 100

For every room: the floor estimated (``floor.estimate_floor``) from the exact depth, and from the
``mini`` teacher's depth of the empty room, each scored by IoU against the true floor mask at the
sample profile's 128 px. Then the placements: how many of a uniform plan's foot points fall on the
true floor, against a floor plan drawn on the estimated floor. No target was set; prints what it measured.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH  # noqa: E402

from depthmask_utils.backgrounds import load_backgrounds  # noqa: E402
from depthmask_utils.depth import make_teacher  # noqa: E402
from depthmask_utils.floor import estimate_floor, floor_iou  # noqa: E402
from depthmask_utils.placement import (Floor, find_floors, placement_rng, plan_floor_placements,  # noqa: E402
                                       plan_placements)
from depthmask_utils.sample import make_sample_world  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--rooms", type=int, default=400)
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()
    world = BENCH / f"floor_world_{args.rooms}_{args.seed}"
    make_sample_world(world, args.rooms, 2, 168, args.seed)
    bgs = load_backgrounds(world / "bg", args.size)
    true = find_floors(world / "bg", bgs.sources, args.size)
    teacher = make_teacher("mini", device="cpu")
    t0 = time.perf_counter()
    maps = np.concatenate([teacher.predict(np.stack(bgs.images[i:i + 32])) for i in range(0, len(bgs.images), 32)])
    est_mini = [estimate_floor(m) for m in maps]
    seconds = time.perf_counter() - t0
    est_exact = [estimate_floor(1 / f.depth) for f in true]
    for name, est in (("exact depth", est_exact), ("mini's depth", est_mini)):
        iou = np.array([floor_iou(e, f.mask) for e, f in zip(est, true)])
        empty = sum(not e.any() for e in est)
        print(f"floor from {name:13s}: IoU mean {iou.mean():.3f}, median {np.median(iou):.3f}, 10th percentile "
              f"{np.percentile(iou, 10):.3f}; {empty} of {len(est)} rooms without a floor found")
    print(f"mini: depth and estimate for {len(maps)} rooms in {seconds:.1f} s")
    # Where do the feet land? A uniform plan against a floor plan on the estimated (mini) floor.
    on_true = {"uniform": [], "estimated floor": []}
    for bg, (est, f) in enumerate(zip(est_mini, true)):
        rng = placement_rng(0, bg, 0, 0)
        boxes = plan_placements(40, 100, args.size, 8, (0.35, 0.65), rng)
        on_true["uniform"] += [f.mask[y + h - 1, x + w // 2] for x, y, w, h in boxes]
        planned = plan_floor_placements(40, 100, args.size, 8, (0.35, 0.65), placement_rng(0, bg, 0, 0), Floor(est))
        if planned is not None:
            on_true["estimated floor"] += [f.mask[fy, fx] for fx, fy in planned[1]]
    for k, v in on_true.items():
        print(f"feet on the true floor, {k:15s} plan: {np.mean(v):.1%} of {len(v)}")


if __name__ == "__main__":
    main()
