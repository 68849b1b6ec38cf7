"""Exercises you code and check: ``dm.check.<name>(your_answer)``, one per chapter from 03 on.

Each check runs your function (or reads your number) on inputs with a known answer, prints
``Correct`` or ``Not yet`` with a hint about the most likely mistake, and returns True or False.
It never raises, so a half-written answer shows a hint instead of a traceback. The reference
answers are the package's own functions, which the chapters test against libraries.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Callable

import numpy as np
import torch


def _report(ok: bool, message: str) -> bool:
    print(("Correct: " if ok else "Not yet: ") + message)
    return ok


class _NotYet(Exception):
    """A hint, raised anywhere in a check and printed by :func:`_never_raises`."""


def _never_raises(check: Callable) -> Callable:
    """A check that prints its hints, and reports an answer of an unexpected form (a number for a
    pair, say) as one too."""
    @functools.wraps(check)
    def wrapped(answer) -> bool:
        try:
            return check(answer)
        except _NotYet as hint:
            return _report(False, str(hint))
        except Exception as exc:  # the answer's form, not the package, is what went wrong
            return _report(False, f"your answer has an unexpected form ({type(exc).__name__}: {exc}); "
                                  "the exercise says what to return")
    return wrapped


def _answer(fn: Callable, *args, want: str | None):
    """``fn(*args)``, the student's function; a hint if it raises, or returns None where it should
    return ``want`` (None: a function that returns nothing)."""
    try:
        got = fn(*args)
    except Exception as exc:  # a student's code: any failure becomes a hint
        raise _NotYet(f"your function raised {type(exc).__name__}: {exc}") from None
    if got is None and want is not None:
        raise _NotYet(f"your function returned None; return {want}")
    return got


# --------------------------------------------------------------------------- 03


def _premultiplied_inputs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (16, 16, 1)).astype(np.uint16)
    a[:4] = 0  # transparent rows
    a[-4:] = 255  # opaque rows
    rgb = rng.integers(0, 256, (16, 16, 3)).astype(np.uint16)
    fgp = np.dstack([((rgb * a + 127) // 255).astype(np.uint8), a.astype(np.uint8)])
    return fgp, rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)


@_never_raises
def over(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> bool:
    """Chapter 03: ``fn(fg_premultiplied, bg)`` composites a premultiplied uint8 (h, w, 4) foreground
    over a uint8 (h, w, 3) background and returns uint8 (h, w, 3), rounded to the nearest level."""
    from .compositing import blend_premultiplied

    fgp, bg = _premultiplied_inputs()
    want = blend_premultiplied(bg, fgp)
    got = _answer(fn, fgp.copy(), bg.copy(), want="the composite")
    got = np.asarray(got)
    if got.shape != want.shape:
        return _report(False, f"shape {got.shape}, expected {want.shape}: drop the alpha channel from the result")
    a = fgp[..., 3:].astype(np.float64) / 255
    doubled = np.rint(fgp[..., :3] * a + bg * (1 - a))
    if np.array_equal(got.astype(np.float64), doubled) and not np.array_equal(doubled, want):
        return _report(False, "you multiplied the colour by alpha again: a premultiplied colour already is")
    if not np.array_equal(got[:4], bg[:4]):
        return _report(False, "where alpha is 0 the result must be exactly the background")
    if np.abs(got.astype(int) - want).max() == 1:
        return _report(False, "off by one level somewhere: round to the nearest integer (np.rint), don't truncate")
    if got.dtype != np.uint8:
        return _report(False, f"dtype {got.dtype}: return uint8, as the composites are stored")
    if not np.array_equal(got, want):
        return _report(False, "the soft pixels differ: out = fg_premultiplied + bg * (1 - alpha / 255)")
    return _report(True, "the premultiplied 'over', exact to the level")


# --------------------------------------------------------------------------- 04


class _WriteLog:
    """Every file opened for writing and every rename, while a student's function runs."""

    def __init__(self):
        self.written: list[Path] = []
        self.renamed: list[tuple[Path, Path]] = []

    @contextlib.contextmanager
    def watching(self):
        import builtins
        import io
        import os

        real_open, real_os_open, real_replace, real_rename = io.open, os.open, os.replace, os.rename

        def logged_open(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+"):
                self.written.append(Path(file).resolve())
            return real_open(file, mode, *args, **kwargs)

        def logged_os_open(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR):
                self.written.append(Path(path).resolve())
            return real_os_open(path, flags, *args, **kwargs)

        def logged(real):
            def move(src, dst, *args, **kwargs):
                self.renamed.append((Path(src).resolve(), Path(dst).resolve()))
                return real(src, dst, *args, **kwargs)
            return move

        patches = [(builtins, "open", logged_open), (io, "open", logged_open), (os, "open", logged_os_open),
                   (os, "replace", logged(real_replace)), (os, "rename", logged(real_rename))]
        saved = [(mod, name, getattr(mod, name)) for mod, name, _ in patches]
        try:
            for mod, name, new in patches:
                setattr(mod, name, new)
            yield self
        finally:
            for mod, name, old in saved:
                setattr(mod, name, old)


@_never_raises
def write_atomically(fn: Callable[[bytes, Path], None]) -> bool:
    """Chapter 04: ``fn(data, path)`` writes the bytes ``data`` so that ``path`` never exists half
    written: a temporary file in the same folder, renamed onto ``path`` when complete."""
    import tempfile

    data = bytes(range(256)) * 64
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp).resolve()
        target = folder / "bg_007.zip"
        for before in (None, b"an older shard"):  # a new file, then one that replaces an existing file
            if before is not None:
                target.write_bytes(before)
            log = _WriteLog()
            with log.watching():
                _answer(fn, data, target, want=None)
            if target in log.written:
                return _report(False, "you wrote the final name directly: a process killed halfway leaves half a "
                                      "file there, and a re-run takes it for finished. Write a temporary name first")
            if not target.exists() or target.read_bytes() != data:
                return _report(False, f"{target.name} does not hold the data afterwards: rename the temporary file onto it")
            elsewhere = [w for w in log.written if w.parent != folder]
            if elsewhere:
                return _report(False, f"the temporary file {elsewhere[0]} is in another folder: a rename across file "
                                      "systems is a copy, not atomic. Put it next to the final file")
            if not any(dst == target for _, dst in log.renamed):
                return _report(False, "the final name must appear by a rename (os.replace): it is atomic")
            left = sorted(p.name for p in folder.iterdir() if p != target)
            if left:
                return _report(False, f"a temporary file was left behind ({left[0]}): rename it, don't copy it")
    return _report(True, "the final name appears whole or not at all, as storage.atomic_path does it")


# --------------------------------------------------------------------------- 05


def _masks() -> list[np.ndarray]:
    a = np.zeros((20, 12), np.uint8)
    a[3:15, 4:8] = 255
    b = a.copy()
    b[15, 2:5] = 200  # a soft foot further left
    b[16, 3] = 100  # below the threshold
    c = np.zeros((20, 12), np.uint8)
    c[10:19, 9:11] = 255
    return [a, b, c]


@_never_raises
def foot_point(fn: Callable[[np.ndarray], tuple[int, int] | None]) -> bool:
    """Chapter 05: ``fn(mask)`` returns (x, y) of the feet of a uint8 (H, W) mask: the lowest row with
    a pixel of at least 128, at the rounded mean column of that row's such pixels; None if there is none."""
    from .depth import foot_point as reference

    for m in _masks():
        want = reference(m)
        got = tuple(int(v) for v in _answer(fn, m, want="(x, y) for a mask with a person"))
        if got == want:
            continue
        if got == want[::-1]:
            return _report(False, f"(y, x) instead of (x, y): got {got}, expected {want}")
        if got[1] == int(np.flatnonzero((m >= 128).any(1))[0]):
            return _report(False, "that is the top row (the head); the feet are on the lowest row")
        if got[1] == int(np.flatnonzero((m > 0).any(1))[-1]):
            return _report(False, "count only pixels of at least 128: a faint halo is not a foot")
        return _report(False, f"got {got}, expected {want}")
    try:
        empty = fn(np.zeros((8, 8), np.uint8))
    except Exception as exc:  # a student's code: any failure becomes a hint
        raise _NotYet(f"a mask with no person has no foot point: return None ({type(exc).__name__}: {exc})") from None
    if empty is not None:
        raise _NotYet("a mask with no person has no foot point: return None")
    return _report(True, "the foot-point rule, down to the soft foot and the empty mask")


# --------------------------------------------------------------------------- 06


@_never_raises
def std_from_histogram(fn: Callable[[np.ndarray], tuple[float, float]]) -> bool:
    """Chapter 06: ``fn(hist)`` takes a 256-bin histogram of uint8 values (counts) and returns their
    (mean, std) on the 0-1 scale: the population std, as the exact statistics use."""
    rng = np.random.default_rng(5)
    values = rng.integers(20, 230, 5000)
    hist = np.bincount(values, minlength=256)
    want = np.array([values.mean() / 255, values.std() / 255])
    got = _answer(fn, hist.copy(), want="(mean, std)")
    got = np.asarray(got, dtype=np.float64)
    if np.allclose(got, want * 255, rtol=1e-6):
        return _report(False, "right values on the 0-255 scale: divide by 255")
    if np.isclose(got[0], want[0], rtol=1e-6) and np.isclose(got[1], values.std(ddof=1) / 255, rtol=1e-9):
        return _report(False, "that is the sample std (n - 1); the statistics of all pixels use n")
    if np.isclose(got[0], np.arange(256).mean() / 255, rtol=1e-6):
        return _report(False, "that averages the bin values; weight each value by its count")
    if not np.allclose(got, want, rtol=1e-6):
        return _report(False, f"got {np.round(got, 5).tolist()}, expected {np.round(want, 5).tolist()}")
    return _report(True, f"mean {want[0]:.4f}, std {want[1]:.4f} from the histogram alone")


# --------------------------------------------------------------------------- 07


@_never_raises
def mask_offset(fn: Callable[[np.ndarray, np.ndarray], tuple[int, int]]) -> bool:
    """Chapter 07: ``fn(true_mask, stored_mask)`` returns (dy, dx), the shift (each in -3..3) that
    moves ``stored_mask`` onto ``true_mask`` (``np.roll(stored_mask, (dy, dx), (0, 1))``, best IoU)."""
    true = np.zeros((32, 32), np.uint8)
    true[8:24, 10:18] = 255
    for dy, dx in ((0, 2), (-1, 3), (2, -2)):
        stored = np.roll(true, (-dy, -dx), (0, 1))
        got = _answer(fn, true.copy(), stored, want="(dy, dx)")
        got = tuple(int(v) for v in got)
        if got == (-dy, -dx):
            return _report(False, "the opposite sign: the shift moves the stored mask onto the true one")
        if got == (dx, dy):
            return _report(False, "(dx, dy) instead of (dy, dx)")
        if got != (dy, dx):
            return _report(False, f"got {got}, expected {(dy, dx)}: try every shift in -3..3 and keep the best IoU")
    return _report(True, "a shift no statistic sees, found by comparing the pictures")


# --------------------------------------------------------------------------- 08


@_never_raises
def leak_share(fn: Callable[[set, list], float]) -> bool:
    """Chapter 08: ``fn(train_rooms, test_items)``: the share (0-1) of test composites, given as
    (bg, fg) pairs, whose room ``bg`` is also in ``train_rooms``."""
    train_rooms = {0, 1, 2, 5}
    test = [(0, 3), (3, 1), (4, 4), (5, 0), (6, 2), (3, 3), (1, 7), (7, 7)]
    want = 3 / 8
    got = _answer(fn, set(train_rooms), list(test), want="a share between 0 and 1")
    if np.isclose(float(got), 3):
        return _report(False, "that is a count; divide by the number of test composites")
    if np.isclose(float(got), 100 * want):
        return _report(False, "a percentage; return a share between 0 and 1")
    if np.isclose(float(got), 2 / 8) or np.isclose(float(got), 3 / 7):
        return _report(False, "compare the room of each test composite (its first value) with the training rooms")
    if not np.isclose(float(got), want):
        return _report(False, f"got {got}, expected {want}")
    return _report(True, "3 of 8 test composites show a training room: their scores would flatter the model")


# --------------------------------------------------------------------------- 09


@_never_raises
def receptive_field(answer: int | None) -> bool:
    """Chapter 09: the receptive field, in input pixels, of one output pixel of
    3x3 conv, 3x3 conv, 2x2 max-pool (stride 2), 3x3 conv, 3x3 conv (padding 1 throughout)."""
    want = 14  # 1 + 2 + 2 at stride 1, the pool adds 1, each later 3x3 conv adds 2 x 2
    if answer is None:
        return _report(False, "set answer to a number of pixels")
    if answer == 10:
        return _report(False, "after the pool a 3x3 conv spans 3 pooled pixels, 2 input pixels each: it adds 4, not 2")
    if answer == 9:
        return _report(False, "the pool of 2 also widens the field, by 1 input pixel")
    if answer != want:
        return _report(False, "add up what each layer adds: a 3x3 conv adds 2 x (the stride so far), a 2x2 pool "
                              "adds 1 x (the stride so far), then doubles the stride")
    return _report(True, "14 px; models.receptive_field measures the same on the real stack")


# --------------------------------------------------------------------------- 10


@_never_raises
def iou(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> bool:
    """Chapter 10: ``fn(pred, target)`` with (N, 1, H, W) tensors in 0-1 returns the IoU per image, (N,),
    masks binarised at 0.5, and 1 where both masks are empty."""
    from .metrics import iou as reference

    g = torch.Generator().manual_seed(9)
    target = (torch.rand(4, 1, 16, 16, generator=g) > 0.6).float() * 0.9
    pred = torch.rand(4, 1, 16, 16, generator=g)
    target[3], pred[3] = 0, 0.2  # both empty
    want = reference(pred, target)
    got = _answer(fn, pred.clone(), target.clone(), want="one IoU per image")
    got = torch.as_tensor(got, dtype=torch.float32)
    if got.dim() == 0 or got.numel() == 1:
        return _report(False, "one number for the batch: return one value per image, shape (N,)")
    if torch.isnan(got[3]):
        return _report(False, "0 / 0 where both masks are empty: define that IoU as 1")
    if not torch.allclose(got[:3], want[:3], atol=1e-6):
        soft = ((pred * target).flatten(1).sum(1) / (pred + target - pred * target).flatten(1).sum(1))[:3]
        if torch.allclose(got[:3], soft, atol=1e-4):
            return _report(False, "a soft IoU of the probabilities: binarise both masks at 0.5 first")
        return _report(False, f"got {got.tolist()}, expected {want.tolist()}")
    if not torch.isclose(got[3], want[3]):
        return _report(False, "where both masks are empty the IoU is 1 (nothing to get wrong)")
    return _report(True, "IoU per image, empty masks included")


# --------------------------------------------------------------------------- 11


@_never_raises
def steps_per_run(answer: int | None) -> bool:
    """Chapter 11: optimizer steps of 6 epochs over 240,000 training composites in batches of 64,
    the last incomplete batch of each epoch dropped."""
    want = 6 * (240_000 // 64)
    if answer is None:
        return _report(False, "set answer to a number of steps")
    if answer == 240_000 // 64:
        return _report(False, "that is one epoch; the run has six")
    if answer == 6 * 240_000:
        return _report(False, "that counts composites; a step takes a batch of 64")
    if answer != want:
        return _report(False, "steps per epoch = composites // batch size (the remainder is dropped), times epochs")
    return _report(True, f"{want:,} steps: the length the one-cycle schedule is built for")


# --------------------------------------------------------------------------- 12


@_never_raises
def rank_batches(fn: Callable[[int, int, int], list]) -> bool:
    """Chapter 12: ``fn(n_batches, rank, world)`` lists the batch numbers process ``rank`` of ``world``
    trains on: every ``world``-th batch from ``rank`` on, the same count on every process (the
    batches left over when ``world`` does not divide ``n_batches`` are dropped)."""
    for n, world in ((10, 3), (8, 2), (7, 1), (5, 4), (2, 4)):
        got = [list(map(int, _answer(fn, n, r, world, want="a list of batch numbers"))) for r in range(world)]
        per = n // world
        want = [list(range(r, per * world, world)) for r in range(world)]
        if got == want:
            continue
        counts = [len(g) for g in got]
        if len(set(counts)) > 1:
            return _report(False, f"with {n} batches on {world} processes the counts are {counts}: a process with "
                                  "a step more waits for the others forever. Drop the batches left over")
        flat = [b for g in got for b in g]
        if len(flat) != len(set(flat)):
            return _report(False, f"with {n} batches on {world} processes two processes train the same batch")
        if counts[0] < per:
            return _report(False, f"with {n} batches on {world} processes each should take {per}, not {counts[0]}: "
                                  "drop only what does not divide evenly")
        return _report(False, f"with {n} batches on {world} processes: got {got}, expected {want}; "
                              "take every world-th batch, starting at rank")
    return _report(True, "equal counts, no batch twice: every process takes the same number of steps")


# --------------------------------------------------------------------------- 13


@_never_raises
def aligned_rmse(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> bool:
    """Chapter 13: ``fn(pred, target)`` with (N, 1, H, W) depth maps returns, per image, the RMSE left
    after the least-squares scale s and shift t of ``pred`` (s * pred + t against target, clipped to 0-1)."""
    from .metrics import aligned, rmse

    g = torch.Generator().manual_seed(11)
    target = torch.rand(3, 1, 12, 12, generator=g)
    pred = 0.5 * target + 0.2 + 0.05 * torch.rand(3, 1, 12, 12, generator=g)
    pred[1] = 2 * target[1] - 0.3 + 0.1 * torch.rand(1, 12, 12, generator=g)
    want = aligned(rmse, pred, target)
    got = _answer(fn, pred.clone(), target.clone(), want="one RMSE per image")
    got = torch.as_tensor(got, dtype=torch.float32).flatten()
    if got.numel() != 3:
        return _report(False, f"{got.numel()} values for 3 images: fit and score each image on its own")
    if torch.allclose(got, rmse(pred, target), atol=1e-5):
        return _report(False, "that is the plain RMSE: fit s and t first (least squares, per image)")
    if not torch.allclose(got, want, atol=1e-4):
        return _report(False, f"got {[round(v, 4) for v in got.tolist()]}, expected "
                              f"{[round(v, 4) for v in want.tolist()]}: one (s, t) per image, not one for the batch")
    return _report(True, "the error a teacher's unknown scale and offset cannot explain")
