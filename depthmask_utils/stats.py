"""Chapter 06: exact mean and std per category and channel, in one streaming pass.

Every stored pixel is an 8-bit integer, so a per-channel 256-bin histogram holds everything
needed: ``sum = sum(v * count)``, ``sum_sq = sum(v^2 * count)``. Histograms add across images,
shards and worker processes, and integer sums have no rounding error at all, so the mean and std
below are exact (to float64 at the final division) for any dataset size. PIL computes a decoded
image's histogram in C, which keeps the pass fast.

A common shortcut averages per-batch stds instead; :func:`batch_averaged` reproduces it from
the same histograms to show how far off it is. For equal-sized batches it can never come out
larger than the exact std: by the law of total variance, total variance = mean of the per-batch variances + variance
of the per-batch means, so the mean batch variance misses the second term; and the mean of the
batch stds is at most the square root of the mean batch variance (Jensen: sqrt is concave). The
two agree only when there is one batch, or every batch has the same mean and spread. With one
room per batch (one shard per background) the between-batch term is the between-room variance,
which for depth is large. :func:`image_histograms` and :func:`batched_std` redo the
approximation for any batching (one batch of everything, shuffled batches) without re-reading.

Categories (values on the 0..1 scale): ``bg`` (prepared backgrounds), ``fg`` (foregrounds over
their opaque pixels, alpha >= 128), ``fg_bg`` (composites), ``mask``, ``depth``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .dataset import member
from .errors import DatasetError
from .parallel import run_tasks
from .storage import atomic_write_json, decode_png_gray, open_shard, read_json, read_manifest, rows_by_shard

CHANNELS = {"bg": 3, "fg": 3, "fg_bg": 3, "mask": 1, "depth": 1}


def moments_from_hist(hist: np.ndarray, scale: float = 255.0) -> tuple[list[float], list[float], int]:
    """Exact (mean, std, count) per channel from int64 histograms (C, 256), values / ``scale``.

    The sums are Python integers (arbitrary precision), so nothing overflows or rounds until the
    last division.
    """
    means, stds, n = [], [], 0
    for h in hist:
        counts = [int(c) for c in h]
        n = sum(counts)
        if n == 0:
            raise DatasetError("no pixels to compute statistics over")
        s1 = sum(v * c for v, c in enumerate(counts))
        s2 = sum(v * v * c for v, c in enumerate(counts))
        means.append(s1 / n / scale)
        stds.append(((n * s2 - s1 * s1) / (n * n)) ** 0.5 / scale)  # numerator is exact, >= 0
    return means, stds, n


def gray_hist(img: np.ndarray) -> np.ndarray:
    """Histogram of a uint8 (H, W) image, int64 (256,): counts of each value, exact.

    Only the bounding box of the non-zero pixels is counted; the pixels outside it are zeros.
    A mask is mostly background, so this reads a tenth of the image. OpenCV counts ~8x faster
    than ``np.bincount`` here (float32 counts are exact below 2**24 pixels).
    """
    import cv2

    x, y, w, h = cv2.boundingRect(img)
    out = np.zeros(256, np.int64)
    if w and h:
        out += cv2.calcHist([img[y:y + h, x:x + w]], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    out[0] += img.size - w * h
    return out


def image_hist(data: bytes, name: str) -> np.ndarray:
    """Decode image bytes and return its per-channel histogram, int64 (C, 256)."""
    if data[:3] == b"\xff\xd8\xff":  # JPEG (composites): OpenCV decodes ~1.6x faster than PIL, same pixels
        import cv2

        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
        if img is None:
            raise DatasetError(f"{name}: cannot decode (not a readable JPEG)")
        if img.ndim == 2:
            return gray_hist(img)[None]
        return np.stack([cv2.calcHist([img], [c], None, [256], [0, 256]).ravel() for c in (2, 1, 0)]).astype(np.int64)
    gray = decode_png_gray(data)  # masks and depth: the fast path
    if gray is not None:
        return gray_hist(gray)[None]
    try:
        with Image.open(io.BytesIO(data)) as im:
            h = im.histogram()
    except Exception as exc:
        raise DatasetError(f"{name}: cannot decode ({exc})") from None
    return np.asarray(h, dtype=np.int64).reshape(-1, 256)


@dataclass
class Accumulator:
    """Histograms per category, plus per-batch histograms for the batch-averaged approximation."""

    batch: int = 64
    hist: dict = field(default_factory=dict)
    batch_moments: dict = field(default_factory=dict)  # category -> list of (mean, std) per batch
    _pending: dict = field(default_factory=dict)
    _pending_n: dict = field(default_factory=dict)

    def add(self, category: str, h: np.ndarray) -> None:
        self.hist[category] = self.hist.get(category, 0) + h
        self._pending[category] = self._pending.get(category, 0) + h
        self._pending_n[category] = self._pending_n.get(category, 0) + 1
        if self._pending_n[category] == self.batch:
            self.flush(category)

    def flush(self, category: str | None = None) -> None:
        for cat in [category] if category else list(self._pending):
            if self._pending_n.get(cat):
                m, s, _ = moments_from_hist(self._pending[cat])
                self.batch_moments.setdefault(cat, []).append((m, s))
            self._pending[cat], self._pending_n[cat] = 0, 0

    def merge(self, other: "Accumulator") -> None:
        for cat, h in other.hist.items():
            self.hist[cat] = self.hist.get(cat, 0) + h
        for cat, lst in other.batch_moments.items():
            self.batch_moments.setdefault(cat, []).extend(lst)


def _init_stats_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core; OpenCV's own threads make small histograms 5x slower


def _shard_stats(task: tuple[str, list[str], bool, int]) -> Accumulator:
    shard, ids, with_depth, batch = task
    acc = Accumulator(batch)
    with open_shard(shard) as zf:
        for cid in ids:
            for cat in ("fg_bg", "mask"):
                acc.add(cat, image_hist(zf.read(member(cat, cid)), f"{shard}:{member(cat, cid)}"))
            if with_depth:
                acc.add("depth", image_hist(zf.read(member("depth", cid)), f"{shard}:{member('depth', cid)}"))
    acc.flush()
    return acc


def _input_stats(dataset: Path, batch: int) -> Accumulator:
    acc = Accumulator(batch)
    for p in sorted((dataset / "bg").glob("*.png")):
        acc.add("bg", image_hist(p.read_bytes(), str(p))[:3])
    for p in sorted((dataset / "fg").glob("*.png")):
        rgba = np.asarray(Image.open(p).convert("RGBA"))
        opaque = rgba[..., 3] >= 128
        acc.add("fg", np.stack([np.bincount(rgba[..., c][opaque], minlength=256) for c in range(3)]))
    acc.flush()
    return acc


@dataclass
class DatasetStats:
    exact: dict  # category -> {"mean": [...], "std": [...], "count": pixels}
    batch_averaged: dict  # category -> {"mean": [...], "std": [...]} the common shortcut
    images: int

    def table(self):
        """Exact vs batch-averaged std per category and channel, as a pandas DataFrame."""
        import pandas as pd

        rows = []
        for cat, ex in self.exact.items():
            for c, (m, s) in enumerate(zip(ex["mean"], ex["std"])):
                ba = self.batch_averaged[cat]["std"][c]
                rows.append({"category": cat, "channel": "RGB"[c] if len(ex["mean"]) == 3 else "-",
                             "mean": round(m, 4), "std (exact)": round(s, 4), "std (batch-averaged)": round(ba, 4),
                             "error %": round(100 * (ba - s) / s, 1) if s else 0.0})
        return pd.DataFrame(rows).set_index(["category", "channel"])


def batch_averaged(moments: list[tuple[list[float], list[float]]]) -> dict:
    """Mean of per-batch means and of per-batch stds: the common shortcut chapter 06 takes apart.

    ``moments``: one ``(means, stds)`` pair per batch, each a list with one value per channel
    (0..1 scale). The mean of the means is exact for equal-sized batches; for equal-sized batches
    the mean of the stds is never larger than the exact std (see the module docstring).
    """
    m = np.mean([b[0] for b in moments], axis=0)
    s = np.mean([b[1] for b in moments], axis=0)
    return {"mean": [float(x) for x in m], "std": [float(x) for x in s]}


def dataset_stats(dataset: str | Path, workers: int | None = None, batch: int = 64, progress: bool = True,
                  write: bool = True) -> DatasetStats:
    """Exact mean/std of every category in one pass over the shards; writes ``stats.json``."""
    from tqdm import tqdm

    dataset = Path(dataset)
    info = read_json(dataset / "dataset.json")
    with_depth = "depth" in info
    rows = read_manifest(dataset / "manifest.csv")
    tasks = [(str(dataset / s), [r["id"] for r in rs], with_depth, batch)
             for s, rs in sorted(rows_by_shard(rows).items())]
    total = _input_stats(dataset, batch)
    with tqdm(total=len(rows), unit="img", desc="stats", disable=not progress) as bar:
        # ordered, so the batch-averaged approximation sees batches in the same order every run
        for (_, ids, _, _), acc in zip(tasks, run_tasks(_shard_stats, tasks, workers, _init_stats_worker)):
            total.merge(acc)
            bar.update(len(ids))
    exact, approx = {}, {}
    for cat in ("bg", "fg", "fg_bg", "mask", "depth"):
        if cat not in total.hist:
            continue
        m, s, n = moments_from_hist(total.hist[cat])
        exact[cat] = {"mean": m, "std": s, "count": n}
        approx[cat] = batch_averaged(total.batch_moments[cat])
    if write:
        atomic_write_json(dataset / "stats.json", exact)
    return DatasetStats(exact, approx, len(rows))


def load_stats(dataset: str | Path) -> dict:
    """``stats.json`` as written by :func:`dataset_stats` (the training chapters normalise with it)."""
    path = Path(dataset) / "stats.json"
    if not path.exists():
        raise DatasetError(f"{path}: missing - run `python -m depthmask_utils stats {dataset}` first")
    return read_json(path)


def _shard_image_hists(task: tuple[str, list[str], str]) -> np.ndarray:
    shard, ids, category = task
    with open_shard(shard) as zf:
        return np.stack([image_hist(zf.read(member(category, cid)), f"{shard}:{member(category, cid)}")
                         for cid in ids])


def image_histograms(dataset: str | Path, category: str = "depth",
                     workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One histogram per stored image of ``category`` (``fg_bg``, ``mask`` or ``depth``).

    Returns ``(hists, rooms)``: int64 ``(N, C, 256)`` in manifest order (C = 3 for fg_bg, else 1)
    and int ``(N,)``, each image's background index. Kept per image (not summed) so that
    :func:`batched_std` can regroup them into any batches without decoding again.
    """
    dataset = Path(dataset)
    if category not in ("fg_bg", "mask", "depth"):
        raise ValueError(f"category must be fg_bg, mask or depth, not {category!r}")
    rows = read_manifest(dataset / "manifest.csv")
    groups = sorted(rows_by_shard(rows).items())
    tasks = [(str(dataset / s), [r["id"] for r in rs], category) for s, rs in groups]
    hists = np.concatenate(list(run_tasks(_shard_image_hists, tasks, workers, _init_stats_worker)))
    rooms = np.array([int(r["bg"]) for _, rs in groups for r in rs])
    return hists, rooms


def batched_std(hists: np.ndarray, batch: int, order: np.ndarray | None = None) -> np.ndarray:
    """The batch-averaged shortcut for any batching: mean of per-batch stds, per channel (0..1).

    ``hists``: int ``(N, C, 256)`` per-image histograms; images are taken in ``order`` (default:
    as given) and cut into consecutive batches of ``batch`` images (the last may be smaller, and
    is weighted like the others, as a per-batch loop would). Returns float64 ``(C,)``.
    With ``batch >= N`` there is one batch and the result is the exact std.
    """
    if order is not None:
        hists = hists[order]
    stds = []
    for start in range(0, len(hists), batch):
        _, s, _ = moments_from_hist(hists[start:start + batch].sum(0))
        stds.append(s)
    return np.mean(stds, axis=0)


def plot_batch_std(result: DatasetStats, room_mean: np.ndarray, room_std: np.ndarray, channel: int = 2,
                   category: str = "fg_bg"):
    """Chapter 06's picture of the batch-averaged std next to the exact one; returns the figure.

    Left: one bar per room (= one batch), mean +- std of ``category`` in ``channel``, sorted by mean,
    over the exact band (mean +- exact std, blue) and the mean of the batch stds (red dashes).
    Right: exact and batch-averaged std of every category in ``result`` (mean over channels), each
    pair labelled with the relative error in %. ``room_mean``, ``room_std``: float (rooms, channels)
    on the 0..1 scale. The legend sits below the plots, never over data.
    """
    import matplotlib.pyplot as plt

    order = np.argsort(room_mean[:, channel])
    m_ex, s_ex = result.exact[category]["mean"][channel], result.exact[category]["std"][channel]
    s_ba = result.batch_averaged[category]["std"][channel]
    name = "RGB"[channel] if room_mean.shape[1] == 3 else "value"
    name = {"R": "red", "G": "green", "B": "blue"}.get(name, name)

    fig, (a0, a1) = plt.subplots(1, 2, figsize=(8.2, 3.4), gridspec_kw={"width_ratios": [1.5, 1]})
    a0.axhspan(m_ex - s_ex, m_ex + s_ex, color="tab:blue", alpha=0.18, lw=0, label=f"exact: mean ± {s_ex:.3f}")
    for sign in (-1, 1):
        a0.axhline(m_ex + sign * s_ba, color="tab:red", ls="--", lw=1.2,
                   label=f"mean of batch stds: ± {s_ba:.3f}" if sign > 0 else None)
    a0.errorbar(np.arange(len(order)), room_mean[order, channel], yerr=room_std[order, channel], fmt="o", ms=2.5,
                color="0.1", ecolor="0.6", elinewidth=0.8, label="one room = one batch: mean ± std")
    a0.set_xlabel("room (sorted by mean)", fontsize=9)
    a0.set_ylabel(f"{name}, 0-1 scale", fontsize=9)
    a0.set_title(f"{category}, {name}: {len(order)} batches (rooms) with different means", fontsize=9)

    cats = list(result.exact)
    x = np.arange(len(cats))
    ex_c = [np.mean(result.exact[k]["std"]) for k in cats]
    ba_c = [np.mean(result.batch_averaged[k]["std"]) for k in cats]
    a1.bar(x - 0.2, ex_c, 0.4, color="tab:blue", label="exact std")
    a1.bar(x + 0.2, ba_c, 0.4, color="tab:red", alpha=0.8, label="mean of batch stds")
    for xi, e, b in zip(x, ex_c, ba_c):
        a1.text(xi, max(e, b) + 0.01, f"{100 * (b - e) / e:+.1f}%", ha="center", fontsize=8)
    a1.set_xticks(x, cats, fontsize=9)
    a1.set_ylabel("std (0-1 scale, mean of channels)", fontsize=9)
    a1.set_ylim(0, max(ex_c) * 1.22)  # room above the bars for the % labels
    a1.set_title("every category", fontsize=9)
    for ax in (a0, a1):
        ax.tick_params(labelsize=8)
    handles = [sum(z, []) for z in zip(a0.get_legend_handles_labels(), a1.get_legend_handles_labels())]
    fig.legend(*handles, loc="lower center", ncol=3, fontsize=8, frameon=False)  # below the plots
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    return fig
