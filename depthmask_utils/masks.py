"""Chapter 01: foregrounds and alpha masks - the GIMP recipe, step by step, in code.

The assignment's GIMP recipe for a person photographed on a plain backdrop, and its mirror here:

=================================  ============================================================
GIMP                               code
=================================  ============================================================
1. open the image                  :func:`depthmask_utils.images.open_image`
2. Layer > Transparency > Add      :func:`add_alpha` (alpha = 255 everywhere)
   Alpha Channel
3. Fuzzy Select on the backdrop    :func:`fuzzy_select` (colour-tolerance flood fill, seeded
                                   from the whole border, plus shift-clicks in enclosed holes)
4. Edit > Clear                    :func:`clear_selection` (alpha = 0 inside the selection)
5. fill the selection with the     :func:`mask_from_selection` draws the mask: selection = 0 ...
   BG colour (black)
6. Select > Invert, fill with the  ... inverted selection = 255
   FG colour (white)
7. File > Export As PNG            :func:`save_rgba`, :func:`save_mask` (lossless)
=================================  ============================================================

A foreground that already carries a useful alpha channel is used as it is; its mask is the alpha
thresholded (:func:`alpha_to_mask`). Every foreground is then cropped to its alpha bounding box
(:func:`crop_to_alpha`) so placement can reason about the person, not the empty margin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from .errors import InputError
from .images import list_images, open_image

DEFAULT_TOLERANCE = 24  # GIMP's fuzzy-select threshold is 15 on 0..255; JPEG noise needs a bit more
MIN_OPAQUE_PIXELS = 16


def add_alpha(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (H, W, 4) with alpha 255 everywhere."""
    return np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])


def border_pixels(rgb: np.ndarray) -> np.ndarray:
    """The outermost ring of pixels, (N, C)."""
    return np.concatenate([rgb[0], rgb[-1], rgb[1:-1, 0], rgb[1:-1, -1]])


def backdrop_color(rgb: np.ndarray) -> np.ndarray:
    """The backdrop colour: per-channel median of the border ring, uint8 (3,)."""
    return np.median(border_pixels(rgb[..., :3]), axis=0).astype(np.uint8)


def is_plain_backdrop(rgb: np.ndarray, tolerance: int = DEFAULT_TOLERANCE, min_fraction: float = 0.9) -> bool:
    """True if at least ``min_fraction`` of the border is within ``tolerance`` of one colour."""
    ring = border_pixels(rgb[..., :3]).astype(np.int16)
    close = np.abs(ring - backdrop_color(rgb).astype(np.int16)).max(axis=1) <= tolerance
    return bool(close.mean() >= min_fraction)


def fuzzy_select(rgb: np.ndarray, tolerance: int = DEFAULT_TOLERANCE, min_hole: int = 12) -> np.ndarray:
    """GIMP's fuzzy select, clicked on the backdrop all around the border, then shift-clicked in
    every enclosed hole of at least ``min_hole`` pixels (the gap between an arm and the body).

    Two rules, applied to the pixels whose colour is within ``tolerance`` of the backdrop colour
    (largest per-channel difference, 0..255; the backdrop colour is the median of the border ring):

    1. flood fill seeded on the border: every such pixel 4-connected to the border is selected.
       It only reaches backdrop-coloured pixels that touch the border through other
       backdrop-coloured pixels - a backdrop-coloured shirt that reaches the person's outline is
       reached (and cleared) too, whatever ``min_hole`` is;
    2. the hole rule (GIMP's shift-click): an enclosed region of such pixels is selected as well if
       it has at least ``min_hole`` pixels. So a few backdrop-coloured pixels inside the figure (a
       button, a highlight) stay, but a backdrop-coloured patch of ``min_hole`` pixels or more is
       cut out of the person exactly like a real gap. ``min_hole=0`` switches the rule off: the
       border-only flood fill, which keeps every enclosed region (and leaves real gaps opaque).

    Args:
        rgb: uint8 (H, W, 3) or (H, W, 4); alpha, if any, is ignored.
        tolerance: 0..255; higher selects colours farther from the backdrop.
        min_hole: smallest enclosed region (pixels) the hole rule selects; 0 = never.

    Returns:
        bool (H, W), True = backdrop.
    """
    diff = np.abs(rgb[..., :3].astype(np.int16) - backdrop_color(rgb).astype(np.int16)).max(axis=-1)
    labels, n = ndimage.label(diff <= tolerance)  # 4-connectivity, as a flood fill
    keep = np.zeros(n + 1, bool)
    keep[np.unique(border_pixels(labels[..., None])[:, 0])] = True  # rule 1: regions touching the border
    if min_hole > 0:  # rule 2: large enclosed regions
        keep |= np.bincount(labels.ravel(), minlength=n + 1) >= min_hole
    keep[0] = False  # label 0 = pixels unlike the backdrop
    return keep[labels]


def tolerance_scan(rgb: np.ndarray, tolerances, reference: int = DEFAULT_TOLERANCE,
                   min_hole: int = 12) -> np.ndarray:
    """How much of the person survives each fuzzy-select tolerance.

    The person is what ``fuzzy_select(rgb, reference)`` leaves unselected. For every tolerance the
    result is the share of those pixels that are still unselected: 1.0 = nothing lost; a value well
    below 1 means the flood fill has leaked into the person.

    Returns:
        float64 (len(tolerances),) in 0..1.
    """
    person = ~fuzzy_select(rgb, reference, min_hole)
    total = max(int(person.sum()), 1)  # an all-backdrop photo: avoid 0/0
    return np.array([(person & ~fuzzy_select(rgb, t, min_hole)).sum() / total for t in tolerances])


def clear_selection(rgba: np.ndarray, selection: np.ndarray, feather: float = 0.7) -> np.ndarray:
    """Edit > Clear: alpha = 0 where selected. ``feather`` (pixels) softens the cut edge, as GIMP's
    'Antialiasing' option does, so the person does not get a jagged outline."""
    alpha = np.where(selection, 0.0, 255.0)
    if feather > 0:
        alpha = ndimage.gaussian_filter(alpha, feather)
        alpha[selection & (alpha < 128)] = 0  # keep the backdrop fully clear away from the edge
    out = rgba.copy()
    out[..., 3] = np.minimum(rgba[..., 3], np.clip(alpha + 0.5, 0, 255).astype(np.uint8))
    return out


def mask_from_selection(selection: np.ndarray) -> np.ndarray:
    """Fill the selection with black (BG colour), invert it, fill with white (FG colour).

    Returns uint8 (H, W) in {0, 255}."""
    mask = np.zeros(selection.shape, np.uint8)  # fill selection with BG colour
    mask[~selection] = 255  # Select > Invert, fill with FG colour
    return mask


def alpha_to_mask(alpha: np.ndarray, threshold: int = 128) -> np.ndarray:
    """Binary mask from an alpha channel: uint8 (H, W) in {0, 255}, 255 where alpha >= threshold."""
    return np.where(alpha >= threshold, 255, 0).astype(np.uint8)


def alpha_bbox(alpha: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of pixels with alpha > 0, exclusive end; None if fully transparent."""
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def crop_to_alpha(rgba: np.ndarray) -> np.ndarray:
    """Crop an RGBA array to its alpha bounding box; raises ValueError if fully transparent."""
    box = alpha_bbox(rgba[..., 3])
    if box is None:
        raise ValueError("fully transparent")
    x0, y0, x1, y1 = box
    return rgba[y0:y1, x0:x1]


def flip_horizontal(img: np.ndarray) -> np.ndarray:
    """Mirror left-right; works for (H, W) and (H, W, C)."""
    return img[:, ::-1]


def has_useful_alpha(im: Image.Image) -> bool:
    """True if the image has an alpha channel that actually hides something."""
    if im.mode not in ("RGBA", "LA", "PA") and not (im.mode == "P" and "transparency" in im.info):
        return False
    return bool(np.asarray(im.convert("RGBA"))[..., 3].min() < 255)


@dataclass
class ForegroundReport:
    """The outcome of preparing one foreground file."""

    path: str
    usable: bool
    method: str = ""  # "alpha" or "fuzzy-select"
    size: tuple[int, int] = (0, 0)  # (w, h) after cropping
    reason: str = ""


def prepare_foreground(path: str | Path, tolerance: int = DEFAULT_TOLERANCE) -> tuple[np.ndarray, str]:
    """Load a foreground and return (RGBA uint8 (h, w, 4) cropped to its alpha, method).

    Images with alpha are used as they are; images without alpha must be on a plain backdrop and
    go through the fuzzy-select recipe. Raises InputError naming the file otherwise.
    """
    im = open_image(path)
    if has_useful_alpha(im):
        rgba, method = np.asarray(im.convert("RGBA")), "alpha"
        if (rgba[..., 3] > 0).sum() == 0:
            raise InputError(f"{path}: fully transparent (alpha is 0 everywhere) - nothing to paste")
    else:
        rgb = np.asarray(im.convert("RGB"))
        if (np.asarray(im.convert("RGBA"))[..., 3] == 0).all():
            raise InputError(f"{path}: fully transparent (alpha is 0 everywhere) - nothing to paste")
        if not is_plain_backdrop(rgb, tolerance):
            raise InputError(f"{path}: no alpha channel and not on a plain backdrop - cut the person out "
                             "(e.g. GIMP, chapter 01) and save as RGBA PNG")
        selection = fuzzy_select(rgb, tolerance)
        rgba, method = clear_selection(add_alpha(rgb), selection), "fuzzy-select"
    if int((rgba[..., 3] >= 128).sum()) < MIN_OPAQUE_PIXELS:
        raise InputError(f"{path}: fewer than {MIN_OPAQUE_PIXELS} opaque pixels - nothing to paste")
    return np.ascontiguousarray(crop_to_alpha(rgba)), method


@dataclass
class ForegroundSet:
    """Prepared foregrounds and the report over the folder they came from."""

    images: list[np.ndarray] = field(default_factory=list)  # RGBA, cropped
    sources: list[str] = field(default_factory=list)
    reports: list[ForegroundReport] = field(default_factory=list)

    @property
    def skipped(self) -> list[ForegroundReport]:
        return [r for r in self.reports if not r.usable]


def load_foregrounds(folder: str | Path, tolerance: int = DEFAULT_TOLERANCE) -> ForegroundSet:
    """Prepare every image in ``folder``; unusable ones are reported, never silently dropped."""
    out = ForegroundSet()
    for path in list_images(folder):
        try:
            rgba, method = prepare_foreground(path, tolerance)
        except InputError as exc:
            out.reports.append(ForegroundReport(path.name, False, reason=str(exc).split(": ", 1)[-1]))
            continue
        out.images.append(rgba)
        out.sources.append(path.name)
        out.reports.append(ForegroundReport(path.name, True, method, (rgba.shape[1], rgba.shape[0])))
    return out


def validation_table(reports: list[ForegroundReport]):
    """The folder report as a pandas DataFrame (file, usable, method, w x h, reason)."""
    import pandas as pd

    return pd.DataFrame([{"file": r.path, "usable": r.usable, "method": r.method,
                          "size": f"{r.size[0]}x{r.size[1]}" if r.usable else "", "reason": r.reason}
                         for r in reports])


def save_rgba(rgba: np.ndarray, path: str | Path) -> None:
    Image.fromarray(rgba, "RGBA").save(path)


def save_mask(mask: np.ndarray, path: str | Path) -> None:
    Image.fromarray(mask, "L").save(path)
