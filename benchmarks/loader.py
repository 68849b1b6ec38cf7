"""Benchmark the training data loader against a per-item PIL loader, in the same run.

    python benchmarks/loader.py [--n-bg 8 --n-fg 10 --epochs 2]

Builds a labelled 224 x 224 dataset (sample world, scene depth), then times, with 2 DataLoader
workers each:

* ``CompositeDataset`` + ``make_loader`` (shards read in place, OpenCV decode straight into the
  batch, uint8, a batch per worker call), at 112 and 224;
* the per-item PIL loader the reference write-ups used: reopen the zip, decode with PIL,
  ``torchvision`` resize, ``to_tensor``, default collation;
* the on-the-fly variant (composites rebuilt from bg + fg with fresh placements).

Targets on 2 cores: >= 3,000 samples/s at 112 and >= 1,500 at 224 (what a Colab GPU needs).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cores, timed, verdict, world  # noqa: E402

from depthmask_utils.data import CompositeDataset, OnTheFlyDataset, make_loader  # noqa: E402
from depthmask_utils.dataset import member  # noqa: E402
from depthmask_utils.depth import label_depth  # noqa: E402
from depthmask_utils.overlay import generate  # noqa: E402


class PILPerItem(torch.utils.data.Dataset):
    """The baseline: one sample per call, a fresh zip handle each time, PIL + torchvision."""

    def __init__(self, base: CompositeDataset, size: int):
        self.root, self.items, self.size = base.root, base.items, size

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        import torchvision.transforms.functional as TF

        c = self.items[i]
        with zipfile.ZipFile(self.root / c.shard) as zf:
            imgs = {cat: Image.open(io.BytesIO(zf.read(member(cat, c.id)))) for cat in ("fg_bg", "mask", "depth")}
        imgs["bg"] = Image.open(self.root / "bg" / f"{c.bg:03d}.png")
        return {k: TF.to_tensor(TF.resize(v, [self.size, self.size], antialias=True)) for k, v in imgs.items()}


def rate(ds, loader_kwargs: dict, epochs: int) -> float:
    """Samples/s over ``epochs`` passes (worker start-up included, as in training)."""
    n = 0

    def run():
        nonlocal n
        for ep in range(epochs):
            ds.set_epoch(ep) if hasattr(ds, "set_epoch") else None
            for b in loader_kwargs["make"]():
                n += b["fg_bg"].shape[0]

    _, dt = timed(run)
    return n / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-bg", type=int, default=8)
    ap.add_argument("--n-fg", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)
    w = world(args.n_bg, args.n_fg)
    workers, B = 2, args.batch_size
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "ds"
        r = generate(w / "bg", w / "fg", root, size=224, placements=20, progress=False)
        label_depth(root, "scene", progress=False)
        disk = sum(p.stat().st_size for p in (root / "shards").glob("*.zip"))
        inputs = sum(p.stat().st_size for sub in ("bg", "fg", "fg_mask") for p in (root / sub).glob("*.png"))
        print(f"{r.composites} composites stored at 224x224, {cores()} cores, {workers} workers, batch {B}")
        results = {}
        for size in (112, 224):
            ds = CompositeDataset(root, "train", size=size, split_spec=None)
            ds.items = ds.items + CompositeDataset(root, "test", size=size).items  # every composite
            ours = rate(ds, {"make": lambda: make_loader(ds, B, shuffle=True, workers=workers)}, args.epochs)
            base = PILPerItem(ds, size)
            pil = rate(base, {"make": lambda: torch.utils.data.DataLoader(base, B, shuffle=True, num_workers=workers)}, 1)
            fly = OnTheFlyDataset(root, "train", size=size)
            fly.items = ds.items
            otf = rate(fly, {"make": lambda: make_loader(fly, B, shuffle=True, workers=workers)}, args.epochs)
            results[size] = ours
            print(f"{size}x{size}: CompositeDataset {ours:7.0f}/s | per-item PIL {pil:6.0f}/s ({ours / pil:.1f}x) "
                  f"| on-the-fly {otf:7.0f}/s")
        print(f"disk: shards {disk / 1e6:.1f} MB for {r.composites} composites; on-the-fly needs only the "
              f"inputs, {inputs / 1e6:.2f} MB")
        print(f"target >= 3,000/s at 112: {verdict(results[112] >= 3000)}; "
              f">= 1,500/s at 224: {verdict(results[224] >= 1500)}")


if __name__ == "__main__":
    main()
