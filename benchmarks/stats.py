"""Benchmark the exact statistics pass against decoding alone.

    python benchmarks/stats.py [--n-bg 8 --n-fg 20]

Times ``dataset_stats`` on a labelled 224 x 224 dataset (fg_bg JPEG + mask PNG + depth PNG per
composite) and, in the same process, the bound: decoding the same members alone over all cores.
Target on 2 cores: >= 5,000 composites/s.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import sys
import tempfile
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cores, timed, verdict, world  # noqa: E402

from depthmask_utils.depth import label_depth  # noqa: E402
from depthmask_utils.overlay import generate  # noqa: E402
from depthmask_utils.stats import dataset_stats  # noqa: E402
from depthmask_utils.storage import open_shard  # noqa: E402


def _decode_shard(path: str) -> int:
    n = 0
    with open_shard(path) as zf:
        for name in zf.namelist():
            if name.endswith((".jpg", ".png")):
                with Image.open(io.BytesIO(zf.read(name))) as im:
                    im.load()
                n += name.startswith("fg_bg/")
    return n


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
        st, dt = timed(dataset_stats, ds, workers=cores(), progress=False, write=False)
        shards = sorted(str(p) for p in (ds / "shards").glob("*.zip"))
        with mp.get_context("fork").Pool(cores()) as pool:
            n, dt_dec = timed(lambda: sum(pool.map(_decode_shard, shards)))
    rate, bound = r.composites / dt, n / dt_dec
    print(f"{r.composites} composites at 224x224 (fg_bg + mask + depth each), {cores()} cores")
    print(f"dataset_stats (exact, one pass):  {rate:8.0f} composites/s ({dt:.2f} s)")
    print(f"decoding the same members alone:  {bound:8.0f} composites/s")
    print(f"ratio: {rate / bound:.0%} of the decode bound; target >= 5,000 composites/s: {verdict(rate >= 5000)}")


if __name__ == "__main__":
    main()
