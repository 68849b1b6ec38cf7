"""Chapter 13: evaluation on unseen rooms and people, prediction on new images, ONNX export.

``evaluate(run, dataset)`` writes ``RUN/metrics.json``: ``"test"`` holds the means over every test
composite, ``"groups"`` the same per group (``unseen_bg``: rooms never seen in training;
``unseen_fg``: people never seen; ``unseen_both``), ``"outline"`` how the predicted probability
follows the true alpha on the soft outline (:func:`~depthmask_utils.metrics.outline_calibration`),
and ``RUN/per_image.csv`` one row per test composite, for finding the worst cases. The model sees its inputs at the size it was trained at;
its outputs are resized back and scored against the labels at the dataset's own size.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import RunError, load_checkpoint, read_split
from .data import CompositeDataset, make_loader, to_inputs
from .errors import InputError
from .images import list_images
from .metrics import all_metrics, boundary_f, dice, iou, outline_calibration, outline_counts
from .models import build_model
from .precision import resolve_device
from .storage import atomic_write_bytes, atomic_write_json, encode_png

GROUPS = ("unseen_bg", "unseen_fg", "unseen_both")


def load_model(run: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """The trained model of a run folder (or a ``model.pt`` file) in eval mode, and its metadata."""
    path = Path(run)
    path = path / "model.pt" if path.is_dir() else path
    if not path.exists() and (path.parent / "checkpoints" / "last.pt").exists():
        raise RunError(f"{path}: missing - training has not finished; run the same train command again to resume")
    meta = load_checkpoint(path)
    if meta.get("kind") != "model":
        raise RunError(f"{path}: is a training checkpoint, not a finished model (RUN/model.pt)")
    model = build_model(meta["model"], stats=meta["stats"], **meta.get("options", {}))
    try:
        model.load_state_dict(meta["state_dict"])
    except RuntimeError as exc:
        raise RunError(f"{path}: weights do not fit model {meta['model']!r} ({str(exc).splitlines()[0]})") from None
    return model.to(device).eval(), meta


@torch.no_grad()
def predict_batch(model: torch.nn.Module, fg_bg: torch.Tensor, bg: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Float (N, 3, H, W) inputs in 0-1 at any H, W -> (mask probability, depth), both (N, 1, H, W).

    The model runs at ``size`` x ``size`` (what it was trained at); outputs are resized back.
    """
    h, w = fg_bg.shape[-2:]
    if (h, w) != (size, size):
        fg_bg = F.interpolate(fg_bg, size=(size, size), mode="area")
        bg = F.interpolate(bg, size=(size, size), mode="area")
    out = model(fg_bg, bg)
    logits, depth = out["mask"].float(), out["depth"].float()
    if (h, w) != (size, size):
        # Resize the logits, not the probabilities: the 0.5 contour then stays sharp instead of
        # being smeared by interpolating between 0 and 1 (+2 points of IoU at 64 -> 128 px).
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        depth = F.interpolate(depth, size=(h, w), mode="bilinear", align_corners=False)
    return torch.sigmoid(logits), depth


def _mean(d: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: round(float(v.mean()), 5) for k, v in d.items()} | {"n": int(next(iter(d.values())).numel())}


@torch.no_grad()
def evaluate(run: str | Path, dataset: str | Path, batch_size: int = 64, device: str = "auto",
             workers: int = 0, write: bool = True) -> dict:
    """Score the run's model on the test groups of ``dataset``; writes ``RUN/metrics.json``."""
    run, dataset = Path(run), Path(dataset)
    dev = resolve_device(device)
    model, meta = load_model(run, dev)
    split = read_split(run)
    per_group, rows, outline = {}, [], 0
    test_items = CompositeDataset(dataset, "test", split_spec=split).items
    for group in GROUPS:
        items = split.select(test_items, group)
        if not items:
            continue
        ds = CompositeDataset(dataset, items, split_spec=split)
        parts: dict[str, list] = {}
        for batch in make_loader(ds, batch_size, workers=workers):
            x = to_inputs(batch, dev)
            mask, depth = predict_batch(model, x["fg_bg"], x["bg"], meta["size"])
            outline = outline + outline_counts(mask, x["mask"])
            for k, v in all_metrics(mask, x["mask"], depth, x["depth"]).items():
                parts.setdefault(k, []).append(v.cpu())
        m = {k: torch.cat(v) for k, v in parts.items()}
        per_group[group] = m
        for i, c in enumerate(ds.items):
            rows.append({"id": c.id, "group": group, **{k: round(float(v[i]), 5) for k, v in m.items()}})
    everything = {k: torch.cat([g[k] for g in per_group.values()]) for k in next(iter(per_group.values()))}
    result = {"test": _mean(everything), "groups": {g: _mean(m) for g, m in per_group.items()},
              "model": meta["model"], "input_size": meta["size"], "dataset": str(dataset.resolve()),
              "label_size": int(ds.stored_size), "outline": outline_calibration(outline),
              "notes": "means of per-image metrics; masks binarised at 0.5; depth in 0-1 relative inverse depth; "
                       "abs_rel and delta1 on pixels with target > 0.05; outline: every test composite's soft "
                       "outline pixels (0 < alpha < 1) per alpha bin (metrics.outline_calibration)"}
    if write:
        atomic_write_json(run / "metrics.json", result)
        import pandas as pd

        atomic_write_bytes(run / "per_image.csv", pd.DataFrame(rows).to_csv(index=False).encode())
    return result


# --------------------------------------------------------------------------- predict on new images

def read_rgb(path: str | Path) -> np.ndarray:
    """Any image file -> uint8 (H, W, 3) RGB; a file that is not an image is named in the error."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return np.array(im.convert("RGB"))  # a writable copy: torch.from_numpy needs one
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable image ({exc.__class__.__name__})") from None


def pair_inputs(bg: str | Path, fg_bg: str | Path) -> list[tuple[Path, Path]]:
    """(bg, fg_bg) pairs: a file and a file, one bg for a folder of composites, or two folders
    matched by file name."""
    bg, fg_bg = Path(bg), Path(fg_bg)
    for p in (bg, fg_bg):
        if not p.exists():
            raise InputError(f"{p}: no such file or folder")
    if fg_bg.is_dir():
        comps = list_images(fg_bg)
        if not comps:
            raise InputError(f"{fg_bg}: no images")
        if bg.is_file():
            return [(bg, c) for c in comps]
        by_name = {p.stem: p for p in list_images(bg)}
        missing = [c.name for c in comps if c.stem not in by_name]
        if missing:
            raise InputError(f"{bg}: no background named like {missing[0]}" +
                             (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "") +
                             " - backgrounds are matched to composites by file name")
        return [(by_name[c.stem], c) for c in comps]
    if bg.is_dir():
        raise InputError(f"{bg}: a folder of backgrounds needs a folder of composites (got the file {fg_bg})")
    return [(bg, fg_bg)]


@torch.no_grad()
def predict(run: str | Path, bg: str | Path, fg_bg: str | Path, out: str | Path, device: str = "auto",
            log=print) -> list[Path]:
    """Write ``<name>_mask.png`` (probability x 255) and ``<name>_depth.png`` (8-bit, near = bright)
    for every composite, at the composite's own size. A background of another size is resized to
    the composite's, and said so."""
    dev = resolve_device(device)
    model, meta = load_model(run, dev)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for bg_path, comp_path in pair_inputs(bg, fg_bg):
        comp, back = read_rgb(comp_path), read_rgb(bg_path)
        if back.shape != comp.shape:
            from PIL import Image

            log(f"note: {bg_path} is {back.shape[1]}x{back.shape[0]}, {comp_path} is {comp.shape[1]}x{comp.shape[0]}: "
                "background resized to the composite's size")
            back = np.asarray(Image.fromarray(back).resize((comp.shape[1], comp.shape[0]), Image.BILINEAR))
        t = [torch.tensor(a).permute(2, 0, 1)[None].float().div(255).to(dev) for a in (comp, back)]
        mask, depth = predict_batch(model, t[0], t[1], meta["size"])
        for name, arr in (("mask", mask), ("depth", depth)):
            path = out / f"{comp_path.stem}_{name}.png"
            png = (arr[0, 0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
            atomic_write_bytes(path, encode_png(png))
            written.append(path)
    return written


# --------------------------------------------------------------------------- real photographs

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "grass", "brick", "gravel")


def photo_backgrounds(size: int, names: tuple[str, ...] = PHOTOS) -> dict[str, np.ndarray]:
    """Real photographs that ship with scikit-image (no download), centre-cropped to ``size``:
    uint8 (size, size, 3) each."""
    from PIL import Image
    import skimage.data

    from .backgrounds import center_crop_box

    out = {}
    for name in names:
        img = np.asarray(getattr(skimage.data, name)())
        img = np.repeat(img[..., None], 3, 2) if img.ndim == 2 else img[..., :3]
        im = Image.fromarray(img.astype(np.uint8))
        out[name] = np.asarray(im.resize((size, size), Image.LANCZOS, box=center_crop_box(*im.size)))
    return out


@torch.no_grad()
def real_photo_check(run: str | Path, dataset: str | Path, placements: int = 6, seed: int = 0,
                     device: str = "auto", people: str = "heldout") -> tuple["pd.DataFrame", list[dict]]:  # noqa: F821
    """Composites of the dataset's people on real photographs, scored with the trained model.

    The photos are not rooms the model has seen - not even rendered rooms - so this measures how far
    the mask transfers to real backgrounds. Masks are exact (we paste them); depth has no ground
    truth on a photo and is shown, not scored. ``people="heldout"`` uses only foregrounds the run
    never trained on. Returns (mean metrics per photo, examples for plotting).
    """
    import pandas as pd

    from .dataset import load_prepared, read_info
    from .compositing import composite, pyramids_for
    from .placement import fit_box

    run, dataset = Path(run), Path(dataset)
    dev = resolve_device(device)
    model, meta = load_model(run, dev)
    info = read_info(dataset)
    size, scale = int(info["params"]["size"]), tuple(info["params"]["scale"])
    split = read_split(run)
    fg_ids = split.heldout_fg if people == "heldout" else tuple(range(info["counts"]["fg"]))
    pyramids = dict(zip(fg_ids, pyramids_for([load_prepared(dataset, "fg", j) for j in fg_ids], size, scale)))
    rng = np.random.default_rng(seed)
    rows, examples = [], []
    for name, bg in photo_backgrounds(size).items():
        comps, masks = [], []
        for _ in range(placements):
            j = int(rng.choice(fg_ids))
            w, h = fit_box(round(pyramids[j].aspect * 1000), 1000, size, rng.uniform(*scale))
            x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            c, m = composite(bg, pyramids[j].placed(int(rng.integers(2)), w, h), x, y)
            comps.append(c)
            masks.append(m)
        to_t = lambda a: torch.from_numpy(np.stack(a)).to(dev).float().div(255)  # noqa: E731
        fg_bg = to_t(comps).permute(0, 3, 1, 2)
        back = to_t([bg] * placements).permute(0, 3, 1, 2)
        target = to_t(masks)[:, None]
        prob, depth = predict_batch(model, fg_bg, back, meta["size"])
        m = {"mask_iou": iou(prob, target), "mask_dice": dice(prob, target), "mask_boundary_f": boundary_f(prob, target)}
        rows.append({"photo": name, **{k: round(float(v.mean()), 4) for k, v in m.items()}})
        examples.append({"photo": name, "fg_bg": fg_bg[0].cpu(), "bg": back[0].cpu(), "mask": target[0].cpu(),
                         "prob": prob[0].cpu(), "depth": depth[0].cpu()})
    table = pd.DataFrame(rows).set_index("photo")
    return table, examples


# --------------------------------------------------------------------------- export

class _Exported(torch.nn.Module):
    """What the ONNX file computes: (fg_bg, bg) in 0-1 -> (mask probability, depth)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, fg_bg: torch.Tensor, bg: torch.Tensor):
        """fg_bg, bg: float (N, 3, H, W) in 0..1; returns (mask probability, depth), each float
        (N, 1, H, W) in 0..1 (depth: relative inverse depth, 1 = nearest).
        """
        out = self.model(fg_bg, bg)
        return torch.sigmoid(out["mask"]), out["depth"]


def export_onnx(run: str | Path, out: str | Path, batch: int = 2) -> dict:
    """Export the run's model to ONNX (dynamic batch, the trained size) and check it with
    onnxruntime against PyTorch on random inputs; returns the largest absolute differences."""
    import warnings

    model, meta = load_model(run, "cpu")
    size = meta["size"]
    wrapped = _Exported(model).eval()
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, 3, size, size, generator=g), torch.rand(batch, 3, size, size, generator=g))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(wrapped, x, buf, input_names=["fg_bg", "bg"], output_names=["mask", "depth"],
                          dynamic_axes={n: {0: "batch"} for n in ("fg_bg", "bg", "mask", "depth")},
                          opset_version=17, dynamo=False)
    atomic_write_bytes(out, buf.getvalue())
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"fg_bg": x[0].numpy(), "bg": x[1].numpy()})
    with torch.no_grad():
        want = wrapped(*x)
    diff = {name: float(np.abs(a - b.numpy()).max()) for name, a, b in zip(("mask", "depth"), got, want)}
    return {"path": str(out), "size": size, "bytes": Path(out).stat().st_size, "max_abs_diff": diff}
