"""Chapters 03-04: the generator - composites, masks, shards and the manifest of a dataset.

:func:`generate` checks the inputs, plans every placement (:mod:`placement`: the plan, floors),
pastes each person with the "over" operator (:mod:`compositing`), and writes one zip shard per
background with its composites (JPEG) and masks (PNG), then ``manifest.csv`` and
``dataset.json``. It resumes shard by shard. The names of the plan and of compositing are
re-exported here, so chapter 03 reads them as ``overlay.plan_placements`` and so on.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .backgrounds import load_backgrounds
from .compositing import ForegroundPyramid, blend_premultiplied, composite, pyramids_for  # noqa: F401 (chapter 03)
from .config import MAX_PLACEMENTS, Profile, from_profile, people_per_bg, recorded_fg_per_bg, scaled_placements
from .dataset import (DATASET_JSON, FORMAT, MANIFEST_CSV, PARAMS_JSON, member, member_pattern, prepared_path,
                      read_params)
from .errors import DatasetError, InputError
from .masks import alpha_to_mask, load_foregrounds
from .parallel import run_tasks
from .placement import (PLACEMENTS, PLAN_VERSION, Floor, find_floors, foregrounds_for, placement_rng, plan_background,  # noqa: F401
                        plan_floor_placements, plan_placements)
from .storage import (GREY_PNG_DEFLATE, JPEG_CHROMA, MANIFEST_FIELDS, PLACEMENT_FIELDS, atomic_write_bytes,
                      atomic_write_json, encode_jpeg_bgr, encode_png, encode_png_rows, read_json,
                      remove_stale_temporaries, shard_name, write_manifest, write_shard)



# --------------------------------------------------------------------------- shards

_WORKER: dict = {}


def _init_worker(bgr: list[np.ndarray], pyramids: list[ForegroundPyramid], jpeg: tuple[int, str], plan: dict,
                 floors: list[Floor] | None) -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already; OpenCV threads would oversubscribe
    # Worker state, set once per process by the pool initializer (inherited, not copied, under fork).
    _WORKER.update(bgs=bgr, pyramids=pyramids, jpeg=jpeg, floors=floors, plan=plan)


def shard_members(bgr: np.ndarray, pyramids: list[ForegroundPyramid], rows: list[dict], jpeg_quality: int,
                  jpeg_chroma: str = "444"):
    """Yield (member name, bytes) for one shard: fg_bg/<id>.jpg then mask/<id>.png per row.

    ``bgr`` and the pyramids are in BGR(A) channel order, which OpenCV's JPEG encoder expects.
    The bytes are those of :func:`composite` and :func:`~depthmask_utils.storage.encode_png`
    (tested), but each person is blended into one working copy of the background, restored after
    encoding, and each mask pasted into one zeroed PNG row buffer, cleared after: no whole frame is
    copied or zeroed per composite.
    """
    canvas = bgr.copy()
    mask_rows = np.zeros((bgr.shape[0], bgr.shape[1] + 1), np.uint8)  # PNG layout: a filter byte, then pixels
    for row in rows:
        x, y, w, h = row["x"], row["y"], row["w"], row["h"]
        placed = pyramids[row["fg"]].placed(row["flip"], w, h)
        patch = canvas[y:y + h, x:x + w]
        blend_premultiplied(patch, placed, dst=patch)
        jpeg = encode_jpeg_bgr(canvas, jpeg_quality, jpeg_chroma)
        patch[:] = bgr[y:y + h, x:x + w]
        alpha = mask_rows[y:y + h, 1 + x:1 + x + w]
        alpha[:] = placed[..., 3]
        png = encode_png_rows(mask_rows)
        alpha[:] = 0
        yield member("fg_bg", row["id"]), jpeg
        yield member("mask", row["id"]), png


def _write_one_shard(task: tuple[str, int]) -> tuple[int, list[dict]]:
    # Planning happens here, in parallel, rather than in the main process before the pool starts.
    path, bg = task
    floors = _WORKER["floors"]
    rows = plan_background(bg, floor=floors[bg] if floors else None, **_WORKER["plan"])
    write_shard(path, shard_members(_WORKER["bgs"][bg], _WORKER["pyramids"], rows, *_WORKER["jpeg"]))
    return bg, rows


@dataclass
class GenerateResult:
    """Summary of :func:`generate`: output folder, composites and shards in the dataset, shards written
    by this call (0 when all were done), input counts, the skipped inputs with their reasons, and
    wall-clock seconds per phase (``inputs``: loading and preparing bg and fg, foreground pyramids;
    ``shards``: planning, compositing, encoding and writing, worker start-up included).
    """
    out: Path
    composites: int
    shards: int
    shards_written: int  # shards made by this run (0 when everything was already done)
    n_bg: int
    n_fg: int
    skipped: list
    seconds: dict = field(default_factory=dict)
    on_floor: int = 0  # composites whose person stands on a floor (the rest are placed uniformly)
    floors: str = "none"  # where the floors came from: "given", "sample world", "estimated by <teacher>", "none"
    warnings: list = field(default_factory=list)  # inputs that work but may not be what you meant
    placements: int = 0  # per (bg, fg, flip): the asked number, or more for few photos (min_composites)
    fg_per_bg: int = 0  # people placed in each background (all n_fg, or a subset that turns round them)

    def __repr__(self) -> str:  # what notebooks print: the same for a fresh and a resumed run
        people = f"{self.n_fg} fg" if self.fg_per_bg in (0, self.n_fg) else f"{self.fg_per_bg} of {self.n_fg} fg"
        return (f"GenerateResult({self.n_bg} bg x {people} x 2 flips -> {self.composites} composites "
                f"in {self.shards} shards, {len(self.skipped)} inputs skipped; {self.on_floor} of {self.composites} "
                f"on a floor (floors: {self.floors}))")


def input_warnings(bgs, fgs, size: int) -> list[str]:
    """What works but may not be what the student meant, one line per file: backgrounds smaller than
    the composites (upscaled, so blurry) and foregrounds whose alpha hides almost nothing (a
    rectangle pasted into the room, not a person)."""
    out = [f"{f}: background is {w}x{h}, smaller than the {size}x{size} composites; it is upscaled (blurry)"
           for f, (w, h) in zip(bgs.sources, bgs.original_sizes) if min(w, h) < size]
    for f, rgba in zip(fgs.sources, fgs.images):
        clear = float((rgba[..., 3] < 128).mean())
        if clear < 0.02:
            out.append(f"{f}: its alpha hides only {clear:.1%} of the cut-out: a rectangle will be pasted; "
                       "cut the subject out (chapter 01)")
    return out


def no_alpha_error(fg_dir, fgs) -> InputError | None:
    """The error for foregrounds that have no alpha and no plain backdrop to cut them from, if any."""
    bad = [r for r in fgs.skipped if "plain backdrop" in r.reason]
    if not bad:
        return None
    return InputError(f"{fg_dir}: {len(bad)} foreground(s) have no alpha channel and no plain backdrop to cut "
                      f"them from: {', '.join(r.path for r in bad)}. Cut each subject out as in chapter 01 (GIMP: "
                      "Layer > Transparency > Add Alpha Channel, fuzzy-select the background, Delete, export as "
                      "PNG) or remove the file")


def estimate_floors(bg_images: list[np.ndarray], teacher: str, device: str | None = None) -> list[Floor]:
    """Automatic floors for backgrounds without masks: ``teacher``'s inverse depth of each empty
    background, then :func:`floor.estimate_floor`. The floors have no metric depth (a teacher's depth
    is relative), so people keep the plan's heights."""
    from .depth import make_teacher
    from .floor import estimate_floor

    model = make_teacher(teacher, device=device)
    return [Floor(estimate_floor(m)) for i in range(0, len(bg_images), 16)
            for m in model.predict(np.stack(bg_images[i:i + 16]))]


def _count(n: int, noun: str) -> str:
    """``"1 placement"``, ``"6 placements"``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _params_digest(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def generate(bg_dir: str | Path, fg_dir: str | Path, out: str | Path, size: int | None = None,
             placements: int | None = None, scale: tuple[float, float] | None = None, seed: int | None = None,
             workers: int | None = None, jpeg_quality: int | None = None, progress: bool = True,
             placement: str | None = None, floor_dir: str | Path | None = None, jpeg_chroma: str | None = None,
             floor_teacher: str | None = None, min_composites: int | None = None,
             fg_per_bg: int | None = None, profile: Profile | str = "sample", log=print) -> GenerateResult:
    """Build the dataset in ``out`` from the images in ``bg_dir`` and ``fg_dir``.

    Values left None are ``profile``'s (a :class:`config.Profile` or its name): ``floor_teacher`` is its ``network_teacher``;
    ``min_composites`` is its own, or 0 (``placements`` as given) when ``placements`` is given.

    ``fg_per_bg``: how many people each background gets (:func:`placement.foregrounds_for`: a
    subset that turns round all of them, so each appears in as many rooms); 0 or more than there
    are: every person in every room, the assignment's ``n_bg * n_fg`` pairs.
    ``jpeg_chroma``: ``"444"`` (colour at full resolution) or ``"420"`` (half; smaller files, but it
    blurs the person's colour into the background by a pixel, which is where the mask is read).
    ``placement``: ``"floor"`` (feet on the floor masks of ``floor_dir``, or of the sample world's
    ``bg_floor/``; without either, on floors estimated from ``floor_teacher``'s depth of each
    background, :mod:`depthmask_utils.floor`, saved to ``out/floor_estimate/``), ``"uniform"``
    (anywhere in the frame), or None: the same as ``"floor"``. How many composites stand on a
    floor is printed (``log``) and recorded in ``dataset.json["placement"]``.

    Inputs are checked first: a foreground without alpha (and no plain backdrop) stops with an error
    naming the files; small backgrounds and alphas that hide almost nothing are warned about
    (``log``, ``dataset.json["warnings"]``); unreadable files and duplicate backgrounds are skipped
    and listed.

    Safe to interrupt: shards are written atomically and a re-run with the same parameters skips
    the finished ones, ending byte-identical to an uninterrupted run. ``manifest.csv`` and then
    ``dataset.json`` are written last; ``dataset.json`` marks the dataset finished.
    """
    from tqdm import tqdm

    if min_composites is None and placements is not None:
        min_composites = 0
    size, placements, scale, seed, jpeg_quality, jpeg_chroma, floor_teacher, min_composites, fg_per_bg = from_profile(
        profile, size=size, placements=placements, scale=scale, seed=seed, jpeg_quality=jpeg_quality,
        jpeg_chroma=jpeg_chroma, network_teacher=floor_teacher, min_composites=min_composites, fg_per_bg=fg_per_bg)
    out = Path(out)
    if not 1 <= jpeg_quality <= 100:
        raise ValueError("jpeg_quality must be in 1..100")
    if jpeg_chroma not in JPEG_CHROMA:
        raise ValueError(f"jpeg_chroma must be one of {', '.join(JPEG_CHROMA)}, got {jpeg_chroma!r}")
    t0 = time.perf_counter()
    bgs = load_backgrounds(bg_dir, size)
    fgs = load_foregrounds(fg_dir)
    skipped = [{"kind": "bg", **s} for s in bgs.skipped] + \
              [{"kind": "fg", "file": r.path, "reason": r.reason} for r in fgs.skipped]
    if not bgs.images:
        raise InputError(f"{bg_dir}: no usable backgrounds ({len(bgs.skipped)} skipped: "
                         + "; ".join(f"{s['file']}: {s['reason']}" for s in bgs.skipped) + ")")
    error = no_alpha_error(fg_dir, fgs)
    if error is not None:
        raise error
    if not fgs.images:
        raise InputError(f"{fg_dir}: no usable foregrounds ({len(fgs.skipped)} skipped: "
                         + "; ".join(f"{r.path}: {r.reason}" for r in fgs.skipped) + ")")
    warnings = input_warnings(bgs, fgs, size)
    log(f"inputs: {len(bgs.images)} backgrounds, {len(fgs.images)} foregrounds"
        + (f"; skipped {len(skipped)}: " + "; ".join(f"{s['file']} ({s['reason']})" for s in skipped) if skipped else ""))
    for w in warnings:
        log(f"warning: {w}")
    per_bg = people_per_bg(len(fgs.images), fg_per_bg or None)
    subset = recorded_fg_per_bg(len(fgs.images), fg_per_bg or None)
    if subset:
        log(f"people per background: {per_bg} of {len(fgs.images)}, in turn, so each appears in as many rooms")
    asked, placements = placements, scaled_placements(placements, min_composites, len(bgs.images), per_bg)
    if placements != asked:
        total = len(bgs.images) * per_bg * 2 * placements
        log(f"placements: {placements} per (background, foreground, flip), not {asked}: "
            f"{len(bgs.images)} x {per_bg} photos x 2 flips would give "
            f"{len(bgs.images) * per_bg * 2 * asked} composites, and training needs about {min_composites:,}"
            + ("" if total >= min_composites else f"; {total:,} is the most ({MAX_PLACEMENTS} placements): bring more photos"))

    if placement not in (None, *PLACEMENTS):
        raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
    floors = None if placement == "uniform" else find_floors(bg_dir, bgs.sources, size, floor_dir)
    estimate = floors is None and placement != "uniform"  # done after the parameter check below: it runs a teacher
    floor_source = (f"estimated by {floor_teacher}" if estimate else
                    "none" if floors is None else "given" if floor_dir else "sample world")
    placement = "floor" if floors is not None or estimate else "uniform"
    params = {"size": size, "placements": placements, "scale": list(scale), "seed": seed,
              "jpeg_quality": jpeg_quality, "jpeg_chroma": jpeg_chroma, "placement": placement, "plan_version": PLAN_VERSION,
              "png_deflate": GREY_PNG_DEFLATE,
              "bg_sources": bgs.sources,
              "fg_sources": fgs.sources}
    if estimate:
        params["floors"] = floor_source
    if subset:  # recorded only when a subset: datasets of every pair keep their parameters
        params["fg_per_bg"] = subset
    lock = out / PARAMS_JSON
    todo = [bg for bg in range(len(bgs.images)) if not (out / "shards" / shard_name(bg)).exists()]
    kept = False  # a finished dataset left exactly as it is
    old = read_params(out) if lock.exists() else params
    if _params_digest(old) != _params_digest(params):
        # A finished dataset whose only difference is the PNG deflate (an older version of this
        # package) needs nothing written, so it is kept as it is; an unfinished one is refused,
        # since resuming it would mix two encoders' bytes.
        kept = not todo and (out / DATASET_JSON).exists() and \
            _params_digest({**old, "png_deflate": GREY_PNG_DEFLATE}) == _params_digest(params)
        if not kept:
            differs = ", ".join(k for k in sorted(set(old) | set(params)) if old.get(k) != params.get(k))
            raise DatasetError(f"{out}: holds a dataset made with other parameters or inputs (differs in: {differs}; "
                               f"see {lock.name}); choose a new folder or delete this one"
                               + ("; a folder made before floors were estimated takes --placement uniform"
                                  if "floors" in differs else ""))
    if estimate:  # a resumed run reads back the masks it estimated
        from .floor import load_floors

        masks = load_floors(out, len(bgs.images))
        floors = [Floor(m) for m in masks] if masks is not None else estimate_floors(bgs.images, floor_teacher)
    out.mkdir(parents=True, exist_ok=True)
    if not kept:
        atomic_write_json(lock, params)
        # The prepared inputs: what the model's data loader reads as bg, and what verify checks masks against.
        for i, arr in enumerate(bgs.images):
            atomic_write_bytes(prepared_path(out, "bg", i), encode_png(arr))
        for j, rgba in enumerate(fgs.images):
            atomic_write_bytes(prepared_path(out, "fg", j), encode_png(rgba))
            atomic_write_bytes(prepared_path(out, "fg_mask", j), encode_png(alpha_to_mask(rgba[..., 3])))
        if estimate:  # to look at, and what a resumed run reuses
            from .floor import save_floors

            save_floors([f.mask for f in floors], out)

    fg_sizes = [(f.shape[1], f.shape[0]) for f in fgs.images]
    (out / "shards").mkdir(exist_ok=True)
    remove_stale_temporaries(out / "shards")
    plan = dict(fg_sizes=fg_sizes, size=size, placements=placements, scale=scale, seed=seed, fg_per_bg=per_bg)
    # Finished shards (a resumed run) are only planned, here; the rest are planned and written by workers.
    planned = {bg: plan_background(bg, floor=floors[bg] if floors else None, **plan)
               for bg in range(len(bgs.images)) if bg not in todo}
    # Backgrounds and foreground pyramids in BGR(A) order, so OpenCV's JPEG encoder takes each
    # composite as it is; built once here and shared with the workers.
    bgr = [np.ascontiguousarray(b[..., ::-1]) for b in bgs.images]
    pyramids = pyramids_for([np.ascontiguousarray(f[..., [2, 1, 0, 3]]) for f in fgs.images], size, scale) if todo else []
    t1 = time.perf_counter()
    per_shard = per_bg * 2 * placements
    with tqdm(total=len(bgs.images) * per_shard, initial=(len(bgs.images) - len(todo)) * per_shard, unit="img",
              desc="composites", disable=not progress) as bar:
        if todo:
            for bg, bg_rows in run_tasks(_write_one_shard, [(str(out / "shards" / shard_name(bg)), bg) for bg in todo],
                                         workers, _init_worker, (bgr, pyramids, (jpeg_quality, jpeg_chroma), plan, floors),
                                         ordered=False):
                planned[bg] = bg_rows
                bar.update(len(bg_rows))
    rows = [row for bg in range(len(bgs.images)) for row in planned[bg]]
    on_floor = sum(r["placement"] == "floor" for r in rows)
    uniform_bg = sorted({r["bg"] for r in rows if r["placement"] == "uniform"})
    log(f"placements on a floor: {on_floor} of {len(rows)} (floors: {floor_source})"
        + (f"; {_count(len(rows) - on_floor, 'placement')} in {_count(len(uniform_bg), 'background')} found no "
           "floor spot the person fits, so placed uniformly: "
           + ", ".join(bgs.sources[b] for b in uniform_bg[:8]) + (" ..." if len(uniform_bg) > 8 else "")
           if uniform_bg and placement == "floor" else ""))

    result = GenerateResult(out, len(rows), len(bgs.images), len(todo), len(bgs.images), len(fgs.images), skipped,
                            {"inputs": t1 - t0, "shards": time.perf_counter() - t1}, on_floor, floor_source, warnings,
                            placements, per_bg)
    if not todo and (out / DATASET_JSON).exists():
        return result  # already complete: leave later chapters' additions (depth columns) alone
    write_manifest(out / MANIFEST_CSV, rows, MANIFEST_FIELDS + PLACEMENT_FIELDS)
    info = {
        "format": FORMAT,
        "version": __version__,
        "params": {k: v for k, v in params.items() if not k.endswith("_sources")},
        "counts": {"bg": len(bgs.images), "fg": len(fgs.images), "fg_per_bg": per_bg, "flips": 2, "placements": placements,
                   "composites": len(rows), "masks": len(rows), "shards": len(bgs.images)},
        "inputs": {
            "bg_dir": str(Path(bg_dir).resolve()),
            "fg_dir": str(Path(fg_dir).resolve()),
            "floor_dir": str(Path(floor_dir).resolve()) if floor_dir else None,
            "bg": [{"id": i, "file": f, "original_size": list(s)}
                   for i, (f, s) in enumerate(zip(bgs.sources, bgs.original_sizes))],
            "fg": [{"id": j, "file": r.path, "method": r.method, "size": list(r.size)}
                   for j, r in enumerate([r for r in fgs.reports if r.usable])],
        },
        "skipped": skipped,
        "warnings": warnings,
        # Backgrounds without enough visible floor are placed uniformly even in floor mode: said here.
        "placement": {"mode": placement, "floors": floor_source, "on_floor": on_floor, "uniform": len(rows) - on_floor,
                      "uniform_bg": uniform_bg if placement == "floor" else []},
        "members": {c: member_pattern(c) for c in ("fg_bg", "mask")},
    }
    old = out / DATASET_JSON
    if old.exists():
        # Keep what later chapters added, except depth: the shards just written have no labels yet,
        # so the dataset must not claim them (label-depth will label just those shards).
        prev = read_json(old)
        info.update({k: v for k, v in prev.items() if k not in info and k != "depth"})
    atomic_write_json(old, info)
    return result
