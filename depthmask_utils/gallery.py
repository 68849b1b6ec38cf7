"""Chapter 06: galleries - a grid per category and per-sample strips, saved as PNG.

Grids show ``n`` random items of one category (bg, fg, fg_mask, fg_bg, mask, depth); strips show
one composite's whole story, bg | fg | fg_bg | mask | depth, captioned from the manifest. Depth is
shown through a colormap here only: the stored labels stay grey, lossless PNG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .dataset import load_prepared, member
from .storage import decode_image, open_shard, read_json, read_manifest

CATEGORIES = ("bg", "fg", "fg_mask", "fg_bg", "mask", "depth")
DEPTH_CMAP = "magma"  # perceptually uniform; near = bright, as in the labels


def _checker(h: int, w: int, cell: int = 8) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.where(((yy // cell + xx // cell) % 2)[..., None] == 0, 235, 200).astype(np.uint8).repeat(3, -1)


def show_rgba(rgba: np.ndarray) -> np.ndarray:
    """RGBA over a checkerboard, so transparency is visible: uint8 (H, W, 3)."""
    a = rgba[..., 3:4].astype(np.float32) / 255
    return (rgba[..., :3] * a + _checker(*rgba.shape[:2]) * (1 - a) + 0.5).astype(np.uint8)


def load_item(dataset: Path, category: str, row: dict, zf=None) -> np.ndarray:
    """One picture of ``category`` for manifest ``row`` (fg shown over a checkerboard)."""
    if category in ("bg", "fg", "fg_mask"):
        idx = int(row["bg"] if category == "bg" else row["fg"])
        arr = load_prepared(dataset, category, idx)
        return show_rgba(arr) if category == "fg" else arr
    own = zf is None
    zf = zf or open_shard(dataset / row["shard"])
    try:
        name = member(category, row["id"])
        return decode_image(zf.read(name), f"{row['shard']}:{name}")
    finally:
        if own:
            zf.close()


def _imshow(ax, img: np.ndarray, category: str) -> None:
    if img.ndim == 2:
        ax.imshow(img, cmap=DEPTH_CMAP if category == "depth" else "gray", vmin=0, vmax=255)
    else:
        ax.imshow(img)
    ax.set_axis_off()


def category_grid(dataset: str | Path, category: str, n: int = 16, cols: int = 8, seed: int = 0):
    """A matplotlib Figure with ``n`` random items of ``category``."""
    import matplotlib.pyplot as plt

    dataset = Path(dataset)
    rows = read_manifest(dataset / "manifest.csv")
    rng = np.random.default_rng(seed)
    if category in ("bg", "fg", "fg_mask"):
        key = "bg" if category == "bg" else "fg"
        firsts = list({r[key]: r for r in rows}.values())  # one row per distinct bg or fg
        picks = [firsts[i] for i in rng.permutation(len(firsts))[:n]]
    else:
        picks = [rows[i] for i in rng.choice(len(rows), size=min(n, len(rows)), replace=False)]
    nrows = int(np.ceil(len(picks) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(cols * 1.5, nrows * 1.6), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, r in zip(axes.ravel(), picks):
        _imshow(ax, load_item(dataset, category, r), category)
        label = f"bg {r['bg']}" if category == "bg" else f"fg {r['fg']}" if category in ("fg", "fg_mask") else r["id"][6:]
        ax.set_title(label, fontsize=7)
    fig.suptitle(f"{category}: {len(picks)} random items", fontsize=10)
    fig.tight_layout()
    return fig


def sample_strips(dataset: str | Path, n: int = 4, seed: int = 0, ids: list[str] | None = None):
    """A Figure with one row per composite: bg | fg | fg_bg | mask | depth, captioned."""
    import matplotlib.pyplot as plt

    dataset = Path(dataset)
    rows = read_manifest(dataset / "manifest.csv")
    if ids:
        by_id = {r["id"]: r for r in rows}
        picks = [by_id[i] for i in ids]
    else:
        picks = [rows[i] for i in np.random.default_rng(seed).choice(len(rows), size=min(n, len(rows)), replace=False)]
    has_depth = "depth" in read_json(dataset / "dataset.json")
    cats = ["bg", "fg", "fg_bg", "mask"] + (["depth"] if has_depth else [])
    fig, axes = plt.subplots(len(picks), len(cats), figsize=(len(cats) * 2.0, len(picks) * 2.15), squeeze=False)
    for i, r in enumerate(picks):
        with open_shard(dataset / r["shard"]) as zf:
            for j, cat in enumerate(cats):
                _imshow(axes[i, j], load_item(dataset, cat, r, zf), cat)
                if i == 0:
                    axes[i, j].set_title(cat, fontsize=9)
        caption = f"{r['id']}  flip={r['flip']}  box=({r['x']},{r['y']},{r['w']}x{r['h']})"
        if has_depth and "depth_lo" in r:
            caption += f"  raw depth {float(r['depth_lo']):.3g}..{float(r['depth_hi']):.3g}"
        axes[i, 0].text(0, -0.04, caption, transform=axes[i, 0].transAxes, fontsize=8, va="top", clip_on=False)
    # Manual spacing: tight_layout would squeeze the images to make room for the long captions.
    height = len(picks) * 2.15
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.3 / height, bottom=0.3 / height, wspace=0.04, hspace=0.22)
    return fig


def make_galleries(dataset: str | Path, n: int = 16, strips: int = 4, seed: int = 0) -> list[Path]:
    """Write ``gallery/<category>.png`` for each category present and ``gallery/strips.png``."""
    import matplotlib.pyplot as plt

    dataset = Path(dataset)
    out = dataset / "gallery"
    out.mkdir(exist_ok=True)
    has_depth = "depth" in read_json(dataset / "dataset.json")
    written = []
    for cat in CATEGORIES:
        if cat == "depth" and not has_depth:
            continue
        fig = category_grid(dataset, cat, n=n, seed=seed)
        fig.savefig(out / f"{cat}.png", dpi=80)
        plt.close(fig)
        written.append(out / f"{cat}.png")
    fig = sample_strips(dataset, n=strips, seed=seed)
    fig.savefig(out / "strips.png", dpi=90)
    plt.close(fig)
    written.append(out / "strips.png")
    return written


def show_row(images: list, titles: list[str] | None = None, size: float = 2.2, cmap: str = "gray"):
    """A one-row Figure of images (RGB, RGBA over a checkerboard, or greyscale with ``cmap``)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(images), figsize=(size * len(images), size * 1.1), squeeze=False)
    for i, (ax, img) in enumerate(zip(axes[0], images)):
        img = np.asarray(img)
        if img.ndim == 2:
            ax.imshow(img, cmap=cmap, vmin=0, vmax=255 if img.dtype == np.uint8 else None)
        else:
            ax.imshow(show_rgba(img) if img.shape[-1] == 4 else img)
        ax.set_axis_off()
        if titles:
            ax.set_title(titles[i], fontsize=9)
    fig.tight_layout()
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

    Accepts numpy arrays (uint8 or 0-1 floats) and torch (C, H, W) tensors. The last column of a
    ``depth`` or ``error`` kind gets a colour bar saying what the colours mean.
    """
    import matplotlib.pyplot as plt

    n_r, n_c = len(rows), len(kinds)
    fig, axes = plt.subplots(n_r, n_c, figsize=(size * n_c + (0.6 if colorbar else 0), size * n_r + 0.3), squeeze=False)
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
    if colorbar:
        labels = {"depth": "inverse depth (1 = near)", "error": "absolute error"}
        for kind in ("depth", "error"):
            if kind in handles:
                fig.colorbar(handles[kind], ax=axes.ravel().tolist(), fraction=0.02, pad=0.01, label=labels[kind])
                break
    return fig
