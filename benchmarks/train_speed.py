"""Training speed of the full profile's model: images/s at 112, 160 and 224 px in float16 and bfloat16.

    python benchmarks/train_speed.py                                   # this machine's GPU (or CPU)
    torchrun --standalone --nproc-per-node=2 benchmarks/train_speed.py  # two GPUs (DDP), checked to agree
    python benchmarks/train_speed.py --sizes 32 --batch 4 --steps 2 --dtypes bfloat16   # a quick look

Each line is one training step of the full profile's configuration (ResNet-18 U-Net, its loss,
augmentation, AdamW, gradient clipping; ``train.train_step`` itself) with the forward pass under
autocast in the given type (``TrainConfig.autocast_dtype``), float32 as the baseline in the same run
(on a GPU of compute capability 8.0 or newer its convolutions run in TF32, PyTorch's default, as in training):

* ``resident``: batches already on the device, so the figure is the model's, not the loader's;
* ``loader``: batches from the course's DataLoader (``--workers`` processes decoding the JPEG/PNG
  shards), in the type the hardware picks by itself (``auto``): what training really gets. Its
  ratio to the resident line of the same type says how much of the model's speed the loader feeds.

The encoder starts from random weights (no download): the arithmetic, and so the speed, is the
pretrained one's. The data is a 224-px sample world labelled with exact depth, built once under
data/bench/. The loss learns its two weights (``uncertainty``; the profile's are fixed, and the two
learnable numbers cost nothing measurable) so that one process and several train the same thing.
With several processes (torchrun), each trains on its own batches, DDP averages the gradients, and
after the timed steps every process's weights and loss weights (which DDP does not see) must equal
process 0's: a check that prints ``met`` or ``MISSED``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BENCH, verdict  # noqa: E402

from depthmask_utils import distributed  # noqa: E402
from depthmask_utils.config import get_profile  # noqa: E402
from depthmask_utils.data import CompositeDataset, make_loader, read_composites  # noqa: E402
from depthmask_utils.models import build_model  # noqa: E402
from depthmask_utils.pipeline import ensure_labelled_world  # noqa: E402
from depthmask_utils.stats import dataset_stats, load_stats  # noqa: E402
from depthmask_utils.train import TrainConfig, forward_dtype, make_criterion, make_scaler, resolve_device, train_step  # noqa: E402


def speed_dataset(folder: Path, n_bg: int, n_fg: int) -> Path:
    """A labelled 224-px dataset with its statistics, built once in ``folder``: ``n_bg`` rooms, each with 8
    of the ``n_fg`` people (fewer if there are fewer), mirrored and not: ``n_bg x 8 x 2`` composites."""
    dataset = ensure_labelled_world(folder, seed=0, n_bg=n_bg, n_fg=n_fg, size=224, world_size=240)
    if not (dataset / "stats.json").exists():
        dataset_stats(dataset, progress=False)
    return dataset


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def equal_to_first_process(tensors: list[torch.Tensor]) -> float:
    """The largest difference between this process's ``tensors`` and process 0's (0.0 with one process)."""
    if not distributed.active():
        return 0.0
    flat = torch.cat([t.detach().float().flatten() for t in tensors])
    first = flat.clone()
    torch.distributed.broadcast(first, src=0)
    gap = (flat - first).abs().max()
    torch.distributed.all_reduce(gap, op=torch.distributed.ReduceOp.MAX)
    return float(gap)


def measure(cfg: TrainConfig, dataset: Path, items: list, stats: dict, size: int, device: torch.device, steps: int,
            warm: int, source: str, rank: int, world: int, local_rank: int | None) -> dict:
    """Images/s (all processes together) of ``steps`` timed training steps after ``warm`` untimed ones,
    on ``items`` of ``dataset`` (whatever their split: speed does not care which)."""
    torch.manual_seed(cfg.seed)  # every process builds the same weights
    model = build_model(cfg.model, stats=stats, **cfg.model_options).to(device)
    model = model.to(memory_format=torch.channels_last)
    criterion = make_criterion(cfg).to(device)
    opt = torch.optim.AdamW(list(model.parameters()) + list(criterion.parameters()), lr=cfg.lr)
    scaler = make_scaler(device, cfg)
    net = distributed.wrap(model, local_rank)
    loader = make_loader(CompositeDataset(dataset, items, size), cfg.batch_size, True,
                         cfg.workers if source == "loader" else 0, cfg.seed, True, pin_memory=device.type == "cuda",
                         rank=rank, world=world, persistent=source == "loader")
    if source == "resident":  # a few batches on the device, reused: no decoding, no copies in the timed steps
        loader.sampler.set_epoch(0, 0)
        held = [{k: v.to(device) for k, v in b.items()} for b in itertools.islice(loader, 4)]
        if not held:
            raise SystemExit(f"{dataset}: no full batch of {cfg.batch_size} per process; use more --rooms or a smaller --batch")
        batches = (held[i % len(held)] for i in itertools.count())
    else:
        def endless():
            for epoch in itertools.count():
                loader.sampler.set_epoch(epoch, 0)
                yield from loader
        batches = endless()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    for i in range(warm + steps):
        if i == warm:
            synchronize(device)
            distributed.barrier()
            t0 = time.perf_counter()
        train_step(net, criterion, opt, scaler, next(batches), cfg, device, gen)
    synchronize(device)
    distributed.barrier()
    seconds = time.perf_counter() - t0
    out = {"images_per_s": steps * cfg.batch_size * world / seconds, "ms_per_step": 1000 * seconds / steps,
           "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
           "scale": scaler.get_scale() if scaler.is_enabled() else None,
           "gap": equal_to_first_process([*model.parameters(), *criterion.parameters()])}
    loader.dataset.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[112, 160, 224])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float16", "bfloat16"],
                    choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--batch", type=int, help="batch per process (default: the full profile's)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per line")
    ap.add_argument("--warm", type=int, default=3, help="untimed steps first (kernel choice, allocator)")
    ap.add_argument("--workers", type=int, help="loader processes (default: the full profile's)")
    ap.add_argument("--rooms", type=int, default=100, help="rooms in the data (each with 8 of the people, twice: mirrored)")
    ap.add_argument("--people", type=int, default=24)
    ap.add_argument("--data", type=Path, help="where the data is built (default: data/bench/speed_ROOMSxPEOPLE)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    if args.steps < 1 or args.warm < 0:
        ap.error("--steps must be at least 1 and --warm at least 0")

    rank, world, local_rank = distributed.environment()
    distributed.init(world, torch.cuda.is_available() and args.device != "cpu")
    device = resolve_device(args.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # cuDNN's kernel choice is left as training leaves it (no cudnn.benchmark)
    full = get_profile("full").train
    cfg = replace(full, pretrained=False, batch_size=args.batch or full.batch_size,
                  workers=full.workers if args.workers is None else args.workers,
                  weighting="uncertainty")  # learnable loss weights, for the DDP check (see the top)
    folder = args.data or BENCH / f"speed_{args.rooms}x{args.people}"
    if rank == 0:
        dataset = speed_dataset(folder, args.rooms, args.people)
    distributed.barrier()  # the others wait until process 0 has built it, then find it built
    if rank != 0:
        dataset = speed_dataset(folder, args.rooms, args.people)
    items, stats = read_composites(dataset), load_stats(dataset)  # once: every line trains on the same
    if rank == 0:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        print(f"{name}; torch {torch.__version__}; {world} process(es); {cfg.model} U-Net, batch {cfg.batch_size} "
              f"per process, {len(items)} composites stored at 224 px, "
              f"{cfg.weighting} loss weights, {args.warm} + {args.steps} steps per line")
    auto = str(forward_dtype(device, cfg)).replace("torch.", "")
    plan = [(s, d, "resident") for s in args.sizes for d in args.dtypes] + [(s, auto, "loader") for s in args.sizes]
    rates, gaps = {}, []
    for size, dtype, source in plan:
        c = replace(cfg, amp=dtype != "float32", autocast_dtype="auto" if dtype == "float32" else dtype)
        r = measure(c, dataset, items, stats, size, device, args.steps, args.warm, source, rank, world,
                    local_rank if device.type == "cuda" else None)
        rates[size, dtype, source] = r["images_per_s"]
        gaps.append(r["gap"])
        if rank != 0:
            continue
        base, model_only = rates.get((size, "float32", "resident")), rates.get((size, dtype, "resident"))
        extra = [f"{r['ms_per_step']:7.1f} ms/step"]
        if base and (dtype, source) != ("float32", "resident"):
            extra.append(f"{r['images_per_s'] / base:4.2f}x float32")
        if source == "loader" and model_only:
            extra.append(f"{r['images_per_s'] / model_only:4.2f}x resident {dtype}")
        if r["peak_gib"] is not None:
            extra.append(f"peak {r['peak_gib']:.1f} GiB")
        if r["scale"] is not None:
            extra.append(f"loss scale {r['scale']:.0f}")
        if world > 1:
            extra.append(f"weights' largest gap to process 0: {r['gap']:.1e}")
        print(f"{size:4d} px  {dtype:8s} {source:8s} {r['images_per_s']:8.1f} images/s   " + "   ".join(extra))
    if world > 1 and rank == 0:
        print(f"every process ends each line with process 0's weights and loss weights: {verdict(max(gaps) == 0.0)}")
    if device.type != "cuda" and rank == 0:
        print("no GPU here: these are CPU figures; float16 on a CPU is emulated")


if __name__ == "__main__":
    main()
