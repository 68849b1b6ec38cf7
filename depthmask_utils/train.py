"""Chapters 11-12: training - one readable loop that survives Colab disconnects.

``train(dataset, run, config)`` trains the (fg_bg, bg) -> (mask, depth) model and keeps everything
in the run folder::

    RUN/config.json        what was asked (a different configuration is refused, not mixed in)
    RUN/split.json         the backgrounds and foregrounds of train / val / test
    RUN/checkpoints/last.pt  model, optimizer, scheduler, scaler, RNG, step, position in the epoch
    RUN/history.csv        one row per epoch: losses, learning rate, validation metrics, seconds
    RUN/steps.csv          one row per ``log_every`` steps: mean loss, its mask and depth parts, learning rate
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

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import distributed
from .checkpoint import (RUN_FORMAT, RunError, load_checkpoint, prepare_run, read_history,  # noqa: F401
                         rng_state, save_checkpoint, set_rng_state, write_history)
from .config import TrainConfig
from .errors import ConfigError
from .augment import augment_batch
from .data import (CompositeDataset, EpochBatchSampler, OnTheFlyDataset, make_loader,
                   to_inputs)
from .dataset import make_split, read_info
from .losses import MultiTaskLoss
from .metrics import all_metrics, iou, rmse
from .models import build_model, count_parameters
from .precision import amp_dtype, cpu_has_bf16, resolve_device  # noqa: F401  (part of train's interface)
from .stats import load_stats

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

@torch.no_grad()
def evaluate_loader(model: torch.nn.Module, loader, device: torch.device,
                    every_metric: bool = False, criterion: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Per-image metrics over every batch of ``loader``, concatenated: ``mask_iou`` and ``depth_rmse``
    (what ``history.csv`` records), or every metric of :func:`metrics.all_metrics` with ``every_metric``;
    with a ``criterion``, also ``loss``: each image's batch loss, so their mean is the loss over the set.

    The two metrics alone keep the validation after each epoch cheap (``benchmarks/README.md``).
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
        if criterion is not None:  # the training loss on images the model never trains on
            m["loss"] = criterion(out, x["mask"], x["depth"])[0].detach().float().expand(len(prob))
        for k, v in m.items():
            parts.setdefault(k, []).append(v.cpu())
    model.train(was)
    return {k: torch.cat(v) for k, v in parts.items()}


def validate(model: torch.nn.Module, loader, device: torch.device,
             criterion: torch.nn.Module | None = None) -> dict[str, float]:
    """``val_mask_iou`` and ``val_depth_rmse`` (and ``val_loss``, the training loss, with a
    ``criterion``): means over the validation composites. Under torchrun each process scores its
    share (``loader``'s) and the sums are added up, so every process gets the mean one process
    would over them all."""
    m = evaluate_loader(model, loader, device, criterion=criterion)
    names = ["mask_iou", "depth_rmse"] + (["loss"] if criterion is not None else [])
    *sums, n = distributed.sum_over_processes([float(m[k].double().sum()) for k in names] + [len(m["mask_iou"])], device)
    return {f"val_{k}": total / n for k, total in zip(names, sums)}


def validation_items(items: list, n: int | None) -> list:
    """``n`` of ``items`` spread evenly over the list (every k-th), or all of them if ``n`` is None or
    at least their number.

    The val split lists its composites room by room, so an even spread keeps every validation room
    and person in the sample. The validation after each epoch only reports, so a sample of it saves
    seconds that a time budget gives to training steps instead.
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
    native bfloat16 (:func:`cpu_has_bf16`; about 1.35x faster training for the sample profile on one)
    or whose config names an ``autocast_dtype`` (what is asked for explicitly is done, even where slow)."""
    if not config.amp:
        return False
    return device.type == "cuda" or (device.type == "cpu" and (cpu_has_bf16() or config.autocast_dtype != "auto"))


def forward_dtype(device: torch.device, config: TrainConfig) -> torch.dtype:
    """The type the forward pass runs in on ``device``: float32 unless :func:`amp_enabled`; then
    ``config.autocast_dtype``, where ``"auto"`` is :func:`precision.amp_dtype`'s choice for the hardware.
    A named type on a device where training runs no autocast (``mps``, ...) is a ConfigError, not float32."""
    if not amp_enabled(device, config):
        if config.amp and config.autocast_dtype != "auto":
            raise ConfigError(f"autocast_dtype {config.autocast_dtype}: training runs autocast on CUDA and CPUs, "
                              f"not on {device}; leave it at auto (float32 there) or pick another --device")
        return torch.float32
    if config.autocast_dtype == "auto":
        return amp_dtype(device)
    return getattr(torch, config.autocast_dtype)


def make_scaler(device: torch.device, config: TrainConfig) -> torch.amp.GradScaler:
    """The GradScaler :func:`train_step` expects: scaling only under float16 autocast (bfloat16 needs none)."""
    return torch.amp.GradScaler(device.type, enabled=forward_dtype(device, config) == torch.float16)


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
                         depth_scale=config.depth_scale, edge_weight=config.edge_weight,
                         dice_target=config.dice_target)


def train_step(net: torch.nn.Module, criterion: torch.nn.Module, opt: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, batch: dict[str, torch.Tensor], config: TrainConfig,
               device: torch.device, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """One optimisation step, as :func:`train` takes it: augment (draws from ``generator``), forward
    (autocast where :func:`amp_enabled`), loss, backward, gradient clipping, update. The scheduler is the caller's.

    ``batch``: the loader's uint8 (B, C, S, S) tensors. Returns (loss, {"mask", "depth"} parts), detached
    0-dim tensors on ``device``: nothing here waits for the GPU to finish the step.
    """
    if config.augment:
        batch = augment_batch({k: v.to(device) for k, v in batch.items()}, generator, geometry=config.geometry)
    x = to_inputs(batch, device)
    if config.channels_last:
        x = {k: v.contiguous(memory_format=torch.channels_last) for k, v in x.items()}
    dtype = forward_dtype(device, config)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
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
    distributed.init(world, torch.cuda.is_available() and config.device != "cpu")
    device = resolve_device(config.device, local_rank)
    cuda = device.type == "cuda"
    if cuda:  # this process's GPU for everything that names no device: RNG, probes, NCCL
        torch.cuda.set_device(device)
    torch.manual_seed(config.seed)

    info = read_info(dataset, need_depth=True)
    stats = load_stats(dataset)
    split = make_split(info["counts"]["bg"], info["counts"]["fg"], config.seed, **config.split)
    precision = str(forward_dtype(device, config))
    distributed.on_first_process(lambda: prepare_run(run, dataset, config, split, world, precision, log), rank,
                                 RunError)

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
        set_rng_state(ck["rng"])
        step, epoch0, batch0, history = ck["step"], ck["epoch"], ck["batch"], ck["history"]
        sums = ck["sums_by_rank"][rank] if "sums_by_rank" in ck else ck["sums"]  # each process's own running sums
        steps_log = ck["steps_log"]
        resumed_from = step
        if rank == 0 and epoch0 < config.epochs:  # a finished run returns without a word
            log(f"resuming {run} at epoch {epoch0 + 1}, step {step}")
    net = distributed.wrap(model, local_rank if cuda else None)  # the model itself with one process

    def checkpoint(epoch: int, batch: int) -> None:  # called by every process: it gathers their loss sums
        by_rank = distributed.gather(list(sums))
        if rank != 0:
            return
        save_checkpoint(ckpt_path, {"format": RUN_FORMAT, "kind": "checkpoint", "model": model.state_dict(),
                                    "criterion": criterion.state_dict(), "optimizer": opt.state_dict(),
                                    "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                                    "rng": rng_state(), "step": step, "epoch": epoch, "batch": batch,
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
                             workers=0, pin_memory=cuda)
    t_start = time.perf_counter()
    for epoch in range(epoch0, config.epochs):
        size = config.size_at(epoch)
        loader = make_loader(Data(dataset, train_items, size, seed=config.seed, split_spec=split), config.batch_size,
                             True, config.workers, config.seed, True, pin_memory=cuda, rank=rank, world=world,
                             limit=config.samples_per_epoch)
        start = batch0 if epoch == epoch0 else 0
        if start == 0:
            sums = [0.0, 0.0, 0.0, 0]
        loader.sampler.set_epoch(epoch, start)
        t_epoch = time.perf_counter()
        bar = tqdm(total=steps_per_epoch, initial=start, desc=f"epoch {epoch + 1}/{config.epochs} @{size}px",
                   unit="step", disable=not progress or rank != 0, leave=False)
        net.train()
        window, in_window = torch.zeros(3, dtype=torch.float64, device=device), 0  # loss, mask, depth since the last line

        def flush() -> None:  # one read of the device per log line, not four per step
            nonlocal sums, in_window
            if in_window:
                loss_sum, mask_sum, depth_sum = window.tolist()
                sums = [sums[0] + loss_sum, sums[1] + mask_sum, sums[2] + depth_sum, sums[3] + in_window]
                steps_log.append([step, round(loss_sum / in_window, 5), round(mask_sum / in_window, 5),
                                  round(depth_sum / in_window, 5), float(sched.get_last_lr()[0])])
                if writer is not None:
                    writer.add_scalar("train/loss", sums[0] / sums[3], step)
                bar.set_postfix(loss=f"{sums[0] / sums[3]:.3f}")
                window.zero_()
                in_window = 0

        for b, batch in enumerate(loader, start=start):
            gen = torch.Generator().manual_seed(config.seed * 1_000_003 + step)  # a resume redraws the same
            loss, parts = train_step(net, criterion, opt, scaler, batch, config, device, gen)
            sched.step()
            step += 1
            window += torch.stack([loss, parts["mask"], parts["depth"]]).double()
            in_window += 1
            bar.update(1)
            save = b + 1 < steps_per_epoch and step % config.checkpoint_every == 0
            if save or step % config.log_every == 0:  # a checkpoint holds complete sums, and so
                flush()                                   # an uninterrupted run logs the same lines
            if save:
                checkpoint(epoch, b + 1)
        flush()
        bar.close()
        loader.dataset.close()  # this epoch's shard handles (with workers, theirs close as they exit)
        total = distributed.sum_over_processes(sums, device)  # the loss of every process, not the first's
        row = {"epoch": epoch + 1, "step": step, "size": size, "lr": float(sched.get_last_lr()[0]),
               "train_loss": total[0] / max(1, total[3]), "train_mask_loss": total[1] / max(1, total[3]),
               "train_depth_loss": total[2] / max(1, total[3])}
        distributed.broadcast_buffers(model)  # process 0's running statistics, which model.pt keeps
        row.update(validate(model, val_loader, device, criterion), seconds=round(time.perf_counter() - t_epoch, 2))
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
            write_history(run, history, steps_log)
        distributed.barrier()
    if rank == 0:
        write_history(run, history, steps_log)  # again: a run killed right after its last checkpoint
        save_checkpoint(run / "model.pt", model_file(model, config, stats, final_size))
        if writer is not None:
            writer.close()
    distributed.barrier()
    return TrainResult(run, history, step, time.perf_counter() - t_start, resumed_from, count_parameters(model))
