"""Running independent per-shard tasks in worker processes: the one pattern every chapter uses."""

from __future__ import annotations

import multiprocessing as mp
import os
from typing import Callable, Iterable, Iterator


def run_tasks(func: Callable, tasks: Iterable, workers: int | None = None, initializer: Callable | None = None,
              initargs: tuple = (), ordered: bool = True) -> Iterator:
    """Yield ``func(task)`` for every task, using up to ``workers`` processes (default: all cores).

    With one worker (or one task) everything runs in this process, ``initializer`` included, which
    keeps tracebacks simple and avoids pickling. ``ordered=False`` yields results as they finish.
    """
    tasks = list(tasks)
    n = max(1, min(workers or os.cpu_count() or 1, len(tasks) or 1))
    if n == 1:
        if initializer is not None:
            initializer(*initargs)
        yield from map(func, tasks)
        return
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(n, initializer, initargs) as pool:
        yield from (pool.imap if ordered else pool.imap_unordered)(func, tasks)
