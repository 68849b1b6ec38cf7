"""Benchmark the exact statistics pass against decoding alone.

    python benchmarks/stats.py [--n-bg 8 --n-fg 20]

Times ``dataset_stats`` on a labelled 224 x 224 dataset (fg_bg JPEG + mask PNG + depth PNG per
composite) and, in the same process, two bounds over all cores: decoding the same members alone
with PIL (the issue's reference), and decoding them with the fastest decoders at hand (OpenCV's
JPEG, the package's PNG fast path). Best of three for each. Targets on 2 cores: >= 85 % of the PIL
decode bound; >= 5,000 composites/s.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cores, timed, verdict, world  # noqa: E402

from depthmask_utils.depth import label_depth  # noqa: E402
from depthmask_utils.overlay import generate  # noqa: E402
from depthmask_utils.stats import dataset_stats  # noqa: E402
from depthmask_utils.storage import decode_png_gray, open_shard  # noqa: E402


def _decode_shard(path: str) -> int:
    """Decode every image member with PIL, as a plain loader would; returns the composites seen."""
    n = 0
    with open_shard(path) as zf:
        for name in zf.namelist():
            if name.endswith((".jpg", ".png")):
                with Image.open(io.BytesIO(zf.read(name))) as im:
                    im.load()
                n += name.startswith("fg_bg/")
    return n


def _decode_shard_fastest(path: str) -> int:
    """The strict bound: the fastest decoders at hand (OpenCV's JPEG, the fast PNG path), no counting."""
    import cv2

    cv2.setNumThreads(1)
    n = 0
    with open_shard(path) as zf:
        for name in zf.namelist():
            data = zf.read(name)
            if name.endswith(".jpg"):
                cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                n += 1
            elif name.endswith(".png"):
                decode_png_gray(data)
    return n


def _best_rate(pool, func, shards, repeat=3) -> float:
    runs = [timed(lambda: sum(pool.map(func, shards))) for _ in range(repeat)]
    return max(n / dt for n, dt in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-bg", type=int, default=8)
    ap.add_argument("--n-fg", type=int, default=20)
    args = ap.parse_args()
    w = world(args.n_bg, args.n_fg)
    with tempfile.TemporaryDirectory() as d:
        ds = Path(d) / "ds"
        r = generate(w / "bg", w / "fg", ds, size=224, placements=20, progress=False)
        label_depth(ds, "scene", progress=False)
        shards = sorted(str(p) for p in (ds / "shards").glob("*.zip"))
        times = [timed(dataset_stats, ds, workers=cores(), progress=False, write=False)[1] for _ in range(3)]
        with mp.get_context("fork").Pool(cores()) as pool:
            pool.map(_decode_shard, shards)  # warm the page cache like the first stats run did
            bound = _best_rate(pool, _decode_shard, shards)
            strict = _best_rate(pool, _decode_shard_fastest, shards)
    rate = r.composites / min(times)  # best of three, like the bounds
    print(f"{r.composites} composites at 224x224 (fg_bg + mask + depth each), {cores()} cores")
    print(f"dataset_stats (exact, one pass):          {rate:8.0f} composites/s (best {min(times):.2f} s of 3)")
    print(f"decoding the same members alone, PIL:     {bound:8.0f} composites/s")
    print(f"decoding alone, fastest decoders (strict):{strict:8.0f} composites/s")
    print(f"ratio: {rate / bound:.0%} of the PIL decode bound (target >= 85%: {verdict(rate / bound >= 0.85)}), "
          f"{rate / strict:.0%} of the strict bound")
    print(f"throughput target >= 5,000 composites/s: {verdict(rate >= 5000)}")


if __name__ == "__main__":
    main()
