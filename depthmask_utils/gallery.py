"""Chapter 07: galleries - a grid per category and per-sample strips, saved as PNG.

Grids show ``n`` random items of one category (bg, fg, fg_mask, fg_bg, mask, depth); strips show
one composite's whole story, bg | fg | fg_bg | mask | mask over fg_bg | depth, captioned from the
manifest. Depth is shown through a colormap here only (with a colour bar saying what the colours
mean): the stored labels stay grey, lossless PNG.

Sizes are chosen for reading, not for fitting many items: a thumbnail is :data:`THUMB_PX` = 128
px at the course's 110 dpi (the sample profile's images pixel for pixel; larger ones are shrunk
to it), and titles are at least 8 pt. The saved PNGs use the same dpi, so they look like the
notebook figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .dataset import load_prepared, member
from .figures import DEPTH_CMAP, DEPTH_LABEL, DPI, TITLE_PT, show_rgba  # noqa: F401  (DEPTH_LABEL: re-exported)
from .storage import decode_image, open_shard, read_json, read_manifest

CATEGORIES = ("bg", "fg", "fg_mask", "fg_bg", "mask", "depth")
THUMB_PX = 128  # thumbnail side in pixels: the sample profile's image size, drawn pixel for pixel
THUMB = THUMB_PX / DPI  # the same in inches (1.16), what matplotlib lays out in
MAX_COLS = 6  # a grid wider than this shrinks below ~110 px per thumbnail on a book page


def mask_overlay(rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 40, 40),
                 alpha: float = 0.55) -> np.ndarray:
    """The mask painted over a greyed composite: uint8 (H, W, 3) RGB + uint8 (H, W) mask -> uint8 (H, W, 3).

    The composite is turned grey so that the tint is the only colour: a correct mask covers the
    person exactly; a wrong one shows as red on the background and grey, untinted body parts.
    ``alpha`` (0..1) is the tint's opacity where the mask is 255.
    """
    grey = rgb.astype(np.float32).mean(-1, keepdims=True).repeat(3, -1)
    a = alpha * mask.astype(np.float32)[..., None] / 255
    out = grey * (1 - a) + np.asarray(color, np.float32) * a
    return (out + 0.5).clip(0, 255).astype(np.uint8)


def mask_agreement(fg_bg: np.ndarray, bg: np.ndarray, mask: np.ndarray, threshold: int = 24) -> float:
    """IoU between the mask (> 127) and the pixels where the composite differs from its background.

    ``fg_bg`` and ``bg``: uint8 (H, W, 3); ``mask``: uint8 (H, W). A pixel counts as "person in the
    picture" where some channel of ``|fg_bg - bg|`` exceeds ``threshold`` (0-255; above the JPEG
    noise). This checks the label against the image itself, so it catches a mask that is
    mirrored, shifted or belongs to another composite. Returns 0..1 (1 when both are empty).
    """
    seen = np.abs(fg_bg.astype(np.int16) - bg.astype(np.int16)).max(-1) > threshold
    said = mask > 127
    union = np.logical_or(seen, said).sum()
    return float(np.logical_and(seen, said).sum() / union) if union else 1.0


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


def load_sample(dataset: str | Path, row: dict, zf=None) -> dict[str, np.ndarray]:
    """Everything about one composite, as uint8 arrays: ``bg`` (S, S, 3), ``fg`` (h, w, 3, over a
    checkerboard and mirrored when ``flip`` = 1, i.e. as pasted), ``fg_bg`` (S, S, 3), ``mask``
    (S, S) and, when the dataset is labelled, ``depth`` (S, S)."""
    dataset = Path(dataset)
    own = zf is None
    zf = zf or open_shard(dataset / row["shard"])
    try:
        out = {cat: load_item(dataset, cat, row, zf) for cat in ("bg", "fg", "fg_bg", "mask")}
        if int(row["flip"]):
            out["fg"] = out["fg"][:, ::-1]
        if member("depth", row["id"]) in zf.namelist():
            out["depth"] = load_item(dataset, "depth", row, zf)
    finally:
        if own:
            zf.close()
    return out


def strip_caption(row: dict) -> str:
    """One line about a composite from its manifest row: id, flip, pasted box, raw depth range."""
    caption = f"{row['id']}   flip={row['flip']}   box x={row['x']} y={row['y']} {row['w']}x{row['h']}"
    if row.get("depth_lo"):
        caption += f"   raw depth {float(row['depth_lo']):.3g}..{float(row['depth_hi']):.3g}"
    return caption


def _imshow(ax, img: np.ndarray, category: str):
    """Draw one item: grey 0-255 for masks, the depth colormap on a fixed 0-255 range, RGB as is."""
    if img.ndim == 2:
        # A fixed range, never per-image autoscaling: the same grey (or colour) means the same
        # value in every thumbnail, so an all-dark label or a wrong scale is visible.
        im = ax.imshow(img, cmap=DEPTH_CMAP if category == "depth" else "gray", vmin=0, vmax=255,
                       interpolation="nearest")
    else:
        im = ax.imshow(img, interpolation="nearest")
    ax.set_axis_off()
    return im


def _depth_colorbar(fig, im, cax) -> None:
    cb = fig.colorbar(im, cax=cax, ticks=[0, 128, 255])
    cb.ax.set_yticklabels(["0 far", "128", "255 near"], fontsize=TITLE_PT)
    # two lines: a one-row grid's bar is only one thumbnail (1.16 in) tall
    cb.set_label(DEPTH_LABEL.replace(", ", ",\n"), fontsize=TITLE_PT + 1)


def _grid_cols(n: int, cols: int | None) -> int:
    """Columns for ``n`` thumbnails: ``cols`` if given, else rows as even as possible, <= MAX_COLS."""
    if cols:
        return max(1, min(cols, n))
    rows = int(np.ceil(n / MAX_COLS))
    return max(1, int(np.ceil(n / rows)))


def category_grid(dataset: str | Path, category: str, n: int = 16, cols: int | None = None, seed: int = 0,
                  thumb: float = THUMB):
    """A matplotlib Figure with ``n`` random items of ``category``.

    ``cols`` defaults to at most :data:`MAX_COLS` per row; ``thumb`` is the thumbnail side in
    inches. Masks are grey on 0-255, depth uses the colormap on 0-255 with a colour bar.
    """
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
    cols = _grid_cols(len(picks), cols)
    nrows = int(np.ceil(len(picks) / cols))
    # Fixed inches per element, so thumbnails keep their size whatever n is: title band above
    # each thumbnail, suptitle band on top, a colour bar strip on the right for depth.
    title_h, top_h, gap, bar_w = 0.24, 0.32, 0.08, (1.2 if category == "depth" else 0.0)
    fig_w = cols * thumb + (cols + 1) * gap + bar_w
    fig_h = top_h + nrows * (thumb + title_h) + gap
    fig = plt.figure(figsize=(fig_w, fig_h))
    im = None
    for i, r in enumerate(picks):
        rr, cc = divmod(i, cols)
        left = gap + cc * (thumb + gap)
        bottom = fig_h - top_h - (rr + 1) * (thumb + title_h) + 0.02
        ax = fig.add_axes((left / fig_w, bottom / fig_h, thumb / fig_w, thumb / fig_h))
        im = _imshow(ax, load_item(dataset, category, r), category)
        label = f"bg {r['bg']}" if category == "bg" else f"fg {r['fg']}" if category in ("fg", "fg_mask") else r["id"][6:]
        ax.set_title(label, fontsize=TITLE_PT, pad=4)  # pad: underscores clear the image
    fig.suptitle(f"{category}: {len(picks)} random items", fontsize=TITLE_PT + 2, y=1 - 0.06 / fig_h, va="top")
    if category == "depth" and im is not None:
        top = fig_h - top_h - title_h
        cax = fig.add_axes(((fig_w - bar_w + 0.05) / fig_w, (top - min(nrows, 2) * thumb) / fig_h,
                            0.12 / fig_w, min(nrows, 2) * thumb / fig_h))
        _depth_colorbar(fig, im, cax)
    return fig


def show_strips(samples: list[dict], captions: list[str] | None = None, overlay: bool = True,
                thumb: float = THUMB, title: str | None = None, columns: list[str] | None = None):
    """A Figure with one row per sample dict (as from :func:`load_sample`), captioned above each row.

    Columns: bg | fg | fg_bg | mask | mask over fg_bg (when ``overlay``) | depth (when present),
    each ``thumb`` inches wide; ``columns`` picks a subset by name (``"overlay"`` for the overlay).
    The overlay column paints the mask over a greyed composite (:func:`mask_overlay`), which is
    where a misplaced mask shows at a glance.
    """
    import matplotlib.pyplot as plt

    cats = [c for c in ("bg", "fg", "fg_bg", "mask") if c in samples[0]]
    if overlay:
        cats.append("overlay")
    if "depth" in samples[0]:
        cats.append("depth")
    if columns is not None:
        unknown = set(columns) - set(cats)
        if unknown:
            raise ValueError(f"columns {sorted(unknown)} not available; choose from {cats}")
        cats = [c for c in cats if c in columns]
    names = {"fg": "fg (as pasted)", "overlay": "mask over fg_bg"}
    cap_h, top_h, gap = (0.24 if captions else 0.06), 0.3 + (0.3 if title else 0.0), 0.06
    bar_w = 1.2 if "depth" in cats else 0.0
    fig_w = len(cats) * thumb + (len(cats) + 1) * gap + bar_w
    fig_h = top_h + len(samples) * (thumb + cap_h) + gap
    fig = plt.figure(figsize=(fig_w, fig_h))
    im = None
    for i, s in enumerate(samples):
        bottom = fig_h - top_h - cap_h - (i + 1) * thumb - i * cap_h
        for j, cat in enumerate(cats):
            ax = fig.add_axes(((gap + j * (thumb + gap)) / fig_w, bottom / fig_h, thumb / fig_w, thumb / fig_h))
            if cat == "overlay":
                img = mask_overlay(s["fg_bg"], s["mask"])
            elif cat == "fg":
                img = s["fg"]
                # pad the person's box to a square so it is drawn at the same scale as a full image
                h, w = img.shape[:2]
                side = max(h, w)
                pad = np.full((side, side, 3), 255, np.uint8)
                pad[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = img
                img = pad
            else:
                img = s[cat]
            handle = _imshow(ax, img, cat)
            if cat == "depth":
                im = handle
            if i == 0:  # column titles in their own band above the first caption, never on it
                fig.text((gap + j * (thumb + gap) + thumb / 2) / fig_w, (fig_h - top_h + 0.06) / fig_h,
                         names.get(cat, cat), fontsize=TITLE_PT + 1, ha="center", va="bottom")
        if captions:
            fig.text(gap / fig_w, (bottom + thumb + 0.04) / fig_h, captions[i], fontsize=TITLE_PT, va="bottom")
    if title:
        fig.suptitle(title, fontsize=TITLE_PT + 2, y=1 - 0.05 / fig_h, va="top")
    if im is not None:
        n_bar = min(len(samples), 2)
        top = fig_h - top_h - cap_h
        cax = fig.add_axes(((fig_w - bar_w + 0.05) / fig_w, (top - n_bar * thumb) / fig_h, 0.12 / fig_w,
                            n_bar * thumb / fig_h))
        _depth_colorbar(fig, im, cax)
    return fig


def sample_strips(dataset: str | Path, n: int = 4, seed: int = 0, ids: list[str] | None = None,
                  overlay: bool = True):
    """A Figure with one row per composite: bg | fg | fg_bg | mask | mask over fg_bg | depth, captioned
    with the manifest's id, flip, pasted box and raw depth range (see :func:`show_strips`)."""
    dataset = Path(dataset)
    rows = read_manifest(dataset / "manifest.csv")
    if ids:
        by_id = {r["id"]: r for r in rows}
        picks = [by_id[i] for i in ids]
    else:
        picks = [rows[i] for i in np.random.default_rng(seed).choice(len(rows), size=min(n, len(rows)), replace=False)]
    has_depth = "depth" in read_json(dataset / "dataset.json")
    samples = []
    for r in picks:
        s = load_sample(dataset, r)
        if not has_depth:  # a shard may hold labels the dataset does not claim yet (half-labelled)
            s.pop("depth", None)
        samples.append(s)
    return show_strips(samples, [strip_caption(r) for r in picks], overlay=overlay)


def make_galleries(dataset: str | Path, n: int = 16, strips: int = 4, seed: int = 0) -> list[Path]:
    """Write ``gallery/<category>.png`` for each category present and ``gallery/strips.png``.

    Saved at :data:`DPI`, the notebooks' figure dpi, so a thumbnail is 128 px in the file too.
    """
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
        fig.savefig(out / f"{cat}.png", dpi=DPI, facecolor="white")
        plt.close(fig)
        written.append(out / f"{cat}.png")
    fig = sample_strips(dataset, n=strips, seed=seed)
    fig.savefig(out / "strips.png", dpi=DPI, facecolor="white")
    plt.close(fig)
    written.append(out / "strips.png")
    return written
