"""Chapter 05: ``mini``, a small monocular depth network that works offline.

The course cannot download Depth Anything V2 where there is no network, yet a student should see
what a *network* teacher's labels look like and how they go wrong. ``mini`` is that network: a
1.9M-parameter U-Net that looks at one RGB image and returns its relative inverse depth. It was
trained by this module (``python -m depthmask_utils.mini_teacher train``) on a sample world that the
course never uses (world seed 5), with the exact labels of the ``scene`` teacher, and its weights
(float16, about 4 MB) ship inside the package. So ``label-depth --teacher mini`` works anywhere.

It knows the sample world's rooms and people, nothing else: on your own photos it is a weak teacher
(Depth Anything V2 is the default there). Chapter 05 measures it against the exact depth.

The network and its loading live in :mod:`mini_net` (what :mod:`depth` needs to label with it);
this module trains it and measures it (:func:`train_mini_teacher`, :func:`teacher_error`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from .mini_net import ARCH, INPUT_SIZE, WEIGHTS, MiniDepthNet, MiniTeacher, load_mini_teacher  # noqa: F401 (its interface)
from .storage import atomic_path

# --------------------------------------------------------------------------- how good is a teacher?

def teacher_error(dataset: str | Path, teacher, n: int = 256, seed: int = 0, batch_size: int = 32) -> dict:
    """A teacher's per-composite labels against a dataset's exact (``scene``) labels.

    Draws ``n`` composites with ``seed``, labels each from its fg_bg image alone, and compares with the
    stored exact label (both 0-1, 1 = nearest) after the best per-image scale and shift, since a
    relative-depth teacher fixes neither. Returns ``rmse_aligned``, ``abs_rel`` and ``delta1`` (means
    over the composites), ``person_visible`` (share whose teacher label shows the person at least 0.03
    nearer than what is behind them, :func:`depth.person_contrast`), ``n``, ``per_image`` (id, aligned
    RMSE and contrast of each composite) and the arrays compared: ``images`` uint8 (n, S, S, 3),
    ``labels`` and ``exact`` uint8 (n, S, S) (255 = nearest), ``masks`` uint8 (n, S, S).
    """
    from .dataset import MANIFEST_CSV, member, read_info
    from .depth import normalise, person_contrast
    from .metrics import abs_rel, aligned, delta_accuracy, rmse
    from .storage import decode_image, open_shard, read_manifest, rows_by_shard

    dataset = Path(dataset)
    if read_info(dataset, need_depth=True)["depth"]["teacher"] != "scene":
        raise ValueError(f"{dataset}: teacher_error needs a dataset labelled by the exact 'scene' teacher")
    rows = read_manifest(dataset / MANIFEST_CSV)
    pick = [rows[i] for i in sorted(np.random.default_rng(seed).choice(len(rows), min(n, len(rows)), replace=False))]
    imgs, masks, exact, rows_in_order = [], [], [], []
    for shard, srows in rows_by_shard(pick).items():
        with open_shard(dataset / shard) as zf:
            for r in srows:
                rows_in_order.append(r)
                imgs.append(decode_image(zf.read(member("fg_bg", r["id"]))))
                masks.append(decode_image(zf.read(member("mask", r["id"]))))
                exact.append(decode_image(zf.read(member("depth", r["id"]))))
    pred = np.concatenate([teacher.predict(np.stack(imgs[i:i + batch_size])) for i in range(0, len(imgs), batch_size)])
    labels = np.stack([normalise(p)[0] for p in pred])  # what label-depth would store
    p = torch.from_numpy(labels).float()[:, None] / 255
    t = torch.from_numpy(np.stack(exact)).float()[:, None] / 255
    contrast = [person_contrast(m, lab) for m, lab in zip(masks, labels)]
    shown = [c for c in contrast if c is not None]
    per_image = aligned(rmse, p, t)
    return {"n": len(pick), "rmse_aligned": float(per_image.mean()),
            "abs_rel": float(aligned(abs_rel, p, t).mean()), "delta1": float(aligned(delta_accuracy, p, t).mean()),
            "person_visible": float(np.mean([c >= 0.03 for c in shown])) if shown else 0.0,
            "per_image": {"id": [r["id"] for r in rows_in_order], "rmse_aligned": per_image.tolist(),
                          "contrast": contrast},
            "images": np.stack(imgs), "labels": labels, "exact": np.stack(exact), "masks": np.stack(masks)}


# --------------------------------------------------------------------------- training it

def _room_depths(dataset: Path, size: int) -> np.ndarray:
    """Exact inverse depth of every prepared background, normalised per room: uint8 (n_bg, S, S)."""
    from .dataset import read_info
    from .depth import normalise, room_depth

    n_bg = int(read_info(dataset)["counts"]["bg"])
    return np.stack([normalise(room_depth(dataset, b, size))[0] for b in range(n_bg)])


def train_mini_teacher(dataset: str | Path, out: str | Path, minutes: float = 20.0, batch_size: int = 16,
                       lr: float = 2e-3, room_share: float = 0.25, seed: int = 0, log=print) -> dict:
    """Train :class:`MiniDepthNet` on a ``scene``-labelled sample dataset for ``minutes`` and save it.

    Each batch mixes composites (the person at their foot-point depth) with empty rooms
    (``room_share`` of the items: what ``bg-plus-foreground`` asks the teacher for), mirrored at
    random. Loss: chapter 10's DenseDepth loss (L1 + SSIM + image gradients). One-cycle schedule
    over the steps that fit in ``minutes`` (planned from the first 20 steps), bfloat16 autocast where
    the CPU computes it (:func:`train.amp_enabled`). Writes ``out`` (float16 weights, the
    architecture and what it was trained on); returns the training summary.
    """
    from .data import CompositeDataset
    from .dataset import read_composites
    from .losses import dense_depth_loss
    from .config import TrainConfig
    from .train import amp_dtype, amp_enabled, one_cycle

    dataset, out = Path(dataset), Path(out)
    torch.manual_seed(seed)
    ds = CompositeDataset(dataset, read_composites(dataset), size=INPUT_SIZE, seed=seed)  # every room: the
    # course's own worlds are other seeds, so nothing the teacher is scored on is in here
    rooms = torch.from_numpy(_room_depths(dataset, INPUT_SIZE)).float()[:, None] / 255
    net = MiniDepthNet(**ARCH).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    device = torch.device("cpu")
    use_amp = amp_enabled(device, TrainConfig())
    rng = np.random.default_rng(seed)

    def step(batch, sched=None) -> float:
        x = batch["fg_bg"].float() / 255
        y = batch["depth"].float() / 255
        bgs = torch.tensor([ds.items[i].bg for i in batch["_idx"]])
        room = torch.from_numpy(rng.random(len(x)) < room_share)
        x = torch.where(room.view(-1, 1, 1, 1), batch["bg"].float() / 255, x)
        y = torch.where(room.view(-1, 1, 1, 1), rooms[bgs], y)
        flip = torch.from_numpy(rng.random(len(x)) < 0.5).view(-1, 1, 1, 1)
        x, y = torch.where(flip, x.flip(-1), x), torch.where(flip, y.flip(-1), y)
        with torch.autocast("cpu", dtype=amp_dtype(device), enabled=use_amp):
            pred = net(x.contiguous(memory_format=torch.channels_last))
        loss = dense_depth_loss(pred.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        return float(loss.detach())

    def batches():
        while True:
            for i in range(0, len(ds) - batch_size + 1, batch_size):
                idx = order[i:i + batch_size]
                b = ds.batch(idx)
                b["_idx"] = idx
                yield b
            order[:] = rng.permutation(len(ds))

    order = rng.permutation(len(ds))
    it = batches()
    t0 = time.perf_counter()
    for _ in range(20):  # warm-up at a low rate, and the time per step for the plan
        for g in opt.param_groups:
            g["lr"] = lr / 25
        step(next(it))
    per_step = (time.perf_counter() - t0) / 20
    total = max(1, int((minutes * 60 - (time.perf_counter() - t0)) / per_step))
    sched = one_cycle(opt, lr, total)
    log(f"mini teacher: {len(ds)} composites + {len(rooms)} rooms, {per_step:.3f} s/step, {total} steps planned")
    losses = []
    for s in range(total):
        losses.append(step(next(it), sched))
        if (s + 1) % max(1, total // 10) == 0:
            log(f"  step {s + 1}/{total}: loss {np.mean(losses[-50:]):.4f} ({(time.perf_counter() - t0) / 60:.1f} min)")
    summary = {"steps": total + 20, "batch_size": batch_size, "lr": lr, "room_share": room_share, "seed": seed,
               "minutes": round((time.perf_counter() - t0) / 60, 2), "final_loss": float(np.mean(losses[-100:])),
               "trained_on": str(dataset), "input_size": INPUT_SIZE}
    with atomic_path(out) as tmp:  # the shipped file is replaced whole or not at all
        torch.save({"model": {k: v.half() for k, v in net.state_dict().items()}, "arch": ARCH, "summary": summary}, tmp)
    return summary


def main(argv: list[str] | None = None) -> None:
    """``python -m depthmask_utils.mini_teacher train|check``: how the shipped weights were made and checked."""
    from .pipeline import ensure_labelled_world

    p = argparse.ArgumentParser(prog="python -m depthmask_utils.mini_teacher", description=main.__doc__)
    p.add_argument("command", choices=["train", "check"])
    p.add_argument("--work", default="data/mini_teacher", help="where the training and check worlds are built")
    p.add_argument("--world-seed", type=int, default=5, help="the sample world it learns from (train)")
    p.add_argument("--check-seed", type=int, default=11, help="a sample world it never saw (check)")
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--out", default=str(WEIGHTS))
    a = p.parse_args(argv)
    if a.command == "train":
        data = ensure_labelled_world(Path(a.work) / f"world{a.world_seed}", seed=a.world_seed, n_fg=24)
        print(train_mini_teacher(data, a.out, a.minutes))
    data = ensure_labelled_world(Path(a.work) / f"world{a.check_seed}", seed=a.check_seed, n_fg=8)
    teacher = load_mini_teacher(path=a.out)
    t0 = time.perf_counter()
    err = teacher_error(data, teacher, n=512)
    err = {k: round(v, 4) if isinstance(v, float) else v for k, v in err.items() if k in ("n", "rmse_aligned",
                                                                                        "abs_rel", "delta1", "person_visible")}
    print(f"on world seed {a.check_seed} (never seen), per composite: {err} "
          f"({err['n'] / (time.perf_counter() - t0):.0f} composites/s with the comparison)")
    print(f"target aligned RMSE <= 0.08: {'met' if err['rmse_aligned'] <= 0.08 else 'MISSED'}; "
          f"person visible >= 90 %: {'met' if err['person_visible'] >= 0.9 else 'MISSED'}")


if __name__ == "__main__":
    main()
