"""Chapter 03: overlays - placement plan, alpha compositing, masks, shards and the manifest.

For every background ``bg``, foreground ``fg`` and ``flip`` in {0, 1} the plan holds exactly
``placements`` distinct boxes (x, y, w, h), drawn from a generator seeded with
``(seed, bg, fg, flip)``: the plan does not depend on worker count, order, or earlier runs. Each
composite is the flipped, resized foreground alpha-blended onto the background; its mask is the
same resized alpha on a black canvas. One zip shard per background holds its composites and masks.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import __version__
from .backgrounds import load_backgrounds
from .errors import DatasetError, InputError
from .masks import alpha_to_mask, load_foregrounds
from .storage import (atomic_write_bytes, atomic_write_json, composite_id, encode_jpeg, encode_png, read_json,
                      shard_name, write_manifest, write_shard)


# --------------------------------------------------------------------------- the plan

def fit_box(fg_w: int, fg_h: int, size: int, frac: float) -> tuple[int, int]:
    """(w, h) of a foreground scaled so h = frac * size, aspect kept, shrunk to fit the frame."""
    h = max(1, round(frac * size))
    w = max(1, round(h * fg_w / fg_h))
    if w > size:  # a very wide figure: fit the width instead, aspect kept
        w, h = size, max(1, round(size * fg_h / fg_w))
    return w, min(h, size)


def plan_placements(fg_w: int, fg_h: int, size: int, n: int, scale: tuple[float, float],
                    rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct boxes fully inside a ``size`` x ``size`` frame.

    Returns int64 (n, 4) rows of (x, y, w, h): the top-left corner and size of the pasted fg.
    """
    lo, hi = scale
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {scale}")
    boxes: list[tuple[int, int, int, int]] = []
    seen: set[tuple[int, int, int, int]] = set()
    for _ in range(100 * n + 100):
        w, h = fit_box(fg_w, fg_h, size, rng.uniform(lo, hi))
        box = (int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1)), w, h)
        if box not in seen:
            seen.add(box)
            boxes.append(box)
            if len(boxes) == n:
                return np.array(boxes, dtype=np.int64)
    raise ValueError(f"could not find {n} distinct placements in a {size}px frame; use fewer placements "
                     "or a larger size")


def placement_rng(seed: int, bg: int, fg: int, flip: int) -> np.random.Generator:
    """The generator for one (bg, fg, flip): independent streams, no reseeding collisions."""
    return np.random.default_rng([seed, bg, fg, flip])


def build_plan(fg_sizes: list[tuple[int, int]], n_bg: int, size: int, placements: int,
               scale: tuple[float, float], seed: int) -> list[dict]:
    """Manifest rows for every composite, ordered by (bg, fg, flip, k)."""
    rows = []
    for bg in range(n_bg):
        for fg, (fw, fh) in enumerate(fg_sizes):
            for flip in (0, 1):
                boxes = plan_placements(fw, fh, size, placements, scale, placement_rng(seed, bg, fg, flip))
                for k, (x, y, w, h) in enumerate(boxes.tolist()):
                    rows.append({"id": composite_id(fg, bg, flip, k), "bg": bg, "fg": fg, "flip": flip, "k": k,
                                 "x": x, "y": y, "w": w, "h": h, "shard": f"shards/{shard_name(bg)}"})
    return rows


# --------------------------------------------------------------------------- compositing

def resize_rgba(rgba: np.ndarray, w: int, h: int) -> np.ndarray:
    """Resize an RGBA foreground to (h, w, 4).

    PIL premultiplies RGBA by alpha while resampling, so transparent pixels' colours don't bleed
    into the soft edge.
    """
    return np.asarray(Image.fromarray(rgba, "RGBA").resize((w, h), Image.BILINEAR))


def blend(bg_patch: np.ndarray, fg_rgba: np.ndarray) -> np.ndarray:
    """Alpha-blend ``fg_rgba`` (h, w, 4) over ``bg_patch`` (h, w, 3), both uint8.

    out = (fg * a + bg * (255 - a)) / 255 with rounding, in integers: exact where a is 0 or 255,
    soft in between.
    """
    a = fg_rgba[..., 3:4].astype(np.uint16)
    out = fg_rgba[..., :3].astype(np.uint16) * a + bg_patch.astype(np.uint16) * (255 - a) + 127
    return (out // 255).astype(np.uint8)


def composite(bg: np.ndarray, fg_rgba: np.ndarray, x: int, y: int) -> tuple[np.ndarray, np.ndarray]:
    """Paste an already-resized RGBA ``fg_rgba`` onto ``bg`` with its top-left corner at (x, y).

    Returns:
        fg_bg: uint8 (H, W, 3), the composite.
        mask: uint8 (H, W), the fg alpha on a black canvas at the same place.
    """
    h, w = fg_rgba.shape[:2]
    out = bg.copy()
    out[y:y + h, x:x + w] = blend(bg[y:y + h, x:x + w], fg_rgba)
    mask = np.zeros(bg.shape[:2], np.uint8)
    mask[y:y + h, x:x + w] = fg_rgba[..., 3]
    return out, mask


def placed_foreground(fg_rgba: np.ndarray, flip: int, w: int, h: int) -> np.ndarray:
    """The foreground as it is pasted: flipped if ``flip``, resized to (h, w, 4)."""
    src = np.ascontiguousarray(fg_rgba[:, ::-1]) if flip else fg_rgba
    return resize_rgba(src, w, h)


def render_composite(bg: np.ndarray, fg_rgba: np.ndarray, row: dict) -> tuple[np.ndarray, np.ndarray]:
    """The composite and mask for one manifest row."""
    placed = placed_foreground(fg_rgba, int(row["flip"]), int(row["w"]), int(row["h"]))
    return composite(bg, placed, int(row["x"]), int(row["y"]))


# --------------------------------------------------------------------------- shards

_WORKER: dict = {}


def _init_worker(bgs: list[np.ndarray], fgs: list[np.ndarray], jpeg_quality: int) -> None:
    _WORKER.update(bgs=bgs, fgs=fgs, q=jpeg_quality)


def shard_members(bg: np.ndarray, fgs: list[np.ndarray], rows: list[dict], jpeg_quality: int):
    """Yield (member name, bytes) for one shard: fg_bg/<id>.jpg then mask/<id>.png per row."""
    for row in rows:
        fg_bg, mask = render_composite(bg, fgs[row["fg"]], row)
        yield f"fg_bg/{row['id']}.jpg", encode_jpeg(fg_bg, jpeg_quality)
        yield f"mask/{row['id']}.png", encode_png(mask)


def _write_one_shard(task: tuple[str, int, list[dict]]) -> int:
    path, bg, rows = task
    write_shard(path, shard_members(_WORKER["bgs"][bg], _WORKER["fgs"], rows, _WORKER["q"]))
    return len(rows)


@dataclass
class GenerateResult:
    out: Path
    composites: int
    shards: int
    shards_written: int  # shards made by this run (0 when everything was already done)
    n_bg: int
    n_fg: int
    skipped: list

    def __repr__(self) -> str:  # what notebooks print: the same for a fresh and a resumed run
        return (f"GenerateResult({self.n_bg} bg x {self.n_fg} fg x 2 flips -> {self.composites} composites "
                f"in {self.shards} shards, {len(self.skipped)} inputs skipped)")


def _params_digest(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def generate(bg_dir: str | Path, fg_dir: str | Path, out: str | Path, size: int = 224, placements: int = 20,
             scale: tuple[float, float] = (0.35, 0.65), seed: int = 0, workers: int | None = None,
             jpeg_quality: int = 90, progress: bool = True) -> GenerateResult:
    """Build the dataset in ``out`` from the images in ``bg_dir`` and ``fg_dir``.

    Safe to interrupt: shards are written atomically and a re-run with the same parameters skips
    the finished ones, ending byte-identical to an uninterrupted run. ``manifest.csv`` and then
    ``dataset.json`` are written last; ``dataset.json`` marks the dataset finished.
    """
    from tqdm import tqdm

    out = Path(out)
    if not 1 <= jpeg_quality <= 100:
        raise ValueError("jpeg_quality must be in 1..100")
    bgs = load_backgrounds(bg_dir, size)
    fgs = load_foregrounds(fg_dir)
    skipped = [{"kind": "bg", **s} for s in bgs.skipped] + \
              [{"kind": "fg", "file": r.path, "reason": r.reason} for r in fgs.skipped]
    if not bgs.images:
        raise InputError(f"{bg_dir}: no usable backgrounds ({len(bgs.skipped)} skipped: "
                         + "; ".join(f"{s['file']}: {s['reason']}" for s in bgs.skipped) + ")")
    if not fgs.images:
        raise InputError(f"{fg_dir}: no usable foregrounds ({len(fgs.skipped)} skipped: "
                         + "; ".join(f"{r.path}: {r.reason}" for r in fgs.skipped) + ")")

    params = {"size": size, "placements": placements, "scale": list(scale), "seed": seed,
              "jpeg_quality": jpeg_quality, "bg_sources": bgs.sources, "fg_sources": fgs.sources}
    lock = out / "params.json"
    if lock.exists() and _params_digest(read_json(lock)) != _params_digest(params):
        raise DatasetError(f"{out}: holds a dataset made with other parameters or inputs (see {lock.name}); "
                           "choose a new folder or delete this one")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(lock, params)

    # The prepared inputs: what the model's data loader reads as bg, and what verify checks masks against.
    for i, arr in enumerate(bgs.images):
        atomic_write_bytes(out / "bg" / f"{i:03d}.png", encode_png(arr, 6))
    for j, rgba in enumerate(fgs.images):
        atomic_write_bytes(out / "fg" / f"{j:03d}.png", encode_png(rgba, 6))
        atomic_write_bytes(out / "fg_mask" / f"{j:03d}.png", encode_png(alpha_to_mask(rgba[..., 3]), 6))

    rows = build_plan([(f.shape[1], f.shape[0]) for f in fgs.images], len(bgs.images), size, placements,
                      scale, seed)
    per_bg = len(rows) // len(bgs.images)
    tasks = []
    for bg in range(len(bgs.images)):
        path = out / "shards" / shard_name(bg)
        if not path.exists():
            tasks.append((str(path), bg, rows[bg * per_bg:(bg + 1) * per_bg]))
    (out / "shards").mkdir(exist_ok=True)

    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks) or 1))
    done = len(rows) - sum(len(t[2]) for t in tasks)
    with tqdm(total=len(rows), initial=done, unit="img", desc="composites", disable=not progress) as bar:
        if workers == 1:
            _init_worker(bgs.images, fgs.images, jpeg_quality)
            for task in tasks:
                bar.update(_write_one_shard(task))
        elif tasks:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ctx.Pool(workers, _init_worker, (bgs.images, fgs.images, jpeg_quality)) as pool:
                for n in pool.imap_unordered(_write_one_shard, tasks):
                    bar.update(n)

    write_manifest(out / "manifest.csv", rows)
    info = {
        "format": "depthmask-dataset/1",
        "version": __version__,
        "params": {k: v for k, v in params.items() if not k.endswith("_sources")},
        "counts": {"bg": len(bgs.images), "fg": len(fgs.images), "flips": 2, "placements": placements,
                   "composites": len(rows), "masks": len(rows), "shards": len(bgs.images)},
        "inputs": {
            "bg_dir": str(Path(bg_dir).resolve()),
            "fg_dir": str(Path(fg_dir).resolve()),
            "bg": [{"id": i, "file": f, "original_size": list(s)}
                   for i, (f, s) in enumerate(zip(bgs.sources, bgs.original_sizes))],
            "fg": [{"id": j, "file": r.path, "method": r.method, "size": list(r.size)}
                   for j, r in enumerate([r for r in fgs.reports if r.usable])],
        },
        "skipped": skipped,
        "members": {"fg_bg": "fg_bg/<id>.jpg", "mask": "mask/<id>.png"},
    }
    old = out / "dataset.json"
    if old.exists():  # keep what later chapters added (depth labels), refresh the rest
        prev = read_json(old)
        info.update({k: v for k, v in prev.items() if k not in info})
    atomic_write_json(old, info)
    return GenerateResult(out, len(rows), len(bgs.images), len(tasks), len(bgs.images), len(fgs.images), skipped)
