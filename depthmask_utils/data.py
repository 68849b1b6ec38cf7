"""Chapter 08: data loading - a PyTorch Dataset over the shards, and loaders (augmentation: :mod:`augment`).

``CompositeDataset(root, split)[i]`` is a dict of **uint8** tensors::

    fg_bg  (3, S, S)  the composite, RGB 0-255
    bg     (3, S, S)  its background, RGB 0-255
    mask   (1, S, S)  soft foreground alpha, 0-255
    depth  (1, S, S)  relative inverse depth, 0-255 (255 = nearest)

uint8 keeps worker-to-trainer traffic 4x smaller than float32; the model divides by 255 and
normalises with ``stats.json`` on its own device (see :mod:`depthmask_utils.models`). Tensors are
channels-last views of the decoded arrays (no copy), the layout GPUs convolve fastest.

Shards are read in place: each DataLoader worker opens each zip once, lazily, and keeps the handle
(handles are keyed by process id, so a forked worker never shares its parent's file offset).
A list of indices returns a whole batch - with :func:`make_loader` each worker decodes a batch per
call, which avoids per-sample collation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .augment import augment_batch
from .config import GEOMETRIES, check_choice
from .dataset import Composite, Split, dataset_split, load_prepared, member, read_composites, read_info
from .errors import DatasetError
from .storage import ShardReader, decode_png_gray

CATEGORIES = ("fg_bg", "bg", "mask", "depth")


def _cv2():
    import cv2

    cv2.setNumThreads(1)  # DataLoader workers are the parallelism; OpenCV threads would oversubscribe
    return cv2


def decode_rgb(data: bytes, size: int, name: str, out: np.ndarray | None = None, stored: int | None = None) -> np.ndarray:
    """JPEG/PNG bytes -> uint8 (size, size, 3) RGB, written into ``out`` if given.

    When the ``stored`` side is 2, 4 or 8 times ``size``, libjpeg decodes straight at the smaller
    size (DCT scaling): several times faster than decoding in full and resizing.
    """
    cv2 = _cv2()
    factor = stored // size if stored and stored % size == 0 else 1
    flag = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}.get(
        factor, cv2.IMREAD_COLOR)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if img is None:
        raise DatasetError(f"{name}: cannot decode as an image")
    if img.shape[:2] != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=out)


def decode_gray(data: bytes, size: int, name: str, out: np.ndarray | None = None) -> np.ndarray:
    """Greyscale PNG bytes -> uint8 (size, size), written into ``out`` if given; the fast path
    for the dataset's own unfiltered PNGs."""
    cv2 = _cv2()
    img = decode_png_gray(data)
    if img is None:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise DatasetError(f"{name}: cannot decode as an image")
    if img.shape != (size, size):
        return cv2.resize(img, (size, size), dst=out, interpolation=cv2.INTER_AREA)
    if out is None:
        return np.ascontiguousarray(img)
    out[...] = img
    return out


def to_chw(batch_hwc: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W) or (B, H, W, C) -> (B, C, H, W) channels-last view (no copy)."""
    if batch_hwc.ndim == 3:
        batch_hwc = batch_hwc[..., None]
    return torch.from_numpy(np.ascontiguousarray(batch_hwc)).permute(0, 3, 1, 2)


def split_composites(root: str | Path, split: str | Sequence[Composite], split_spec: Split | None,
                     seed: int) -> tuple[list[Composite], Split | None]:
    """The composites of a split part (train/val/test/group name), or a given list as it is."""
    if not isinstance(split, str):
        return list(split), split_spec
    spec = split_spec or dataset_split(root, seed)
    return spec.select(read_composites(root), split), spec


class CompositeDataset(Dataset):
    """The dataset of chapters 04 and 05 as PyTorch sees it.

    Args:
        root: the dataset folder (must be depth-labelled).
        split: ``"train"``, ``"val"``, ``"test"``, a test group (``"unseen_bg"``, ``"unseen_fg"``,
            ``"unseen_both"``) or an explicit list of :class:`Composite`.
        size: square side S of the returned tensors (default: the stored size).
        augment: apply :func:`augment_batch` (same geometry for all four images) to each batch.
        seed: the split's seed (and the augmentation's).
        split_spec: a :class:`Split` to use instead of ``make_split(seed)``.
        geometry: ``augment_batch``'s geometry when ``augment``: ``"affine"`` or ``"flip"`` (mirror only).
    """

    def __init__(self, root: str | Path, split: str | Sequence[Composite] = "train", size: int | None = None,
                 augment: bool = False, seed: int = 0, split_spec: Split | None = None, geometry: str = "affine"):
        self.root, self.geometry = Path(root), check_choice("geometry", geometry, GEOMETRIES)
        self.info = read_info(self.root, need_depth=True)
        self.stored_size = int(self.info["params"]["size"])
        self.size = int(size or self.stored_size)
        self.items, self.split = split_composites(self.root, split, split_spec, seed)
        if not self.items:
            raise DatasetError(f"{self.root}: split {split!r} is empty")
        self.augment, self.seed, self.epoch = augment, seed, 0
        self._pid, self._zips, self._bgs = None, {}, {}

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"CompositeDataset({len(self)} composites, {self.size}px, augment={self.augment})"

    def close(self) -> None:
        """Close the shards this process has open (they reopen on the next read)."""
        if self._pid == os.getpid():
            for zf in self._zips.values():
                zf.close()
        self._zips = {}

    def __enter__(self) -> "CompositeDataset":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- per-process state
    def _zip(self, shard: str):
        if self._pid != os.getpid():  # first use in this process (a forked DataLoader worker)
            self._pid, self._zips = os.getpid(), {}
        zf = self._zips.get(shard)
        if zf is None:
            zf = self._zips[shard] = ShardReader(self.root / shard)
        return zf

    def background(self, bg: int) -> np.ndarray:
        """Prepared background ``bg`` at this dataset's size, uint8 (S, S, 3), cached per process."""
        img = self._bgs.get(bg)
        if img is None:
            img = load_prepared(self.root, "bg", bg)
            if img.shape[0] != self.size:
                img = _cv2().resize(img, (self.size, self.size), interpolation=_cv2().INTER_AREA)
            self._bgs[bg] = img
        return img

    def read(self, c: Composite, out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """One composite's four images as uint8 HWC arrays, written into ``out`` if given."""
        S = self.size
        out = out if out is not None else {"fg_bg": np.empty((S, S, 3), np.uint8), "bg": np.empty((S, S, 3), np.uint8),
                                           "mask": np.empty((S, S), np.uint8), "depth": np.empty((S, S), np.uint8)}
        out["bg"][...] = self.background(c.bg)
        zf = self._zip(c.shard)
        for cat in ("fg_bg", "mask", "depth"):
            name = member(cat, c.id)
            try:
                data = zf.read(name)
            except KeyError:
                raise DatasetError(f"{self.root / c.shard}: member {name} missing") from None
            if cat == "fg_bg":
                decode_rgb(data, S, f"{self.root / c.shard}:{name}", out[cat], self.stored_size)
            else:
                decode_gray(data, S, f"{self.root / c.shard}:{name}", out[cat])
        return out

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """A collated batch: each category as (B, C, S, S) uint8, decoded straight into place."""
        n, S = len(indices), self.size
        arrays = {"fg_bg": np.empty((n, S, S, 3), np.uint8), "bg": np.empty((n, S, S, 3), np.uint8),
                  "mask": np.empty((n, S, S), np.uint8), "depth": np.empty((n, S, S), np.uint8)}
        for j, i in enumerate(indices):
            self.read(self.items[i], {k: v[j] for k, v in arrays.items()})
        out = {cat: to_chw(arrays[cat]) for cat in CATEGORIES}
        if self.augment:
            gen = torch.Generator().manual_seed(hash((self.seed, self.epoch, int(indices[0]), n)) & 0xFFFFFFFF)
            out = augment_batch(out, gen, geometry=self.geometry)
        return out

    def __getitem__(self, index):
        """``ds[i]``: one sample; ``ds[[i, j, ...]]``: a batch; ``ds[(epoch, [i, j, ...])]``: a batch of
        that epoch (what :class:`EpochBatchSampler` yields, so persistent workers see the epoch)."""
        if isinstance(index, tuple) and len(index) == 2 and isinstance(index[1], list):
            self.epoch = index[0]
            return self.batch(index[1])
        if isinstance(index, (list, tuple)):
            return self.batch(index)
        return {k: v[0] for k, v in self.batch([index]).items()}

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draws (and, in subclasses, the placements) for a new epoch."""
        self.epoch = epoch

    def __getstate__(self):  # open zip handles do not travel to spawned workers
        state = self.__dict__.copy()
        state.update(_pid=None, _zips={})
        return state


# --------------------------------------------------------------------------- on-the-fly composites

class OnTheFlyDataset(CompositeDataset):
    """Composites rebuilt inside the loader from ``bg/`` and ``fg/``, with fresh placements per epoch.

    Same items (bg, fg, flip) and output as :class:`CompositeDataset`, but each epoch draws new
    boxes from ``default_rng([seed, epoch, bg, fg, flip, k])``, on the dataset's floors where it was
    placed on floors (chapter 03's rule: feet on the floor), else anywhere. So the model never sees the
    same composite twice and the disk holds only the inputs. Depth follows chapter 05's foot-point
    rule on the room's depth: exact for the sample world, else the labelling teacher's map of the
    empty room, stored once per room by ``label-depth`` (``room_depth/``).
    """

    def __init__(self, root: str | Path, split: str | Sequence[Composite] = "train", size: int | None = None,
                 augment: bool = False, seed: int = 0, split_spec: Split | None = None, geometry: str = "affine"):
        from .depth import room_depth

        super().__init__(root, split, size, augment, seed, split_spec, geometry)
        self.scale = tuple(self.info["params"]["scale"])
        first = self.items[0].bg  # fails here, naming the file, if the rooms have no stored depth
        self._pyramids, self._inv, self._floors = None, {first: room_depth(self.root, first, self.size)}, False

    def read(self, c: Composite, out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Composite ``c`` built afresh for the current epoch, written into ``out`` if given.

        The box is drawn from ``(seed, epoch, bg, fg, flip, k)``. Returns uint8 HWC arrays as
        :meth:`CompositeDataset.read` does: ``fg_bg``, ``bg`` (S, S, 3) RGB 0-255, ``mask`` (S, S) alpha
        0-255 and ``depth`` (S, S) relative inverse depth 0-255 (255 = nearest).
        """
        from .depth import normalise, paste_person_depth, room_depth
        from .compositing import composite, pyramids_for
        from .placement import dataset_floors, fit_box, plan_floor_placements

        if self._pyramids is None:
            n_fg = int(self.info["counts"]["fg"])
            self._pyramids = pyramids_for([load_prepared(self.root, "fg", j) for j in range(n_fg)], self.size, self.scale)
        if self._floors is False:
            self._floors = dataset_floors(self.root, self.size)
        rng = np.random.default_rng([self.seed, self.epoch, c.bg, c.fg, c.flip, c.k])
        pyr = self._pyramids[c.fg]
        floor = self._floors[c.bg] if self._floors else None
        planned = None
        if floor is not None and floor.usable:
            planned = plan_floor_placements(round(pyr.aspect * 1000), 1000, self.size, 1, self.scale, rng, floor)
        if planned is not None:
            x, y, w, h = (int(v) for v in planned[0][0])
        else:
            w, h = fit_box(round(pyr.aspect * 1000), 1000, self.size, rng.uniform(*self.scale))
            x, y = int(rng.integers(0, self.size - w + 1)), int(rng.integers(0, self.size - h + 1))
        bg = self.background(c.bg)
        fg_bg, mask = composite(bg, pyr.placed(c.flip, w, h), x, y)
        if c.bg not in self._inv:
            self._inv[c.bg] = room_depth(self.root, c.bg, self.size)
        depth, _, _ = normalise(paste_person_depth(self._inv[c.bg], mask))
        found = {"fg_bg": fg_bg, "bg": bg, "mask": mask, "depth": depth}
        if out is None:
            return found
        for k, v in found.items():
            out[k][...] = v
        return out


# --------------------------------------------------------------------------- loaders

def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


class EpochBatchSampler(Sampler):
    """Batches of indices, shuffled from ``(seed, epoch)`` alone, yielded as ``(epoch, indices)``.

    The order of epoch ``e`` is the same in every run, so a resumed run that skips the first
    ``start_batch`` batches sees exactly the batches the interrupted run would have seen. With
    ``world > 1`` each rank takes every ``world``-th index (padded so every rank gets the same count).
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 rank: int = 0, world: int = 1, limit: int | None = None):
        self.n, self.batch_size, self.shuffle, self.seed, self.drop_last = n, batch_size, shuffle, seed, drop_last
        self.limit = min(limit, n) if limit else n  # samples per epoch: a different subset each epoch
        self.rank, self.world = rank, world
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Yield epoch ``epoch``'s order next, skipping its first ``start_batch`` batches (to resume mid-epoch)."""
        self.epoch, self.start_batch = epoch, start_batch

    def _indices(self) -> list[int]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch))
        else:
            order = torch.arange(self.n)
        order = order[:self.limit]
        if self.world > 1:
            per_rank = -(-self.limit // self.world)
            order = torch.cat([order, order[:per_rank * self.world - self.limit]])[self.rank::self.world]
        return order.tolist()

    def __len__(self) -> int:
        per_rank = -(-self.limit // self.world)
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def __iter__(self):
        idx = self._indices()
        for b in range(self.start_batch, len(self)):
            yield self.epoch, idx[b * self.batch_size:(b + 1) * self.batch_size]


def make_loader(ds: CompositeDataset, batch_size: int, shuffle: bool = False, workers: int = 2, seed: int = 0,
                drop_last: bool = False, pin_memory: bool = False, rank: int = 0, world: int = 1,
                persistent: bool = False, limit: int | None = None) -> DataLoader:
    """A DataLoader whose workers each decode a whole batch per call.

    Its ``loader.sampler`` is an :class:`EpochBatchSampler`: call ``loader.sampler.set_epoch(e,
    start_batch)`` before each epoch (and the same order comes back for the same seed and epoch).
    """
    sampler = EpochBatchSampler(len(ds), batch_size, shuffle, seed, drop_last, rank, world, limit)
    ctx = "fork" if workers and "fork" in torch.multiprocessing.get_all_start_methods() else None
    return DataLoader(ds, sampler=sampler, batch_size=None, num_workers=workers,
                      worker_init_fn=_worker_init if workers else None, multiprocessing_context=ctx,
                      pin_memory=pin_memory, prefetch_factor=4 if workers else None,
                      persistent_workers=bool(workers) and persistent)


def to_inputs(batch: dict[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
    """Move a uint8 batch to ``device`` and scale to float 0-1 there (one cheap kernel per tensor)."""
    non_blocking = torch.device(device).type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking).float().div_(255) for k, v in batch.items()}
