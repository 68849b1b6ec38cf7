"""Chapter 10: training - one readable loop that survives Colab disconnects.

``train(dataset, run, config)`` trains the (fg_bg, bg) -> (mask, depth) model and keeps everything
in the run folder::

    RUN/config.json        what was asked (a different configuration is refused, not mixed in)
    RUN/split.json         the backgrounds and foregrounds of train / val / test
    RUN/checkpoints/last.pt  model, optimizer, scheduler, scaler, RNG, step, position in the epoch
    RUN/history.csv        one row per epoch: losses, learning rate, validation metrics, seconds
    RUN/steps.csv          one row per step: loss, its mask and depth parts, learning rate
    RUN/model.pt           the final weights with the model's name, options and normalisation
    RUN/tb/                TensorBoard logs (``tensorboard --logdir RUN/tb``)

Checkpoints are written atomically every ``checkpoint_every`` steps and at each epoch end;
re-running the same call resumes from the last one and ends with the same weights as a run that
was never interrupted (the batches and augmentations of a step depend only on the seed, the epoch
and the step). All files load with ``torch.load(weights_only=True)``.

Multi-process (DDP): ``torchrun --standalone --nproc-per-node=N -m depthmask_utils train ...``;
each process takes every N-th batch of the same order, rank 0 writes the run folder.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from . import distributed
from .data import (GEOMETRIES, CompositeDataset, EpochBatchSampler, OnTheFlyDataset, augment_batch, make_loader,
                   to_inputs)
from .dataset import Split, make_split, read_info
from .errors import DepthmaskError
from .losses import MultiTaskLoss
from .metrics import all_metrics, iou, rmse
from .models import build_model, count_parameters
from .precision import amp_dtype, cpu_has_bf16  # noqa: F401  (part of train's interface)
from .stats import load_stats
from .storage import atomic_write_bytes, atomic_write_json

RUN_FORMAT = "depthmask-run/1"


class RunError(DepthmaskError):
    """A run folder that cannot be used: another configuration, a bad checkpoint."""


@dataclass
class TrainConfig:
    """Everything that decides the weights a run ends with (``workers`` and ``device`` do not)."""
    model: str = "small-unet"
    epochs: int = 8
    samples_per_epoch: int | None = None  # None: every training composite; else a fresh subset each epoch
    val_samples: int | None = None  # None: validate on the whole val split; else on this many, spread over it
    sizes: tuple[int, ...] = (64, 96, 128)  # progressive resizing: the epochs are split evenly over these
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    clip: float = 1.0
    seed: int = 0
    depth_loss: str = "dense-depth"
    weighting: str = "fixed"
    w_mask: float = 1.0
    w_depth: float = 1.0
    depth_scale: float = 1.0  # the depth loss on maps area-shrunk by this factor (MultiTaskLoss)
    edge_weight: float = 1.0  # mask BCE counted this many times within a pixel of the soft edge (losses.mask_loss)
    augment: bool = True
    geometry: str = "affine"  # augment_batch's geometry: "affine" (flip, shift, scale, rotate) or "flip"
    on_the_fly: bool = False
    pretrained: bool = False
    model_options: dict = field(default_factory=dict)
    split: dict = field(default_factory=lambda: {"val": 0.15, "test": 0.15, "heldout_fg": 0.15})
    checkpoint_every: int = 100
    amp: bool = True  # mixed precision: on CUDA, and bfloat16 on a CPU that computes it natively (cpu_has_bf16)
    channels_last: bool = True
    workers: int = 2
    device: str = "auto"

    RUNTIME = ("workers", "device", "checkpoint_every")  # may differ between a run and its resume

    def __post_init__(self):
        if self.geometry not in GEOMETRIES:  # caught here, before a run folder is made
            raise ValueError(f"geometry must be one of {', '.join(GEOMETRIES)}, not {self.geometry!r}")
        if self.val_samples is not None and self.val_samples < 1:
            raise ValueError(f"val_samples must be at least 1 (or None for the whole val split), not {self.val_samples}")

    def size_at(self, epoch: int) -> int:
        """Training side for ``epoch`` under progressive resizing."""
        return self.sizes[min(len(self.sizes) - 1, epoch * len(self.sizes) // max(1, self.epochs))]

    def identity(self) -> dict:
        """The fields that decide the weights (all but ``RUNTIME``), JSON-ready with ``sizes`` as a list:
        what ``config.json`` records and a resume must match.
        """
        d = asdict(self)
        d["sizes"] = list(self.sizes)
        return {k: v for k, v in d.items() if k not in self.RUNTIME}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """A config from a dict such as ``config.json``'s; unknown keys are ignored, ``sizes`` becomes a tuple."""
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        if "sizes" in d:
            d["sizes"] = tuple(d["sizes"])
        return cls(**d)


@dataclass
class TrainResult:
    """What :func:`train` returns: the run folder, one history row per epoch, the final step, seconds
    spent by this call, the step it resumed from (0 if fresh) and the trainable parameter count.
    """
    run: Path
    history: list
    steps: int
    seconds: float
    resumed_from: int  # the step this call started from (0 for a fresh run)
    parameters: int

    @property
    def final(self) -> dict:
        """The last epoch's history row (losses, learning rate, validation metrics), or {} before any epoch."""
        return self.history[-1] if self.history else {}

    def __repr__(self) -> str:
        f = self.final
        return (f"TrainResult({len(self.history)} epochs, {self.steps} steps; val mask IoU "
                f"{f.get('val_mask_iou', float('nan')):.3f}, depth RMSE {f.get('val_depth_rmse', float('nan')):.3f})")


# --------------------------------------------------------------------------- helpers

def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``: CUDA if available, else CPU; ``"cuda"``: GPU ``local_rank`` (RunError if there is
    none); any other name as given.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RunError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
        return torch.device("cuda", local_rank)
    return torch.device(device)


def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save`` to a temporary name, then rename: a killed run never leaves half a file."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint or model file, loaded with ``weights_only=True``; bad files named clearly."""
    path = Path(path)
    if not path.exists():
        raise RunError(f"{path}: missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle from elsewhere, not a torch file at all
        raise RunError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    if not isinstance(state, dict) or state.get("format") != RUN_FORMAT:
        raise RunError(f"{path}: not a depthmask checkpoint (no format {RUN_FORMAT!r}) - was it written by another program?")
    return state


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _prepare_run(run: Path, dataset: Path, config: TrainConfig, split: Split, world: int = 1,
                 precision: str = "torch.float32") -> None:
    """Create the run folder, or check that an existing one was made by the same configuration.

    ``config.json`` records the number of processes (``world_size``) and the forward pass's
    precision. A resume with another number of processes is refused: each process's share of an
    epoch, the schedule's length and the position in the epoch all depend on it.
    """
    wanted = {"format": RUN_FORMAT, "dataset": str(dataset.resolve()), "config": config.identity(), "world_size": world,
              "precision": precision}
    path = run / "config.json"
    if path.exists():
        have = json.loads(path.read_text())
        if have.get("world_size", 1) != world:
            raise RunError(f"{run}: was trained with {have.get('world_size', 1)} process(es), not {world}; resume it "
                           f"with torchrun --nproc-per-node={have.get('world_size', 1)} (or train into a new --out folder)")
        # a key added to TrainConfig after the run was made takes its default: old runs still resume
        have["config"] = {**TrainConfig().identity(), **have.get("config", {})}
        diff = sorted(k for k in set(have["config"]) | set(wanted["config"])
                      if have["config"].get(k) != wanted["config"].get(k))
        if have.get("dataset") != wanted["dataset"]:
            diff.insert(0, f"dataset ({have.get('dataset')} -> {wanted['dataset']})")
        if diff:
            raise RunError(f"{run}: holds a run with another configuration (differs in: {', '.join(diff)}); "
                           "use a new --out folder, or delete this one to start over")
        return
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, wanted)
    atomic_write_json(run / "split.json", split.as_dict())


HISTORY_FIELDS = ["epoch", "step", "size", "lr", "train_loss", "train_mask_loss", "train_depth_loss",
                  "val_mask_iou", "val_depth_rmse", "seconds"]


def _write_history(run: Path, history: list[dict], steps_log: list[list]) -> None:
    """``history.csv`` (per epoch) and ``steps.csv`` (per step: loss, its parts, learning rate)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, HISTORY_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in h.items()} for h in history)
    atomic_write_bytes(run / "history.csv", buf.getvalue().encode())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["step", "loss", "mask_loss", "depth_loss", "lr"])
    w.writerows(steps_log)
    atomic_write_bytes(run / "steps.csv", buf.getvalue().encode())


@torch.no_grad()
def evaluate_loader(model: torch.nn.Module, loader, device: torch.device,
                    every_metric: bool = False) -> dict[str, torch.Tensor]:
    """Per-image metrics over every batch of ``loader``, concatenated: ``mask_iou`` and ``depth_rmse``
    (what ``history.csv`` records), or every metric of :func:`metrics.all_metrics` with ``every_metric``.

    The two alone keep the validation after each epoch cheap: on the sample profile (840 composites
    at 128 px, 2 CPU cores) a pass took 13 s with every metric and 5 s with these two.
    """
    was = model.training
    model.eval()
    parts: dict[str, list] = {}
    for batch in loader:
        x = to_inputs(batch, device)
        out = model(x["fg_bg"], x["bg"])
        prob, depth = torch.sigmoid(out["mask"].float()), out["depth"].float()
        m = (all_metrics(prob, x["mask"], depth, x["depth"]) if every_metric else
             {"mask_iou": iou(prob, x["mask"]), "depth_rmse": rmse(depth, x["depth"])})
        for k, v in m.items():
            parts.setdefault(k, []).append(v.cpu())
    model.train(was)
    return {k: torch.cat(v) for k, v in parts.items()}


def validate(model: torch.nn.Module, loader, device: torch.device) -> dict[str, float]:
    """``val_mask_iou`` and ``val_depth_rmse``: means over the validation composites. Under torchrun each
    process scores its share (``loader``'s) and the sums are added up, so every process gets the mean
    one process would over them all."""
    m = evaluate_loader(model, loader, device)
    iou_sum, rmse_sum, n = distributed.sum_over_processes(
        [float(m["mask_iou"].double().sum()), float(m["depth_rmse"].double().sum()), len(m["mask_iou"])], device)
    return {"val_mask_iou": iou_sum / n, "val_depth_rmse": rmse_sum / n}


def validation_items(items: list, n: int | None) -> list:
    """``n`` of ``items`` spread evenly over the list (every k-th), or all of them if ``n`` is None or
    at least their number.

    The val split lists its composites room by room, so an even spread keeps every validation room
    and person in the sample. The validation after each epoch only reports; on the sample profile
    all 840 val composites took 6 s a pass on 2 CPU cores, 320 took 2.4 s: seconds a 5-minute
    budget gives to training steps instead.
    """
    if n is None or n >= len(items):
        return list(items)
    if n < 1:
        raise ValueError(f"val_samples must be at least 1, not {n}")
    return [items[i * len(items) // n] for i in range(n)]


def model_file(model: torch.nn.Module, config: TrainConfig, stats: dict, size: int) -> dict:
    """What ``RUN/model.pt`` holds: enough to rebuild the model without the dataset."""
    return {"format": RUN_FORMAT, "kind": "model", "model": config.model, "options": dict(config.model_options),
            "stats": {k: stats[k] for k in ("fg_bg", "bg")}, "size": size,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}


# --------------------------------------------------------------------------- the loop

def amp_enabled(device: torch.device, config: TrainConfig) -> bool:
    """Whether the forward pass runs under autocast: when ``config.amp``, on CUDA, and on a CPU with
    native bfloat16 (:func:`cpu_has_bf16`; about 1.35x faster training for the sample profile on one)."""
    if not config.amp:
        return False
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())


def make_scaler(device: torch.device, config: TrainConfig) -> torch.amp.GradScaler:
    """The GradScaler :func:`train_step` expects: scaling only under float16 autocast (bfloat16 needs none)."""
    return torch.amp.GradScaler("cuda", enabled=amp_enabled(device, config) and amp_dtype(device) == torch.float16)


def one_cycle(opt: torch.optim.Optimizer, lr: float, total_steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    """The one-cycle schedule: warm up to ``lr`` over the first quarter of ``total_steps``, then anneal.

    ``OneCycleLR`` divides by zero when its warm-up is exactly one step (a quarter of 4 steps), so a
    4-step run warms up over 30 % of them instead.
    """
    pct_start = 0.3 if total_steps == 4 else 0.25
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total_steps, pct_start=pct_start)


def make_criterion(config: TrainConfig) -> MultiTaskLoss:
    """The loss ``config`` trains with: its depth loss, weighting, weights, depth scale and edge weight."""
    return MultiTaskLoss(config.depth_loss, config.weighting, config.w_mask, config.w_depth,
                         depth_scale=config.depth_scale, edge_weight=config.edge_weight)


def train_step(net: torch.nn.Module, criterion: torch.nn.Module, opt: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, batch: dict[str, torch.Tensor], config: TrainConfig,
               device: torch.device, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """One optimisation step, as :func:`train` takes it: augment (draws from ``generator``), forward
    (autocast where :func:`amp_enabled`), loss, backward, gradient clipping, update. The scheduler is the caller's.

    ``batch``: the loader's uint8 (B, C, S, S) tensors. Returns (loss detached, {"mask", "depth"} parts).
    """
    if config.augment:
        batch = augment_batch({k: v.to(device) for k, v in batch.items()}, generator, geometry=config.geometry)
    x = to_inputs(batch, device)
    if config.channels_last:
        x = {k: v.contiguous(memory_format=torch.channels_last) for k, v in x.items()}
    with torch.autocast(device.type, dtype=amp_dtype(device), enabled=amp_enabled(device, config)):
        out = net(x["fg_bg"], x["bg"])
    loss, parts = criterion(out, x["mask"], x["depth"])
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    distributed.average_gradients(criterion.parameters())  # DDP averages only the model's
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], config.clip)
    scaler.step(opt)
    scaler.update()
    return loss.detach(), parts


def check_labels(info: dict, dataset: Path, allow_random_labels: bool = False) -> None:
    """Refuse a dataset whose depth labels came from a teacher with random weights: they are noise,
    and a model trained on them learns noise. ``allow_random_labels`` lets tests of the code path through."""
    depth = info.get("depth", {})
    if depth.get("weights") == "random" and not allow_random_labels:
        raise RunError(f"{dataset}: its depth labels come from teacher {depth.get('teacher')!r} with RANDOM weights "
                       "(noise, not depth); relabel with pretrained weights (label-depth --overwrite, or "
                       "--teacher mini offline), or pass --allow-random-labels to train on them anyway")


def train(dataset: str | Path, run: str | Path, config: TrainConfig | None = None, progress: bool = True,
          log=print, allow_random_labels: bool = False) -> TrainResult:
    """Train (or resume training) into the run folder ``run``; returns the history.

    Refuses labels made by a randomly initialised teacher unless ``allow_random_labels``.
    """
    from tqdm import tqdm

    config = config or TrainConfig()
    dataset, run = Path(dataset), Path(run)
    check_labels(read_info(dataset, need_depth=True), dataset, allow_random_labels)
    rank, world, local_rank = distributed.environment()
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() and config.device != "cpu" else "gloo")
    device = resolve_device(config.device, local_rank)
    cuda = device.type == "cuda"
    if cuda:  # this process's GPU for everything that names no device: RNG, probes, NCCL
        torch.cuda.set_device(device)
    torch.manual_seed(config.seed)

    info = read_info(dataset, need_depth=True)
    stats = load_stats(dataset)
    split = make_split(info["counts"]["bg"], info["counts"]["fg"], config.seed, **config.split)
    precision = str(amp_dtype(device) if amp_enabled(device, config) else torch.float32)
    distributed.on_first_process(lambda: _prepare_run(run, dataset, config, split, world, precision), rank, RunError)

    model = build_model(config.model, stats=stats, pretrained=config.pretrained, **config.model_options).to(device)
    if config.channels_last:  # faster convolutions on GPUs and, with oneDNN, on CPUs too
        model = model.to(memory_format=torch.channels_last)
    criterion = make_criterion(config).to(device)
    params = list(model.parameters()) + list(criterion.parameters())
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    Data = OnTheFlyDataset if config.on_the_fly else CompositeDataset
    train_items = CompositeDataset(dataset, "train", split_spec=split).items
    steps_per_epoch = len(EpochBatchSampler(len(train_items), config.batch_size, True, config.seed, True, rank, world,
                                            config.samples_per_epoch))
    if steps_per_epoch == 0:
        raise RunError(f"{dataset}: {len(train_items)} training composites make no full batch of {config.batch_size} "
                       f"per process; lower --batch-size")
    sched = one_cycle(opt, config.lr, config.epochs * steps_per_epoch)
    scaler = make_scaler(device, config)

    ckpt_path = run / "checkpoints" / "last.pt"
    step, epoch0, batch0, history, sums, resumed_from, steps_log = 0, 0, 0, [], [0.0, 0.0, 0.0, 0], 0, []
    if ckpt_path.exists():
        ck = load_checkpoint(ckpt_path)
        model.load_state_dict(ck["model"])
        criterion.load_state_dict(ck["criterion"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        _set_rng_state(ck["rng"])
        step, epoch0, batch0, history = ck["step"], ck["epoch"], ck["batch"], ck["history"]
        sums = ck["sums_by_rank"][rank] if "sums_by_rank" in ck else ck["sums"]  # each process's own running sums
        steps_log = ck["steps_log"]
        resumed_from = step
        if rank == 0 and epoch0 < config.epochs:  # a finished run returns without a word
            log(f"resuming {run} at epoch {epoch0 + 1}, step {step}")
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if cuda else None)

    def checkpoint(epoch: int, batch: int) -> None:  # called by every process: it gathers their loss sums
        by_rank = distributed.gather(list(sums))
        if rank != 0:
            return
        save_checkpoint(ckpt_path, {"format": RUN_FORMAT, "kind": "checkpoint", "model": model.state_dict(),
                                    "criterion": criterion.state_dict(), "optimizer": opt.state_dict(),
                                    "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                                    "rng": _rng_state(), "step": step, "epoch": epoch, "batch": batch,
                                    "history": history, "sums": list(sums), "sums_by_rank": by_rank,
                                    "steps_log": steps_log})

    writer = None
    if rank == 0:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run / "tb"), purge_step=step)
        except ImportError:  # tensorboard is optional: history.csv has the same numbers
            writer = None
    final_size = config.sizes[-1]
    val_items = validation_items(CompositeDataset(dataset, "val", split_spec=split).items, config.val_samples)
    val_loader = make_loader(CompositeDataset(dataset, distributed.shard(val_items, rank, world), final_size), 64,
                             workers=0)
    t_start = time.perf_counter()
    for epoch in range(epoch0, config.epochs):
        size = config.size_at(epoch)
        loader = make_loader(Data(dataset, train_items, size, split_spec=split), config.batch_size, True,
                             config.workers, config.seed, True, rank=rank, world=world, limit=config.samples_per_epoch)
        start = batch0 if epoch == epoch0 else 0
        if start == 0:
            sums = [0.0, 0.0, 0.0, 0]
        loader.sampler.set_epoch(epoch, start)
        t_epoch = time.perf_counter()
        bar = tqdm(total=steps_per_epoch, initial=start, desc=f"epoch {epoch + 1}/{config.epochs} @{size}px",
                   unit="step", disable=not progress or rank != 0, leave=False)
        net.train()
        for b, batch in enumerate(loader, start=start):
            gen = torch.Generator().manual_seed(config.seed * 1_000_003 + step)  # a resume redraws the same
            loss, parts = train_step(net, criterion, opt, scaler, batch, config, device, gen)
            sched.step()
            step += 1
            sums = [sums[0] + float(loss.detach()), sums[1] + parts["mask"], sums[2] + parts["depth"], sums[3] + 1]
            steps_log.append([step, round(float(loss.detach()), 5), round(parts["mask"], 5), round(parts["depth"], 5),
                              float(sched.get_last_lr()[0])])
            if writer is not None:
                writer.add_scalar("train/loss", sums[0] / sums[3], step)
            bar.update(1)
            bar.set_postfix(loss=f"{sums[0] / sums[3]:.3f}")
            if b + 1 < steps_per_epoch and step % config.checkpoint_every == 0:
                checkpoint(epoch, b + 1)
        bar.close()
        total = distributed.sum_over_processes(sums, device)  # the loss of every process, not the first's
        row = {"epoch": epoch + 1, "step": step, "size": size, "lr": float(sched.get_last_lr()[0]),
               "train_loss": total[0] / max(1, total[3]), "train_mask_loss": total[1] / max(1, total[3]),
               "train_depth_loss": total[2] / max(1, total[3])}
        distributed.broadcast_buffers(model)  # process 0's running statistics, which model.pt keeps
        row.update(validate(model, val_loader, device), seconds=round(time.perf_counter() - t_epoch, 2))
        if rank == 0:
            history.append(row)
            log(f"epoch {epoch + 1}/{config.epochs} @{size}px: loss {row['train_loss']:.4f} "
                f"(mask {row['train_mask_loss']:.4f}, depth {row['train_depth_loss']:.4f}) | val mask IoU "
                f"{row['val_mask_iou']:.4f}, depth RMSE {row['val_depth_rmse']:.4f}")
            if writer is not None:
                for k in ("val_mask_iou", "val_depth_rmse", "lr"):
                    writer.add_scalar(k.replace("_", "/", 1), row[k], step)
        checkpoint(epoch + 1, 0)
        if rank == 0:
            _write_history(run, history, steps_log)
        if world > 1:
            torch.distributed.barrier()
    if rank == 0:
        _write_history(run, history, steps_log)  # again: a run killed right after its last checkpoint
        save_checkpoint(run / "model.pt", model_file(model, config, stats, final_size))
        if writer is not None:
            writer.close()
    if world > 1:
        torch.distributed.barrier()
    return TrainResult(run, history, step, time.perf_counter() - t_start, resumed_from, count_parameters(model))


def read_history(run: str | Path):
    """``RUN/history.csv`` as a pandas DataFrame (one row per epoch)."""
    import pandas as pd

    path = Path(run) / "history.csv"
    if not path.exists():
        raise RunError(f"{path}: missing - has this run finished an epoch?")
    return pd.read_csv(path)
