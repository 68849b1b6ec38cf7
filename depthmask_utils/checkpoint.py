"""The run folder: checkpoints, ``config.json``, the history files - written by :mod:`train`,
read by :mod:`evaluate` and chapter 13.

Every file is written atomically (a temporary name, then a rename), so a killed run never leaves
half a file, and every checkpoint loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch

from .config import TrainConfig
from .dataset import Split
from .errors import DepthmaskError
from .storage import atomic_write_bytes, atomic_write_json

RUN_FORMAT = "depthmask-run/1"


class RunError(DepthmaskError):
    """A run folder that cannot be used: another configuration, a bad checkpoint."""


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


def rng_state() -> dict:
    """The CPU and (if any) CUDA random states, what a checkpoint keeps for a bit-exact resume."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def prepare_run(run: Path, dataset: Path, config: TrainConfig, split: Split, world: int = 1,
                 precision: str = "torch.float32", log=print) -> None:
    """Create the run folder, or check that an existing one was made by the same configuration.

    ``config.json`` records the number of processes (``world_size``), the forward pass's
    precision, and the profile and overrides the values came from (:func:`config.train_config`). A resume with another number of processes is refused: each process's share of an
    epoch, the schedule's length and the position in the epoch all depend on it. A resume in
    another precision is told to ``log``: ``autocast_dtype`` ``"auto"`` follows the hardware.
    """
    wanted = {"format": RUN_FORMAT, "dataset": str(dataset.resolve()), "config": config.identity(), "world_size": world,
              "precision": precision, "profile": config.profile, "overrides": config.overrides}
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
        if have.get("precision", precision) != precision:  # begun on a T4, resumed on an A100, say
            log(f"{run}: began with the forward pass in {have['precision']}, continues in {precision} "
                "(autocast_dtype auto follows the hardware; name a type to keep one)")
        return
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, wanted)
    atomic_write_json(run / "split.json", split.as_dict())


def run_overrides(run: str | Path) -> dict:
    """The training values a run changed from its profile's (``config.json``'s ``overrides``), less the
    ``RUNTIME`` ones (workers, device: they may differ on a resume); {} where ``run`` holds no run yet."""
    path = Path(run) / "config.json"
    if not path.exists():
        return {}
    have = json.loads(path.read_text()).get("overrides", {})
    return {k: v for k, v in have.items() if k not in TrainConfig.RUNTIME}


def read_split(run: str | Path) -> Split:
    """The train / val / test split a run was trained on (``RUN/split.json``, written by :func:`prepare_run`)."""
    path = Path(run) / "split.json"
    if not path.exists():
        raise RunError(f"{path}: missing - not a training run folder")
    return Split.from_dict(json.loads(path.read_text()))


HISTORY_FIELDS = ["epoch", "step", "size", "lr", "train_loss", "train_mask_loss", "train_depth_loss",
                  "val_loss", "val_mask_iou", "val_depth_rmse", "seconds"]


def write_history(run: Path, history: list[dict], steps_log: list[list]) -> None:
    """``history.csv`` (per epoch) and ``steps.csv`` (per log line: mean loss and its parts since the
    previous line, learning rate)."""
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


def read_history(run: str | Path):
    """``RUN/history.csv`` as a pandas DataFrame (one row per epoch)."""
    import pandas as pd

    path = Path(run) / "history.csv"
    if not path.exists():
        raise RunError(f"{path}: missing - has this run finished an epoch?")
    return pd.read_csv(path)
