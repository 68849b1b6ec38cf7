"""Training from Google Drive: read the shards in place, or copy them to local disk once first?

    python benchmarks/drive.py                          # 5 ms per read, 50 MB/s (assumed Drive figures)
    python benchmarks/drive.py --latency-ms 20 --mb-per-s 25

Drive is a network file system; this machine has none, so the benchmark **simulates** a slow folder:
every read of a shard member (the loader's random access) and every file copied sleeps a fixed
latency plus its size over a bandwidth. Both figures are assumptions, given on the command line;
the reads, decodes and copies themselves are real. It times, on the sample profile's dataset
(6,400 composites), one loader epoch read in place from the slow folder, against
``pipeline.stage_locally`` (one sequential copy) followed by epochs read from local disk, and
prints both for 1 and 6 epochs (the full profile trains 6).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH  # noqa: E402

from depthmask_utils import storage  # noqa: E402
from depthmask_utils.config import get_profile  # noqa: E402
from depthmask_utils.data import CompositeDataset, make_loader  # noqa: E402
from depthmask_utils.pipeline import ensure_stats, stage_locally  # noqa: E402


def epoch_seconds(dataset: Path) -> float:
    loader = make_loader(CompositeDataset(dataset, "train"), 64, shuffle=True, workers=0)
    t0 = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency-ms", type=float, default=5.0, help="simulated cost of one read or file open")
    ap.add_argument("--mb-per-s", type=float, default=50.0, help="simulated bandwidth")
    args = ap.parse_args()
    dataset = ensure_stats(get_profile("sample"), BENCH)
    lat, bw = args.latency_ms / 1000, args.mb_per_s * 1e6

    local_epoch = epoch_seconds(dataset)
    read = storage.ShardReader.read

    def slow_read(self, name):
        data = read(self, name)
        time.sleep(lat + len(data) / bw)
        return data

    storage.ShardReader.read = slow_read
    try:
        drive_epoch = epoch_seconds(dataset)
    finally:
        storage.ShardReader.read = read

    copy2 = shutil.copy2

    def slow_copy(src, dst, **kw):
        out = copy2(src, dst, **kw)
        time.sleep(lat + Path(src).stat().st_size / bw)
        return out

    target = BENCH / "drive_local"
    shutil.rmtree(target, ignore_errors=True)
    copytree = shutil.copytree  # binds copy2 as a default argument: give it the slow copy explicitly

    def slow_tree(src, dst, *args, **kw):  # shutil recurses with positional arguments, copy_function included
        return copytree(src, dst, *args, **kw) if args else copytree(src, dst, **{**kw, "copy_function": slow_copy})

    shutil.copytree = slow_tree
    try:
        t0 = time.perf_counter()
        stage_locally(dataset, target, log=lambda s: None)
        copy = time.perf_counter() - t0
    finally:
        shutil.copytree = copytree
    size = sum(f.stat().st_size for f in dataset.rglob("*") if f.is_file()) / 1e6
    print(f"simulated folder: {args.latency_ms:g} ms per read, {args.mb_per_s:g} MB/s; dataset {size:.0f} MB")
    print(f"one epoch read in place from the slow folder: {drive_epoch:.1f} s; from local disk: {local_epoch:.1f} s; "
          f"the copy: {copy:.1f} s")
    for epochs in (1, 6):
        a, b = epochs * drive_epoch, copy + epochs * local_epoch
        print(f"{epochs} epoch(s): in place {a:.0f} s, copy first {b:.0f} s ({a / b:.1f}x)")
    shutil.rmtree(target, ignore_errors=True)


if __name__ == "__main__":
    main()
