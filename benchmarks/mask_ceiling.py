"""How well can any model draw the mask from a JPEG composite? A per-pixel oracle on the test rooms.

    python benchmarks/mask_ceiling.py            # the sample profile's dataset under data/bench/
    python benchmarks/mask_ceiling.py --group test

The composite is ``fg_bg = a * F + (1 - a) * bg``. Given the background (which the model has) and the
person's true colour ``F`` (which it does not), ``a`` is the projection of ``fg_bg - bg`` on
``F - bg``. This script rebuilds every composite of a test group exactly from the manifest's boxes,
checks the rebuilt mask against the stored one (and counts the rebuilt composites whose JPEG
decodes to the stored pixels), and scores that oracle's ``a``, thresholded at 0.5 like the
model's, against the stored mask (IoU, as chapter 13 scores the model). The oracle knows where
the person is as well as its colour: pixels more than 3 px from it count as background.

Scored on:

* the exact composite (no JPEG): how close the oracle itself is to the labels;
* the stored JPEG (quality and chroma from the dataset; what the model sees; 4:4:4 since
  ``jpeg_chroma`` exists, OpenCV's default 4:2:0 before);
* the same composite re-encoded with the other chroma (4:2:0 has colour at half width and height,
  4:4:4 at full).

It is a guide, not a bound: a model can also use the shape around a pixel, which this oracle does not.
But a mask IoU far above the oracle's on the stored JPEGs should not be expected after minutes of training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH  # noqa: E402

from depthmask_utils.config import get_profile  # noqa: E402
from depthmask_utils.data import CompositeDataset  # noqa: E402
from depthmask_utils.dataset import load_prepared, read_params  # noqa: E402
from depthmask_utils.metrics import iou  # noqa: E402
from depthmask_utils.compositing import composite, pyramids_for  # noqa: E402
from depthmask_utils.pipeline import ensure_stats  # noqa: E402
from depthmask_utils.storage import encode_jpeg_bgr  # noqa: E402


def jpeg_roundtrip(rgb: np.ndarray, quality: int, chroma: str) -> np.ndarray:
    """uint8 RGB (H, W, 3) encoded as ``generate`` encodes composites (``quality``, ``chroma``) and decoded."""
    import cv2

    buf = encode_jpeg_bgr(np.ascontiguousarray(rgb[..., ::-1]), quality, chroma)
    return cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]


def oracle_alpha(fg_bg: np.ndarray, bg: np.ndarray, colour: np.ndarray, known: np.ndarray, reach: int = 3) -> torch.Tensor:
    """Per-pixel alpha from the composite, the background and the person's true colour.

    fg_bg, bg: uint8 (H, W, 3); colour: float (H, W, 3) in 0-255, valid where ``known`` (H, W) bool.
    The colour is spread ``reach`` pixels beyond ``known`` (mean of known neighbours), so pixels just
    outside the person are judged too. Returns (1, 1, H, W) alpha in 0-1, 0 beyond the reach.
    """
    c = torch.from_numpy(colour).permute(2, 0, 1)[None].float()
    w = torch.from_numpy(known)[None, None].float()
    for _ in range(reach):
        total, n = F.avg_pool2d(c * w, 3, 1, 1), F.avg_pool2d(w, 3, 1, 1)
        c = torch.where(w > 0, c, total / n.clamp_min(1e-6))
        w = torch.maximum(w, (n > 0).float())
    b = torch.from_numpy(np.array(bg)).permute(2, 0, 1)[None].float()
    d = torch.from_numpy(np.ascontiguousarray(fg_bg)).permute(2, 0, 1)[None].float() - b
    v = c - b
    a = ((d * v).sum(1, keepdim=True) / (v * v).sum(1, keepdim=True).clamp_min(1.0)).clamp(0, 1)
    return a * w


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--group", default="unseen_bg", help="test group or split part (default: unseen_bg)")
    args = ap.parse_args()
    profile = get_profile("sample")
    root = ensure_stats(profile, BENCH)
    ds = CompositeDataset(root, args.group)
    q = int(ds.info["params"]["jpeg_quality"])
    chroma = read_params(root)["jpeg_chroma"]
    other = "420" if chroma == "444" else "444"
    pyramids = pyramids_for([load_prepared(root, "fg", j) for j in range(int(ds.info["counts"]["fg"]))],
                            ds.stored_size, tuple(ds.info["params"]["scale"]))
    scores: dict[str, list[float]] = {"exact composite": [], f"stored JPEG (q{q}, {':'.join(chroma)})": [],
                                      f"JPEG q{q}, {':'.join(other)} chroma": []}
    same_jpeg = 0
    for c in ds.items:
        stored = ds.read(c)
        bg = ds.background(c.bg)
        placed = pyramids[c.fg].placed(c.flip, c.w, c.h)
        exact, mask = composite(bg, placed, c.x, c.y)
        if not np.array_equal(mask, stored["mask"]):
            raise SystemExit(f"{c.id}: the rebuilt mask differs from the stored one; is the dataset from this code?")
        same_jpeg += np.array_equal(jpeg_roundtrip(exact, q, chroma), stored["fg_bg"])
        colour = np.zeros(bg.shape, np.float32)
        a = placed[..., 3:].astype(np.float32)
        colour[c.y:c.y + c.h, c.x:c.x + c.w] = placed[..., :3] * 255.0 / np.maximum(a, 1)
        known = mask > 0
        target = torch.from_numpy(mask)[None, None].float() / 255
        for name, img in zip(scores, (exact, stored["fg_bg"], jpeg_roundtrip(exact, q, other))):
            scores[name].append(float(iou(oracle_alpha(img, bg, colour, known), target)))
    if same_jpeg != len(ds):  # e.g. a folder whose params.json names the wrong chroma: its rows would be mislabelled
        raise SystemExit(f"{root}: only {same_jpeg} of {len(ds)} rebuilt composites re-encode (q{q}, {':'.join(chroma)}) "
                         "to the stored pixels; is the dataset from this code, and params.json's jpeg_chroma right?")
    print(f"{root}: {len(ds)} composites of {args.group!r} at {ds.stored_size} px rebuilt from the manifest; "
          f"masks equal to the stored ones, JPEG of the rebuilt composite equal to the stored one: {same_jpeg} of {len(ds)}")
    print("oracle mask IoU (the person's true colour and place known, per pixel, threshold 0.5), mean over composites:")
    for name, v in scores.items():
        v = np.asarray(v)
        print(f"  {name:28s} {v.mean():.4f}   (10th percentile {np.percentile(v, 10):.4f})")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
