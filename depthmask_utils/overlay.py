"""Chapter 03: overlays - placement plan, alpha compositing, masks, shards and the manifest.

For every background ``bg``, foreground ``fg`` and ``flip`` in {0, 1} the plan holds exactly
``placements`` distinct boxes (x, y, w, h), drawn from a generator seeded with
``(seed, bg, fg, flip)``: the plan does not depend on worker count, order, or earlier runs. Each
composite is the flipped, resized foreground alpha-blended onto the background; its mask is the
same resized alpha on a black canvas. One zip shard per background holds its composites and masks.

Placement is ``floor`` where the backgrounds come with floor masks (the sample world writes them;
otherwise ``floor_dir`` holds masks named like the backgrounds): the foot point - the bottom centre
of the box - is drawn from the floor, and where the background's depth is known too, the person's
height follows perspective (height in pixels proportional to 1 / depth at the foot point, times a
spread of real body heights). ``uniform`` (the default without floor masks) draws boxes anywhere in
the frame, which puts people on walls and sofa backs: chapter 04 shows what that does to depth.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from . import __version__
from .backgrounds import load_backgrounds
from .dataset import (DATASET_JSON, FORMAT, MANIFEST_CSV, PARAMS_JSON, member, member_pattern, prepared_path,
                      read_params)
from .errors import DatasetError, InputError
from .masks import alpha_to_mask, load_foregrounds
from .parallel import run_tasks
from .storage import (GREY_PNG_DEFLATE, JPEG_CHROMA, MANIFEST_FIELDS, PLACEMENT_FIELDS, atomic_write_bytes,
                      atomic_write_json, composite_id, encode_jpeg_bgr, encode_png, encode_png_rows, read_json,
                      remove_stale_temporaries, shard_name, write_manifest, write_shard)


# --------------------------------------------------------------------------- the plan

def fit_boxes(fg_w: int | np.ndarray, fg_h: int | np.ndarray, size: int,
              fracs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(w, h) int64 arrays of a foreground scaled so h = frac * size for each of ``fracs``, aspect kept,
    shrunk to fit the frame. Rounds half to even, like Python's ``round``. ``fg_w`` and ``fg_h`` may
    be arrays that broadcast against ``fracs`` (many foregrounds at once).
    """
    h = np.maximum(1, np.round(np.asarray(fracs, np.float64) * size)).astype(np.int64)
    w = np.maximum(1, np.round(h * fg_w / fg_h)).astype(np.int64)
    wide = w > size  # a very wide figure: fit the width instead, aspect kept
    h = np.where(wide, np.maximum(1, np.round(size * np.asarray(fg_h) / fg_w)).astype(np.int64), h)
    return np.where(wide, size, w), np.minimum(h, size)


def fit_box(fg_w: int, fg_h: int, size: int, frac: float) -> tuple[int, int]:
    """(w, h) of a foreground scaled so h = frac * size, aspect kept, shrunk to fit the frame."""
    w, h = fit_boxes(fg_w, fg_h, size, np.array([frac]))
    return int(w[0]), int(h[0])


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


PLACEMENTS = ("floor", "uniform")
# Bumped whenever the same seed would give other placements, so an unfinished dataset made by an
# earlier version is refused (see generate's params.json check) instead of resumed into a mix.
PLAN_VERSION = 2
PERSPECTIVE_SPREAD = (0.88, 1.12)  # real body heights vary about +-12 % around the average adult
MIN_FLOOR_SHARE = 0.01  # a background with less visible floor than this is placed uniformly (and says so)


@dataclass
class Floor:
    """Where people may stand in one prepared background: ``mask`` bool (size, size); ``depth`` float32
    (size, size) z-depth in any unit (only ratios are used), or None where unknown."""
    mask: np.ndarray
    depth: np.ndarray | None = None

    @property
    def usable(self) -> bool:
        """True when at least ``MIN_FLOOR_SHARE`` (1 %) of the frame is floor; otherwise placement is uniform."""
        return self.mask.mean() >= MIN_FLOOR_SHARE

    @cached_property
    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """(ys, xs) of the floor pixels, row-major; computed once per room, not once per person."""
        return np.nonzero(self.mask)

    @cached_property
    def z_ref(self) -> float | None:
        """Median floor depth: where a person has the typical height. None without depth."""
        if self.depth is None or not self.points[0].size:
            return None
        return float(np.median(self.depth[self.points]))


def perspective_range(scale: tuple[float, float]) -> tuple[float, float]:
    """Heights (fraction of the frame) that perspective placement may produce around ``scale``."""
    return 0.6 * scale[0], min(1.0, 1.3 * scale[1])


class BoxMin:
    """Minimum of a 2-D array over many boxes at once, exactly: a sparse table of the minima of
    every 2^i x 2^j block, so any box is the minimum of four (overlapping) blocks.

    Built once per room, each block size on first use (a room's bodies need about 20 of the 64),
    instead of a numpy ``min`` per candidate box, which was two thirds of the planning time.
    """

    def __init__(self, a: np.ndarray):
        self._blocks = {(0, 0): a}

    def block(self, i: int, j: int) -> np.ndarray:
        """Minima of the 2^i x 2^j blocks: ``out[y, x] = a[y:y + 2^i, x:x + 2^j].min()`` where it fits."""
        if (i, j) not in self._blocks:
            if j:
                prev, k = self.block(i, j - 1), 1 << (j - 1)
                self._blocks[i, j] = np.minimum(prev[:, :-k], prev[:, k:])
            else:
                prev, k = self.block(i - 1, 0), 1 << (i - 1)
                self._blocks[i, j] = np.minimum(prev[:-k], prev[k:])
        return self._blocks[i, j]

    def __call__(self, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray) -> np.ndarray:
        """Minimum over rows [y0, y1) and columns [x0, x1) for each box; int arrays, non-empty boxes."""
        i = np.frexp((y1 - y0).astype(np.float64))[1] - 1  # floor(log2(height)), exact for integers
        j = np.frexp((x1 - x0).astype(np.float64))[1] - 1
        out = np.empty(len(x0), self._blocks[0, 0].dtype)
        for a, b in set(zip(i.tolist(), j.tolist())):
            sel = (i == a) & (j == b)
            t, ya, yb, xa, xb = self.block(a, b), y0[sel], y1[sel] - (1 << a), x0[sel], x1[sel] - (1 << b)
            out[sel] = np.minimum(np.minimum(t[ya, xa], t[ya, xb]), np.minimum(t[yb, xa], t[yb, xb]))
        return out


def plan_floor_placements(fg_w: int, fg_h: int, size: int, n: int, scale: tuple[float, float],
                          rng: np.random.Generator, floor: Floor,
                          depth_min: BoxMin | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """``n`` distinct boxes whose foot point (bottom-centre pixel) lies on ``floor.mask``.

    Without depth the height is ``uniform(scale) * size`` as in :func:`plan_placements`. With depth it
    follows perspective: ``mid(scale) * z_ref / z_foot`` times a real-height spread, where ``z_ref``
    is the median floor depth, so a person at the typical floor distance has the typical height, and
    boxes with a nearer surface in front of the body (:func:`occluded`) are redrawn.
    Returns int64 (n, 4) boxes and (n, 2) foot points, or None if the floor cannot hold ``n``.
    :func:`plan_floor_placements_many` does the same for many foregrounds at once.
    """
    return plan_floor_placements_many([(fg_w, fg_h)], size, n, scale, [rng], floor, depth_min)[0]


def plan_floor_placements_many(fg_sizes: list[tuple[int, int]], size: int, n: int, scale: tuple[float, float],
                               rngs: list[np.random.Generator], floor: Floor, depth_min: BoxMin | None = None
                               ) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """:func:`plan_floor_placements` for each (``fg_sizes[j]``, ``rngs[j]``), the same results, computed
    together: a room's 200 (person, flip) plans of 20 boxes each cost ~1/5 of planning them one by one.

    ``depth_min``, a :class:`BoxMin` of ``floor.depth``, is built here if not given.
    """
    ys, xs = floor.points
    if ys.size == 0:
        return [None] * len(rngs)
    lo, hi = scale
    depth = floor.depth
    if depth is not None:
        h_lo, h_hi = perspective_range(scale)
        depth_min = depth_min or BoxMin(depth)
    fg_w, fg_h = (np.array(v, np.int64)[:, None] for v in zip(*fg_sizes))
    boxes, feet = [[] for _ in rngs], [[] for _ in rngs]
    seen = [np.empty(0, np.int64) for _ in rngs]
    todo = list(range(len(rngs)))
    batch = 4 * n + 16
    # Each stream draws its candidates in batches (two generator calls per batch instead of two per
    # candidate) and accepts them in order - the first n that fit, are not occluded and are not a
    # repeat - so each plan is a pure function of its own stream; the arithmetic runs on all the
    # streams' batches at once.
    for _ in range(50):
        draws = [(rngs[j].integers(ys.size, size=batch),
                  rngs[j].uniform(*(PERSPECTIVE_SPREAD if depth is not None else scale), size=batch)) for j in todo]
        i, u = (np.stack(d) for d in zip(*draws))  # (streams, batch)
        fx, fy = xs[i], ys[i]
        if depth is None:
            frac, ok = u, np.ones(i.shape, bool)
        else:
            z_foot = np.maximum(depth[fy, fx], 1e-6).astype(np.float64)
            frac = (lo + hi) / 2 * floor.z_ref / z_foot * u
            ok = (h_lo <= frac) & (frac <= h_hi)
        w, h = fit_boxes(fg_w[todo], fg_h[todo], size, frac)
        x, y = fx - w // 2, fy - h + 1
        ok &= (x >= 0) & (y >= 0) & (x + w <= size)
        if depth is not None:
            c = np.nonzero(ok)
            ok[c] = ~occluded(depth_min, x[c], y[c], w[c], h[c], z_foot[c])
        r, c = np.nonzero(ok)  # stream by stream, each in draw order
        keys = ((x[r, c] * (size + 1) + y[r, c]) * (size + 1) + w[r, c]) * (size + 1) + h[r, c]  # one int per box
        _, first = np.unique(r * (size + 1) ** 4 + keys, return_index=True)  # a repeat counts where first drawn
        first.sort()
        r, c, keys = r[first], c[first], keys[first]
        ends = np.searchsorted(r, np.arange(len(todo) + 1))
        still = []
        for row, j in enumerate(todo):
            cc, kk = c[ends[row]:ends[row + 1]], keys[ends[row]:ends[row + 1]]
            if seen[j].size:  # and not at all if an earlier batch took it
                fresh = ~np.isin(kk, seen[j])
                cc, kk = cc[fresh], kk[fresh]
            cc, kk = cc[:n - seen[j].size], kk[:n - seen[j].size]
            boxes[j].append(np.stack([x[row, cc], y[row, cc], w[row, cc], h[row, cc]], axis=1))
            feet[j].append(np.stack([fx[row, cc], fy[row, cc]], axis=1))
            seen[j] = np.concatenate([seen[j], kk])
            if seen[j].size < n:
                still.append(j)
        todo = still
        if not todo:
            break
    return [(np.concatenate(b).astype(np.int64), np.concatenate(f).astype(np.int64)) if s.size == n else None
            for b, f, s in zip(boxes, feet, seen)]


def occluded(depth_min: BoxMin, x: np.ndarray, y: np.ndarray, w: np.ndarray, h: np.ndarray,
             z_foot: np.ndarray) -> np.ndarray:
    """Would something nearer than the feet (a sofa back, a table) stand in front of each body?

    Checks the middle half of each box (x, y, w, h): the person is pasted over it, so a surface
    more than 3 % nearer than the feet there would make them stand behind the furniture yet appear
    in front of it. ``depth_min`` is a :class:`BoxMin` of the room's depth; returns bool (n,).
    """
    body = depth_min(x + w // 4, y, x + w - w // 4, y + h)
    return body.astype(np.float64) < 0.97 * z_foot


def load_floor(mask_path: Path, depth_path: Path | None, size: int) -> Floor:
    """A floor mask (and the sample world's z-depth PNG, if given) cropped and resized like its background."""
    from .backgrounds import center_crop_box

    try:
        m = Image.open(mask_path).convert("L")
    except (OSError, ValueError) as exc:
        raise InputError(f"{mask_path}: unreadable floor mask ({exc})") from None
    box = center_crop_box(*m.size)
    mask = np.asarray(m.resize((size, size), Image.BILINEAR, box=box)) >= 128
    depth = None
    if depth_path is not None and depth_path.exists():
        from .sample import read_depth_mm

        z = Image.fromarray(read_depth_mm(depth_path), "F")  # metres; only ratios are used
        if z.size != m.size:
            raise InputError(f"{depth_path}: {z.size[0]}x{z.size[1]}, but the floor mask is {m.size[0]}x{m.size[1]}")
        depth = np.asarray(z.resize((size, size), Image.NEAREST, box=box), dtype=np.float32)
    return Floor(mask, depth)


def find_floors(bg_dir: str | Path, sources: list[str], size: int, floor_dir: str | Path | None = None
                ) -> list[Floor] | None:
    """Floor masks for the prepared backgrounds, or None if there are none.

    Masks are ``<floor_dir>/<background stem>.png``; without ``floor_dir`` the sample world's layout
    is tried (``bg_floor/`` beside ``bg_dir``), and its ``bg_depth/`` gives perspective heights. A
    given ``floor_dir`` must hold a mask for every background.
    """
    bg_dir = Path(bg_dir)
    auto = floor_dir is None
    folder = bg_dir.parent / "bg_floor" if auto else Path(floor_dir)
    if not folder.is_dir():
        if auto:
            return None
        raise InputError(f"{folder}: floor mask folder not found")
    depth_dir = bg_dir.parent / "bg_depth"
    paths = [folder / (Path(src).stem + ".png") for src in sources]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        if auto:
            return None
        raise InputError(f"{folder}: no floor mask for {len(missing)} backgrounds (e.g. {missing[0]}); "
                         "name each mask like its background, as PNG")
    return [load_floor(p, depth_dir / p.name if depth_dir.is_dir() else None, size) for p in paths]


def dataset_floors(dataset: str | Path, size: int | None = None) -> list[Floor] | None:
    """The floors a finished dataset was placed on, at ``size`` (default: its own), or None if it was
    placed uniformly: its ``floor_estimate/`` masks, else the masks it was generated with."""
    from .floor import load_floors

    info = read_json(Path(dataset) / DATASET_JSON)
    size = int(size or info["params"]["size"])
    placed = info.get("placement", {})
    if placed.get("mode") != "floor":
        return None
    if placed.get("floors", "").startswith("estimated"):
        masks = load_floors(dataset, int(info["counts"]["bg"]), size)
        found = None if masks is None else [Floor(m) for m in masks]
    else:
        found = find_floors(info["inputs"]["bg_dir"], [b["file"] for b in info["inputs"]["bg"]], size,
                            info["inputs"].get("floor_dir"))
    if found is None:
        raise DatasetError(f"{dataset}: was placed on floors ({placed.get('floors', 'floor masks')}), but their masks "
                           f"are gone from {info['inputs'].get('floor_dir') or info['inputs']['bg_dir']} (moved?)")
    return found


def placement_rng(seed: int, bg: int, fg: int, flip: int) -> np.random.Generator:
    """The generator for one (bg, fg, flip): independent streams, no reseeding collisions."""
    return np.random.default_rng([seed, bg, fg, flip])


def plan_background(bg: int, fg_sizes: list[tuple[int, int]], size: int, placements: int,
                    scale: tuple[float, float], seed: int, floor: Floor | None = None) -> list[dict]:
    """Manifest rows for every composite on background ``bg``, ordered by (fg, flip, k).

    With a usable ``floor`` each (fg, flip) is placed on the floor when it holds all its placements;
    otherwise (and without ``floor``) uniformly. The row says which (``placement``) and where the
    feet are (``foot_x``, ``foot_y``). Each (bg, fg, flip) has its own random stream, so a room's
    rows do not depend on the other rooms: workers plan the room whose shard they write.
    """
    floor = floor if floor is not None and floor.usable else None
    depth_min = BoxMin(floor.depth) if floor is not None and floor.depth is not None else None  # once per room
    shard = f"shards/{shard_name(bg)}"
    pairs = [(fg, flip) for fg in range(len(fg_sizes)) for flip in (0, 1)]
    on_floor = plan_floor_placements_many([fg_sizes[fg] for fg, _ in pairs], size, placements, scale,
                                          [placement_rng(seed, bg, fg, flip) for fg, flip in pairs], floor,
                                          depth_min) if floor else [None] * len(pairs)
    rows = []
    for (fg, flip), planned in zip(pairs, on_floor):
        fw, fh = fg_sizes[fg]
        mode = "floor" if planned is not None else "uniform"
        if planned is None:
            boxes = plan_placements(fw, fh, size, placements, scale, placement_rng(seed, bg, fg, flip))
            feet = np.stack([boxes[:, 0] + boxes[:, 2] // 2, boxes[:, 1] + boxes[:, 3] - 1], axis=1)
        else:
            boxes, feet = planned
        prefix = composite_id(fg, bg, flip, 0)[:-2]  # the id up to k, formatted once per (fg, flip)
        rows += [{"id": f"{prefix}{k:02d}", "bg": bg, "fg": fg, "flip": flip, "k": k, "x": x, "y": y, "w": w,
                  "h": h, "shard": shard, "placement": mode, "foot_x": fx, "foot_y": fy}
                 for k, ((x, y, w, h), (fx, fy)) in enumerate(zip(boxes.tolist(), feet.tolist()))]
    return rows


def build_plan(fg_sizes: list[tuple[int, int]], n_bg: int, size: int, placements: int,
               scale: tuple[float, float], seed: int, floors: list[Floor] | None = None) -> list[dict]:
    """Manifest rows for every composite, ordered by (bg, fg, flip, k): :func:`plan_background` for each
    background, on ``floors[bg]`` where given.
    """
    return [row for bg in range(n_bg)
            for row in plan_background(bg, fg_sizes, size, placements, scale, seed, floors[bg] if floors else None)]


# --------------------------------------------------------------------------- compositing

def premultiply(rgba: np.ndarray) -> np.ndarray:
    """Straight alpha -> premultiplied alpha: colour * alpha / 255, rounded; uint8 (h, w, 4)."""
    a = rgba[..., 3:4].astype(np.uint16)
    return np.dstack([((rgba[..., :3] * a + 127) // 255).astype(np.uint8), rgba[..., 3]])


def blend_premultiplied(bg_patch: np.ndarray, fgp: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray:
    """Porter-Duff "over" with a premultiplied foreground: out = fg*a + bg*(1 - a).

    ``bg_patch`` uint8 (h, w, 3), ``fgp`` premultiplied uint8 (h, w, 4). Exactly the background
    where a = 0 and exactly the foreground where a = 255, soft in between. Premultiplied colour is
    what makes resizing correct: transparent pixels carry no colour to bleed into the edge.

    In integers: ``out = fg + round(bg * (255 - a) / 255)``. The sum never exceeds 255 because
    premultiplied colour is at most ``a``. ``dst`` (may be ``bg_patch`` itself) receives the result.
    """
    import cv2

    # OpenCV does the same integer arithmetic ~3x faster than numpy's uint16 temporaries, and it
    # is exact: bg * inv / 255 is never a tie (2 * bg * inv is even, 255 * odd is odd), so OpenCV's
    # round-to-nearest equals (bg * inv + 127) // 255 for all 65,536 pairs (tested).
    inv = cv2.cvtColor(cv2.bitwise_not(cv2.extractChannel(fgp, 3)), cv2.COLOR_GRAY2BGR)
    rest = cv2.multiply(bg_patch, inv, scale=1 / 255)
    return cv2.add(cv2.cvtColor(fgp, cv2.COLOR_BGRA2BGR), rest, dst=dst)


class ForegroundPyramid:
    """One foreground, premultiplied, pre-shrunk with Lanczos to a ladder of heights (each 1/sqrt(2)
    of the last) for both flips.

    Any placement height is then a bilinear resize by at most sqrt(2) from the next larger level:
    anti-aliased like a Lanczos resize of the original, ~25x faster (OpenCV), which is what lets
    400,000 composites take minutes instead of hours.
    """

    def __init__(self, rgba: np.ndarray, max_h: int, min_h: int = 1):
        self.aspect = rgba.shape[1] / rgba.shape[0]
        pil = Image.fromarray(rgba, "RGBA").convert("RGBa")  # PIL resamples RGBa without bleeding
        self.levels: list[tuple[np.ndarray, np.ndarray]] = []
        h = min(max_h, rgba.shape[0])
        while True:
            w = max(1, round(h * self.aspect))
            lvl = np.array(pil if (w, h) == pil.size else pil.resize((w, h), Image.LANCZOS))
            # Lanczos overshoots; keep the premultiplied invariant colour <= alpha, or pixels with
            # alpha 0 would still add colour to the background.
            np.minimum(lvl[..., :3], lvl[..., 3:], out=lvl[..., :3])
            self.levels.append((lvl, np.ascontiguousarray(lvl[:, ::-1])))
            if h <= min_h or h <= 2:
                break
            h = max(1, int(h / 2 ** 0.5))

    def placed(self, flip: int, w: int, h: int) -> np.ndarray:
        """Premultiplied uint8 (h, w, 4), mirrored if ``flip``."""
        import cv2

        src = self.levels[0][flip]
        for lvl in self.levels[1:]:
            if lvl[flip].shape[0] < h:
                break
            src = lvl[flip]
        if src.shape[:2] == (h, w):
            return src
        return cv2.resize(src, (w, h), interpolation=cv2.INTER_LINEAR)


def composite(bg: np.ndarray, fgp: np.ndarray, x: int, y: int) -> tuple[np.ndarray, np.ndarray]:
    """Paste a placed, premultiplied foreground ``fgp`` (h, w, 4) onto ``bg`` with its top-left
    corner at (x, y).

    Returns:
        fg_bg: uint8 (H, W, 3), the composite (same channel order as ``bg``).
        mask: uint8 (H, W), the fg alpha on a black canvas at the same place.
    """
    h, w = fgp.shape[:2]
    out = bg.copy()
    patch = out[y:y + h, x:x + w]
    blend_premultiplied(patch, fgp, dst=patch)  # in place: OpenCV writes through the view
    mask = np.zeros(bg.shape[:2], np.uint8)
    mask[y:y + h, x:x + w] = fgp[..., 3]
    return out, mask


def pyramids_for(fgs: list[np.ndarray], size: int, scale: tuple[float, float]) -> list[ForegroundPyramid]:
    """One :class:`ForegroundPyramid` per uint8 (H, W, 4) foreground (straight alpha, channel order kept),
    its levels covering every height a placement at ``size`` and ``scale`` can ask for (perspective too).
    """
    lo, hi = perspective_range(scale)  # covers uniform heights too
    max_h, min_h = int(np.ceil(hi * size)) + 1, int(lo * size * 0.5)
    return [ForegroundPyramid(f, max_h, min_h) for f in fgs]


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

    def __repr__(self) -> str:  # what notebooks print: the same for a fresh and a resumed run
        return (f"GenerateResult({self.n_bg} bg x {self.n_fg} fg x 2 flips -> {self.composites} composites "
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


def _params_digest(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def generate(bg_dir: str | Path, fg_dir: str | Path, out: str | Path, size: int = 224, placements: int = 20,
             scale: tuple[float, float] = (0.35, 0.65), seed: int = 0, workers: int | None = None,
             jpeg_quality: int = 90, progress: bool = True, placement: str | None = None,
             floor_dir: str | Path | None = None, jpeg_chroma: str = "444", floor_teacher: str = "mini",
             log=print) -> GenerateResult:
    """Build the dataset in ``out`` from the images in ``bg_dir`` and ``fg_dir``.

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
    plan = dict(fg_sizes=fg_sizes, size=size, placements=placements, scale=scale, seed=seed)
    # Finished shards (a resumed run) are only planned, here; the rest are planned and written by workers.
    planned = {bg: plan_background(bg, floor=floors[bg] if floors else None, **plan)
               for bg in range(len(bgs.images)) if bg not in todo}
    # Backgrounds and foreground pyramids in BGR(A) order, so OpenCV's JPEG encoder takes each
    # composite as it is; built once here and shared with the workers.
    bgr = [np.ascontiguousarray(b[..., ::-1]) for b in bgs.images]
    pyramids = pyramids_for([np.ascontiguousarray(f[..., [2, 1, 0, 3]]) for f in fgs.images], size, scale) if todo else []
    per_bg = len(fg_sizes) * 2 * placements
    t1 = time.perf_counter()
    with tqdm(total=len(bgs.images) * per_bg, initial=(len(bgs.images) - len(todo)) * per_bg, unit="img",
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
        + (f"; {len(uniform_bg)} backgrounds without a usable floor are placed uniformly: "
           + ", ".join(bgs.sources[b] for b in uniform_bg[:8]) + (" ..." if len(uniform_bg) > 8 else "")
           if uniform_bg and placement == "floor" else ""))

    result = GenerateResult(out, len(rows), len(bgs.images), len(todo), len(bgs.images), len(fgs.images), skipped,
                            {"inputs": t1 - t0, "shards": time.perf_counter() - t1}, on_floor, floor_source, warnings)
    if not todo and (out / DATASET_JSON).exists():
        return result  # already complete: leave later chapters' additions (depth columns) alone
    write_manifest(out / MANIFEST_CSV, rows, MANIFEST_FIELDS + PLACEMENT_FIELDS)
    info = {
        "format": FORMAT,
        "version": __version__,
        "params": {k: v for k, v in params.items() if not k.endswith("_sources")},
        "counts": {"bg": len(bgs.images), "fg": len(fgs.images), "flips": 2, "placements": placements,
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
