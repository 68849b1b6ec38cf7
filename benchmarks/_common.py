"""Shared set-up for the benchmarks: a 224 x 224 sample world, built once under data/bench/."""

from __future__ import annotations

import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "data" / "bench"


def world(n_bg: int, n_fg: int, size: int = 240) -> Path:
    from depthmask_utils.sample import make_sample_world

    out = BENCH / f"world_{n_bg}x{n_fg}_{size}"
    make_sample_world(out, n_bg=n_bg, n_fg=n_fg, size=size, seed=0)
    return out


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
