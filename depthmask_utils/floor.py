"""Chapter 03: where can a person stand? An automatic floor estimate from a depth map.

Your own photos come without floor masks. A person pasted on a wall or a tree top gets that surface's
depth by the foot-point rule and vanishes in their own depth label (chapter 05), so placements need a
floor. This module finds one in the teacher's depth of the empty background.

The idea: for a pinhole camera, the *inverse* depth of any plane is a linear function of the pixel,
``1/Z = a x + b y + c``. A relative-depth teacher returns ``s / Z + t`` for unknown s, t, still linear.
A floor is the plane that fills the bottom of the picture and comes nearer towards the bottom
(``b > 0`` with y pointing down). So: fit a plane to the lowest rows robustly (RANSAC: walls and
furniture there are outliers), keep the pixels that agree with it, and keep the connected parts that
reach the bottom band. Walls (inverse depth nearly constant down a column), table tops (a parallel
plane, another slope) and sky do not fit that plane.

All functions are NumPy/OpenCV; depth maps are float (H, W) relative inverse depth (larger = nearer).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BOTTOM = 0.25  # the band of the frame where the floor is looked for first
TOLERANCE = 0.03  # a pixel belongs to the plane within this share of the map's 2-98 % range
MIN_SUPPORT = 0.3  # the plane must explain this share of the bottom band, or there is no floor


def fit_plane_ransac(xs: np.ndarray, ys: np.ndarray, d: np.ndarray, tol: float, iters: int = 200,
                     seed: int = 0) -> tuple[np.ndarray, float]:
    """Robust plane d = a x + b y + c through points (x, y, d) with ``b > 0`` (nearer downwards).

    Returns ((a, b, c), share of the points within ``tol``); ((0, 0, 0), 0.0) when no plane
    with ``b > 0`` is found. The best sample is refitted by least squares on its inliers.
    """
    rng = np.random.default_rng(seed)
    A = np.stack([xs, ys, np.ones_like(xs)], 1).astype(np.float64)
    best, best_share = np.zeros(3), 0.0
    for _ in range(iters):
        pick = rng.choice(len(d), 3, replace=False)
        try:
            coef = np.linalg.solve(A[pick], d[pick])
        except np.linalg.LinAlgError:
            continue
        if coef[1] <= 0:
            continue
        share = float((np.abs(A @ coef - d) < tol).mean())
        if share > best_share:
            best, best_share = coef, share
    if best_share == 0:
        return best, 0.0
    inl = np.abs(A @ best - d) < tol
    coef = np.linalg.lstsq(A[inl], d[inl], rcond=None)[0]
    if coef[1] <= 0:
        return best, best_share
    return coef, float((np.abs(A @ coef - d) < tol).mean())


def estimate_floor(inv_depth: np.ndarray, bottom: float = BOTTOM, tol: float = TOLERANCE,
                   min_support: float = MIN_SUPPORT, seed: int = 0) -> np.ndarray:
    """Floor mask, bool (H, W), from relative inverse depth (H, W) (larger = nearer); all False when
    the bottom of the frame holds no plane that comes nearer downwards (a close-up, a wall, water).
    """
    from scipy import ndimage

    d = inv_depth.astype(np.float64)
    lo, hi = np.percentile(d, [2, 98])
    if hi <= lo:
        return np.zeros(d.shape, bool)
    d = (d - lo) / (hi - lo)
    h, w = d.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    xx, yy = xx / max(w - 1, 1), yy / max(h - 1, 1)
    band = yy >= 1 - bottom
    step = max(1, int(np.sqrt(band.sum() / 4000)))  # a few thousand points are plenty for a plane
    sub = np.zeros_like(band)
    sub[::step, ::step] = True
    pts = band & sub
    coef, share = fit_plane_ransac(xx[pts], yy[pts], d[pts], tol, seed=seed)
    if share < min_support:
        return np.zeros(d.shape, bool)
    on_plane = np.abs(coef[0] * xx + coef[1] * yy + coef[2] - d) < tol
    # The plane's slope, not just its values: a wall crossing the plane agrees along one line only.
    gy = np.gradient(d, axis=0) * (h - 1)
    on_plane &= np.abs(gy - coef[1]) < 0.75 * coef[1]
    # SciPy, not OpenCV: generate forks worker processes after this, and a child inheriting OpenCV's
    # busy thread pool deadlocks in it.
    m = ndimage.binary_opening(on_plane, np.ones((3, 3), bool))
    labels, _ = ndimage.label(m)  # 4-connected
    touching = np.unique(labels[band & m])
    return np.isin(labels, touching[touching > 0])


def floor_iou(pred: np.ndarray, true: np.ndarray) -> float:
    """Intersection over union of two bool masks (1.0 when both are empty)."""
    union = (pred | true).sum()
    return float((pred & true).sum() / union) if union else 1.0


FOLDER = "floor_estimate"  # DATASET/floor_estimate/<bg:03d>.png: the floors generate estimated


def save_floors(masks: list[np.ndarray], dataset: str | Path) -> None:
    """Estimated floor masks as PNGs ``floor_estimate/<bg:03d>.png`` (255 = floor), each atomically:
    to look at, and what a resumed ``generate`` or on-the-fly composites read back."""
    from .storage import atomic_write_bytes, encode_png

    folder = Path(dataset) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for i, m in enumerate(masks):
        atomic_write_bytes(folder / f"{i:03d}.png", encode_png(m.astype(np.uint8) * 255))


def load_floors(dataset: str | Path, n: int, size: int | None = None) -> list[np.ndarray] | None:
    """The ``n`` masks :func:`save_floors` wrote, bool (size, size) (nearest resize), or None if any is missing."""
    from PIL import Image

    paths = [Path(dataset) / FOLDER / f"{i:03d}.png" for i in range(n)]
    if not all(p.exists() for p in paths):
        return None
    ims = [Image.open(p) for p in paths]
    return [np.asarray(im if size is None else im.resize((size, size), Image.NEAREST)) >= 128 for im in ims]
