"""The placement plan: where each person stands in each room, decided before a pixel is drawn.

For every background ``bg``, foreground ``fg`` and ``flip`` in {0, 1} the plan holds exactly
``placements`` distinct boxes (x, y, w, h), drawn from a generator seeded with
``(seed, bg, fg, flip)``: the plan does not depend on worker count, order, or earlier runs.

Placement is ``floor`` where the backgrounds come with floor masks (the sample world writes them;
otherwise ``floor_dir`` holds masks named like the backgrounds, or :mod:`floor` estimates them):
the foot point - the bottom centre of the box - is drawn from the floor, and where the
background's depth is known too, the person's height follows perspective (height in pixels
proportional to 1 / depth at the foot point, times a spread of real body heights). ``uniform``
draws boxes anywhere in the frame, which puts people on walls and sofa backs: chapter 05 shows
what that does to depth. Used by the generator (:mod:`overlay`), the on-the-fly loader
(:mod:`data`) and the bg-plus-foreground labelling (:mod:`depth`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from .compositing import PERSPECTIVE_SPREAD, perspective_range
from .dataset import DATASET_JSON
from .errors import DatasetError, InputError
from .storage import composite_id, read_json, shard_name


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


def foregrounds_for(bg: int, n_fg: int, fg_per_bg: int | None = None) -> list[int]:
    """The foregrounds placed on background ``bg``: all ``n_fg`` of them, or ``fg_per_bg`` of them.

    A subset turns in order round the people: background 0 takes people ``0..k-1``, background 1
    the next ``k``, and so on, wrapping at ``n_fg``. So every person appears in as many rooms as
    every other (within one), and the dataset holds ``n_bg * k`` pairs instead of ``n_bg * n_fg``:
    four times the people at the same count of composites, which is what unseen people need.

    >>> foregrounds_for(1, 32, 8), foregrounds_for(1, 10, 8), foregrounds_for(1, 5, 8)
    ([8, 9, 10, 11, 12, 13, 14, 15], [0, 1, 2, 3, 4, 5, 8, 9], [0, 1, 2, 3, 4])
    """
    if fg_per_bg is None or fg_per_bg >= n_fg:
        return list(range(n_fg))
    if fg_per_bg < 1:
        raise ValueError(f"fg_per_bg must be at least 1 (or None for every foreground), not {fg_per_bg}")
    start = bg * fg_per_bg % n_fg
    return sorted((start + i) % n_fg for i in range(fg_per_bg))


def plan_background(bg: int, fg_sizes: list[tuple[int, int]], size: int, placements: int,
                    scale: tuple[float, float], seed: int, floor: Floor | None = None,
                    fg_per_bg: int | None = None) -> list[dict]:
    """Manifest rows for every composite on background ``bg``, ordered by (fg, flip, k): every
    foreground, or the ``fg_per_bg`` of :func:`foregrounds_for`.

    With a usable ``floor`` each (fg, flip) is placed on the floor when it holds all its placements;
    otherwise (and without ``floor``) uniformly. The row says which (``placement``) and where the
    feet are (``foot_x``, ``foot_y``). Each (bg, fg, flip) has its own random stream, so a room's
    rows do not depend on the other rooms: workers plan the room whose shard they write.
    """
    floor = floor if floor is not None and floor.usable else None
    depth_min = BoxMin(floor.depth) if floor is not None and floor.depth is not None else None  # once per room
    shard = f"shards/{shard_name(bg)}"
    pairs = [(fg, flip) for fg in foregrounds_for(bg, len(fg_sizes), fg_per_bg) for flip in (0, 1)]
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
               scale: tuple[float, float], seed: int, floors: list[Floor] | None = None,
               fg_per_bg: int | None = None) -> list[dict]:
    """Manifest rows for every composite, ordered by (bg, fg, flip, k): :func:`plan_background` for each
    background, on ``floors[bg]`` where given.
    """
    return [row for bg in range(n_bg)
            for row in plan_background(bg, fg_sizes, size, placements, scale, seed, floors[bg] if floors else None,
                                       fg_per_bg)]

