"""Figures every chapter draws: a row of images, a grid of inputs and predictions, RGBA over a
checkerboard. The dataset galleries of chapter 07 (:mod:`depthmask_utils.gallery`) build on these.

Conventions shared by all figures: greyscale on a fixed range, never autoscaled per image (the same
grey means the same value everywhere); depth through one colormap, near = bright, with a colour bar
that says so; text at least :data:`TITLE_PT` points at the course's :data:`DPI`.
"""

from __future__ import annotations

import numpy as np

DEPTH_CMAP = "magma"  # perceptually uniform; near = bright, as in the labels
DEPTH_LABEL = "inverse depth, near = bright"
DPI = 110  # the notebooks' figure.dpi; the saved galleries use it too
TITLE_PT = 8  # smallest text size anywhere in a figure


def _checker(h: int, w: int, cell: int = 8) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.where(((yy // cell + xx // cell) % 2)[..., None] == 0, 235, 200).astype(np.uint8).repeat(3, -1)


def show_rgba(rgba: np.ndarray) -> np.ndarray:
    """RGBA over a checkerboard, so transparency is visible: uint8 (H, W, 4) -> uint8 (H, W, 3)."""
    a = rgba[..., 3:4].astype(np.float32) / 255
    return (rgba[..., :3] * a + _checker(*rgba.shape[:2]) * (1 - a) + 0.5).astype(np.uint8)


def show_row(images: list, titles: list[str] | None = None, size: float = 2.2, cmap: str = "gray",
             colorbar: str | None = None):
    """A one-row Figure of images (RGB, RGBA over a checkerboard, or greyscale with ``cmap``).

    Greyscale uint8 images are drawn on a fixed 0-255 range. ``colorbar``: a label (e.g.
    :data:`DEPTH_LABEL`) adds a colour bar for the last greyscale image.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(images), figsize=(size * len(images), size * 1.1), squeeze=False)
    handle = None
    for i, (ax, img) in enumerate(zip(axes[0], images)):
        img = np.asarray(img)
        if img.ndim == 2:  # masks and labels: each stored pixel drawn as a square
            handle = ax.imshow(img, cmap=cmap, vmin=0, vmax=255 if img.dtype == np.uint8 else None,
                               interpolation="nearest")
        else:
            ax.imshow(show_rgba(img) if img.shape[-1] == 4 else img)
        ax.set_axis_off()
        if titles:
            ax.set_title(titles[i], fontsize=9)
    fig.tight_layout()
    if colorbar and handle is not None:
        cb = fig.colorbar(handle, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02)
        cb.set_label(colorbar, fontsize=TITLE_PT + 1)
        cb.ax.tick_params(labelsize=TITLE_PT)
    return fig


def _as_hwc(img) -> np.ndarray:
    """numpy HWC/HW, or a torch (C, H, W) tensor (uint8 0-255 or float 0-1), -> numpy (H, W[, 3])."""
    if hasattr(img, "detach"):
        scale = 255.0 if str(img.dtype) == "torch.uint8" else 1.0
        img = img.detach().float().cpu().numpy() / scale
        img = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
    return np.asarray(img)


def show_grid(rows: list[list], kinds: list[str], col_titles: list[str] | None = None,
              row_titles: list[str] | None = None, size: float = 1.6, colorbar: bool = True):
    """A grid of images, one list per row; ``kinds`` per column: ``rgb``, ``mask`` (grey, 0-1),
    ``depth`` (colour map, 0-1, 1 = near) or ``error`` (absolute error, 0-0.5).

    Accepts numpy arrays (uint8 or 0-1 floats) and torch (C, H, W) tensors. Every colour map in the
    grid (``depth``, ``error``) gets its own colour bar saying what the colours mean. Pixels are
    drawn as squares (nearest neighbour): a mask's edge or a label's step is shown as it is stored.
    """
    import matplotlib.pyplot as plt

    n_r, n_c = len(rows), len(kinds)
    bars = [k for k in ("depth", "error") if k in kinds] if colorbar else []
    fig, axes = plt.subplots(n_r, n_c, figsize=(size * n_c + 0.75 * len(bars), size * n_r + 0.3), squeeze=False)
    style = {"mask": dict(cmap="gray", vmin=0, vmax=1), "depth": dict(cmap=DEPTH_CMAP, vmin=0, vmax=1),
             "error": dict(cmap="viridis", vmin=0, vmax=0.5)}
    handles = {}
    for r, row in enumerate(rows):
        for c, (img, kind) in enumerate(zip(row, kinds)):
            ax = axes[r][c]
            a = _as_hwc(img)
            if a.dtype == np.uint8:
                a = a / 255.0
            handles[kind] = ax.imshow(a, interpolation="nearest", **style.get(kind, {}))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 and col_titles:
                ax.set_title(col_titles[c], fontsize=9)
            if c == 0 and row_titles:
                ax.set_ylabel(row_titles[r], fontsize=8)
    fig.tight_layout()
    bars = [k for k in bars if k in handles]  # a colour-mapped column may hold no image
    if bars:  # side by side at the right, each in its own axes (never on top of each other)
        labels = {"depth": "inverse depth (1 = near)", "error": "error (0-1 units)"}
        step = 0.75 / fig.get_figwidth()  # 0.75 inch per bar, with its ticks and label
        right = 1 - step * len(bars)
        fig.subplots_adjust(right=right - 0.01)
        for j, kind in enumerate(bars):
            cax = fig.add_axes([right + j * step, 0.12, 0.12 * step, 0.76])
            cb = fig.colorbar(handles[kind], cax=cax)
            cb.set_label(labels[kind], fontsize=TITLE_PT)
            cb.ax.tick_params(labelsize=TITLE_PT)
    return fig
