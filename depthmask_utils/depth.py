"""Chapter 05: depth labels from a pretrained teacher.

Teachers (:data:`TEACHERS`):

* ``depth-anything-v2-small`` (default on a GPU): Depth Anything V2 Small, 24.8M parameters,
  Apache-2.0, through ``transformers``.
* ``dpt-hybrid-midas``: MiDaS v3 DPT-Hybrid (ViT-Hybrid + BiT), the MiDaS family; slower.
* ``scene``: the sample world's exact depth - no network, no weights, exact ground truth.

Both network teachers load by hub id (Colab downloads them) or from a local folder
(``--teacher-path``). For offline tests the *same architecture* is built from a config with
random weights (``weights="random"``): the code path and the speed are real, the maps are noise.

Labels are **relative inverse depth** (near = bright), normalised per image to 0..255 and stored
as lossless 8-bit PNG ``depth/<id>.png`` in the composite's shard; the raw per-image range
(``depth_lo``, ``depth_hi``, in the teacher's own units) goes into the manifest, so
``raw = depth_lo + png / 255 * (depth_hi - depth_lo)``.

Two labelling modes:

* ``per-composite``: the teacher sees every fg_bg image (what the assignment asks).
* ``bg-plus-foreground``: the teacher sees each background once; the pasted person gets the
  background's inverse depth at their *foot point* - the lowest opaque row of the mask - as a
  person standing there would. 4,000x fewer teacher calls on the full dataset.

``scene`` always uses the foot-point rule on the exact depth (the person is not part of the 3-D
scene, so there is nothing else to look at).
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .backgrounds import center_crop_box
from .dataset import DATASET_JSON, LABELS_MEMBER, MANIFEST_CSV, load_prepared, member, member_pattern
from .config import Profile, as_profile, from_profile
from .errors import DatasetError, TeacherUnavailable
from .parallel import run_tasks
from .sample import read_depth_mm
from .storage import (MANIFEST_FIELDS, atomic_write_bytes, atomic_write_json, decode_image, encode_png, open_shard, read_json,
                      read_manifest, remove_stale_temporaries, rows_by_shard, write_manifest, write_shard)

MODES = ("per-composite", "bg-plus-foreground")


@dataclass(frozen=True)
class TeacherSpec:
    """A depth teacher: hub id (None for the exact ``scene`` depth), model family, per-channel
    ``mean`` and ``std`` for 0-1 RGB input, the multiple the input side must be, licence and, for
    models that accept only one size, ``fixed_input``.
    """
    name: str
    hub_id: str | None
    family: str  # "depth_anything", "dpt" or "scene"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    multiple: int = 14  # input side must be a multiple of this
    licence: str = ""
    fixed_input: int | None = None  # the hybrid DPT only accepts its training size


TEACHERS = {
    "depth-anything-v2-small": TeacherSpec("depth-anything-v2-small", "depth-anything/Depth-Anything-V2-Small-hf",
                                           "depth_anything", licence="Apache-2.0"),
    "dpt-hybrid-midas": TeacherSpec("dpt-hybrid-midas", "Intel/dpt-hybrid-midas", "dpt", (0.5, 0.5, 0.5),
                                    (0.5, 0.5, 0.5), multiple=32, licence="Apache-2.0 (MIT upstream)", fixed_input=384),
    "mini": TeacherSpec("mini", None, "mini", multiple=32, licence="trained by this course on its sample world"),
    "scene": TeacherSpec("scene", None, "scene", licence="exact depth of the sample world"),
}


def _transformers():
    """Import transformers without its tqdm "IProgress not found" warning in notebooks (it names
    this machine's install path and says nothing about the teacher)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        import transformers
    return transformers


def teacher_config(name: str, tiny: bool = False):
    """The transformers config of a teacher's architecture, written out so no download is needed.

    ``tiny=True`` keeps the architecture but shrinks widths and depths - for fast unit tests only.
    """
    tf = _transformers()
    DepthAnythingConfig, Dinov2Config, DPTConfig = tf.DepthAnythingConfig, tf.Dinov2Config, tf.DPTConfig

    if name == "depth-anything-v2-small":
        backbone = Dinov2Config(image_size=518, patch_size=14, hidden_size=384, num_attention_heads=6,
                                num_hidden_layers=12, out_indices=[3, 6, 9, 12], reshape_hidden_states=False,
                                apply_layernorm=True)
        if tiny:
            backbone = Dinov2Config(image_size=518, patch_size=14, hidden_size=32, num_attention_heads=2,
                                    num_hidden_layers=4, intermediate_size=64, out_indices=[1, 2, 3, 4],
                                    reshape_hidden_states=False, apply_layernorm=True)
            return DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32,
                                       neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8)
        return DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=384,
                                   neck_hidden_sizes=[48, 96, 192, 384], fusion_hidden_size=64, head_hidden_size=32,
                                   depth_estimation_type="relative")
    if name == "dpt-hybrid-midas":
        if tiny:
            return DPTConfig(is_hybrid=True, hidden_size=64, num_hidden_layers=4, num_attention_heads=2,
                             intermediate_size=128, backbone_out_indices=[0, 1, 2, 3],
                             neck_hidden_sizes=[256, 512, 64, 64], fusion_hidden_size=32, image_size=384)
        return DPTConfig(is_hybrid=True, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         backbone_out_indices=[2, 5, 8, 11], neck_hidden_sizes=[256, 512, 768, 768],
                         fusion_hidden_size=256, readout_type="project", image_size=384)
    raise ValueError(f"{name!r} has no network architecture; teachers: {', '.join(TEACHERS)}")


def _how_to_provide(spec: TeacherSpec) -> str:
    return (f"on Colab or any machine online it downloads by itself; offline, download it elsewhere with "
            f"`huggingface-cli download {spec.hub_id} --local-dir DIR`, copy DIR here and pass "
            f"--teacher-path DIR (teacher_path=DIR in the notebook), or use --teacher scene")


class HFTeacher:
    """A transformers depth model with batched, GPU-friendly preprocessing.

    ``predict`` takes uint8 (N, H, W, 3) RGB and returns float32 (N, H, W) relative inverse depth
    (larger = nearer) in the model's own units, resized back to (H, W).
    """

    def __init__(self, spec: TeacherSpec, model, input_size: int, device: str = "cpu", fp16: bool | None = None,
                 weights: str = "pretrained"):
        import torch

        from .precision import amp_dtype

        self.spec, self.weights = spec, weights
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.input_size = spec.fixed_input or max(spec.multiple, int(round(input_size / spec.multiple)) * spec.multiple)
        # Mixed precision by default on a GPU: bfloat16 where it has bfloat16 tensor cores, float16 on
        # older ones (a T4); ``fp16`` False keeps float32, True forces the device's autocast type.
        self.fp16 = (self.device.type == "cuda") if fp16 is None else fp16
        self.dtype = amp_dtype(self.device) if self.fp16 else torch.float32
        self.mean = torch.tensor(spec.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(spec.std, device=self.device).view(1, 3, 1, 1)
        self.calls = 0

    # The teacher interface, shared with SceneTeacher: ``exact`` teachers know the background's depth
    # without looking at composites; ``parallel`` ones can run in worker processes (no model to share).
    exact = False
    parallel = False

    def background(self, dataset: str | Path, bg: int, size: int) -> np.ndarray:
        """The teacher's inverse depth of prepared background ``bg``: float32 (size, size)."""
        return self.predict(load_prepared(dataset, "bg", bg)[None])[0]

    @property
    def name(self) -> str:
        """The teacher's name, a key of :data:`TEACHERS`."""
        return self.spec.name

    def preprocess(self, images: np.ndarray):
        """uint8 (N, H, W, 3) -> normalised float32 (N, 3, S, S) on the teacher's device.

        Bicubic resize to the teacher's square input and ImageNet-style normalisation, as the
        transformers image processor does for square images, but batched on the device.
        """
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bicubic", align_corners=False)
        return (x.clamp(0, 1) - self.mean) / self.std

    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) RGB -> float32 (N, H, W) relative inverse depth (larger = nearer), model units.

        Runs at the square ``input_size`` (under autocast in ``self.dtype`` on a GPU), resizes bilinearly back
        to (H, W), and adds N to ``calls``.
        """
        import torch
        import torch.nn.functional as F

        h, w = images.shape[1:3]
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.dtype, enabled=self.fp16):
            out = self.model(pixel_values=self.preprocess(images)).predicted_depth
        out = F.interpolate(out[:, None].float(), size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        self.calls += len(images)
        return out.cpu().numpy().astype(np.float32)


def load_teacher(name: str, weights: str = "pretrained", path: str | Path | None = None, device: str = "cpu",
                 input_size: int = 518, fp16: bool | None = None, tiny: bool = False) -> HFTeacher:
    """Build a network teacher.

    Args:
        name: a key of :data:`TEACHERS` other than ``scene``.
        weights: ``"pretrained"`` (from ``path`` or the hub) or ``"random"`` (architecture from
            :func:`teacher_config`, no download - for offline tests and speed measurements).
        path: a local folder holding the model (``config.json`` + weights).
        input_size: the square side the teacher sees (rounded to its patch multiple).
    """
    if name not in TEACHERS or TEACHERS[name].hub_id is None:
        raise ValueError(f"unknown transformers teacher {name!r}; choose one of "
                         f"{', '.join(k for k, v in TEACHERS.items() if v.hub_id)}")
    spec = TEACHERS[name]
    try:
        import torch  # noqa: F401

        AutoModelForDepthEstimation = _transformers().AutoModelForDepthEstimation
    except ImportError as exc:
        raise TeacherUnavailable(f"teacher {name}: needs torch and transformers ({exc}); "
                                 "pip install -r requirements.txt") from None
    if weights == "random":
        torch.manual_seed(0)
        model = AutoModelForDepthEstimation.from_config(teacher_config(name, tiny=tiny))
    elif weights == "pretrained":
        source = str(path) if path else spec.hub_id
        if path and not Path(path).is_dir():
            raise TeacherUnavailable(f"{path}: teacher folder not found; {_how_to_provide(spec)}")
        try:
            model = AutoModelForDepthEstimation.from_pretrained(source)
        except Exception as exc:  # offline hub, missing files, wrong folder: all end here
            raise TeacherUnavailable(f"{source}: cannot load teacher {name} ({type(exc).__name__}: "
                                     f"{str(exc).splitlines()[0][:200]}); {_how_to_provide(spec)}") from None
    else:
        raise ValueError("weights must be 'pretrained' or 'random'")
    return HFTeacher(spec, model, input_size, device, fp16, weights)


# --------------------------------------------------------------------------- scene teacher

def scene_inverse_depth(dataset: str | Path, bg: int, size: int) -> np.ndarray:
    """Exact inverse depth (1/m) of prepared background ``bg``: float32 (size, size).

    Finds ``bg_depth/<stem>.png`` beside the background folder recorded in dataset.json, and
    applies the same centre crop and resize as chapter 02.
    """
    info = read_json(Path(dataset) / DATASET_JSON)
    src = info["inputs"]["bg"][bg]["file"]
    depth_path = _exact_depth_dir(info) / (Path(src).stem + ".png")
    if not depth_path.exists():
        raise TeacherUnavailable(f"{depth_path}: exact depth not found - teacher 'scene' works only on "
                                 "backgrounds made by `python -m depthmask_utils sample`; use a network teacher")
    z = read_depth_mm(depth_path)
    inv = Image.fromarray(1.0 / np.maximum(z, 1e-3), "F")
    return np.asarray(inv.resize((size, size), Image.BILINEAR, box=center_crop_box(*inv.size)), dtype=np.float32)


def _exact_depth_dir(info: dict) -> Path:
    """Where the sample world keeps its exact depth: ``bg_depth/`` beside the backgrounds' folder."""
    return Path(info["inputs"]["bg_dir"]).parent / "bg_depth"


def has_exact_depth(dataset: str | Path) -> bool:
    """Whether the backgrounds of ``dataset`` come with the sample world's exact depth (``bg_depth/``)."""
    return _exact_depth_dir(read_json(Path(dataset) / DATASET_JSON)).is_dir()


class SceneTeacher:
    """The sample world's exact depth, behind the same interface as the network teachers.

    It never looks at a composite: the background's inverse depth is known exactly, and the person
    gets the depth at their foot point (``paste_person_depth``) whichever mode is asked for.
    """

    spec = TEACHERS["scene"]
    name = "scene"
    weights = "exact"
    input_size = None
    calls = 0
    exact = True
    parallel = True

    def background(self, dataset: str | Path, bg: int, size: int) -> np.ndarray:
        """Exact inverse depth (1/m) of prepared background ``bg``: float32 (size, size)."""
        return scene_inverse_depth(dataset, bg, size)


def make_teacher(name: str, weights: str = "pretrained", path: str | Path | None = None, device: str | None = None,
                 input_size: int = 518) -> "HFTeacher | SceneTeacher":
    """The teacher called ``name``: :class:`SceneTeacher` for ``scene``, the shipped ``mini`` network
    (:func:`mini_net.load_mini_teacher`, always at the 128 px it was trained at), else :func:`load_teacher`."""
    if name == SceneTeacher.name:
        return SceneTeacher()
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if name == "mini":
        from .mini_net import load_mini_teacher

        return load_mini_teacher(weights, path, device)
    return load_teacher(name, weights, path, device, input_size)


# --------------------------------------------------------------------------- labelling rules

def foot_point(mask: np.ndarray, threshold: int = 128) -> tuple[int, int] | None:
    """(x, y) of the person's feet: the lowest row with opaque mask pixels, at their mean column."""
    rows = np.flatnonzero((mask >= threshold).any(axis=1))
    if rows.size == 0:
        return None
    y = int(rows[-1])
    return int(round(np.flatnonzero(mask[y] >= threshold).mean())), y


def paste_person_depth(bg_inv: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Inverse depth of a composite from its background's: the person stands at their foot point.

    ``bg_inv`` float32 (H, W), ``mask`` uint8 (H, W). The person gets the background's value at
    the foot point (a flat figure facing the camera), blended by the soft mask at the edge.
    """
    fp = foot_point(mask)
    if fp is None:
        return bg_inv.copy()
    a = mask.astype(np.float32) / 255.0
    return bg_inv * (1 - a) + bg_inv[fp[1], fp[0]] * a


def normalise(raw: np.ndarray, top: int = 255) -> tuple[np.ndarray, float, float]:
    """Per-image normalisation to uint8 (``top`` 255) or uint16 (``top`` 65535): returns (png array
    (H, W), lo, hi) with ``top`` = nearest."""
    lo, hi = float(raw.min()), float(raw.max())
    scaled = (raw - lo) / (hi - lo) if hi > lo else np.zeros_like(raw)
    return np.clip(scaled * top + 0.5, 0, top).astype(np.uint8 if top == 255 else np.uint16), lo, hi


def denormalise(png: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Back from the stored uint8 to the teacher's raw units (float32)."""
    return lo + png.astype(np.float32) / 255.0 * (hi - lo)


# --------------------------------------------------------------------------- the labelling run

@dataclass
class LabelResult:
    """Summary of :func:`label_depth`: teacher, mode and weights used, composites in the dataset,
    shards labelled and images the teacher saw in this call, and the labelling time in seconds.
    """
    teacher: str
    mode: str
    weights: str
    composites: int
    shards_labelled: int  # by this run
    teacher_images: int  # images the teacher saw in this run
    seconds: float

    def __repr__(self) -> str:
        return (f"LabelResult(teacher={self.teacher}, mode={self.mode}, weights={self.weights}: "
                f"{self.composites} composites labelled)")


def _read_labels_member(zf) -> dict | None:
    if LABELS_MEMBER not in zf.namelist():
        return None
    rows = list(csv.DictReader(io.StringIO(zf.read(LABELS_MEMBER).decode())))
    return {"teacher": rows[0]["teacher"] if rows else "", "mode": rows[0]["mode"] if rows else "", "rows": rows}


@dataclass
class ShardJob:
    """One shard to label: what a worker process needs, and nothing else."""
    dataset: Path
    shard: str
    rows: list
    teacher: "HFTeacher | SceneTeacher"
    mode: str
    size: int
    batch_size: int


def label_shard(job: ShardJob) -> tuple[list[tuple[str, bytes]], list[dict]]:
    """Depth members and label records for one shard (does not write)."""
    rows, teacher, shard = job.rows, job.teacher, job.shard
    labels: list[tuple[str, bytes]] = []
    records = []
    with open_shard(job.dataset / shard) as zf:
        def read(category: str, row: dict) -> np.ndarray:
            name = member(category, row["id"])
            return decode_image(zf.read(name), f"{shard}:{name}")

        if teacher.exact or job.mode == "bg-plus-foreground":
            bg_inv = teacher.background(job.dataset, int(rows[0]["bg"]), job.size)
            raws = (paste_person_depth(bg_inv, read("mask", r)) for r in rows)
        else:
            def batched():
                for i in range(0, len(rows), job.batch_size):
                    yield from teacher.predict(np.stack([read("fg_bg", r) for r in rows[i:i + job.batch_size]]))
            raws = batched()
        for r, raw in zip(rows, raws):
            png, lo, hi = normalise(raw)
            labels.append((member("depth", r["id"]), encode_png(png)))
            records.append({"id": r["id"], "depth_lo": f"{lo:.6g}", "depth_hi": f"{hi:.6g}"})
    return labels, records


def _relabel_shard(job: ShardJob) -> int:
    """Label one shard and rewrite it atomically with its depth members and labels record."""
    labels, records = label_shard(job)
    with open_shard(job.dataset / job.shard) as zf:
        keep = [(n, zf.read(n)) for n in zf.namelist() if not n.startswith("depth/")]
    buf = io.StringIO()
    w = csv.DictWriter(buf, ["id", "depth_lo", "depth_hi", "teacher", "mode", "weights"], lineterminator="\n")
    w.writeheader()
    w.writerows({**rec, "teacher": job.teacher.name, "mode": job.mode, "weights": job.teacher.weights}
                for rec in records)
    write_shard(job.dataset / job.shard, keep + labels + [(LABELS_MEMBER, buf.getvalue().encode())])
    return len(job.rows)


def label_depth(dataset: str | Path, teacher: str | None = None, mode: str | None = None,
                batch_size: int | None = None, device: str | None = None, weights: str = "pretrained",
                teacher_path: str | Path | None = None, input_size: int | None = None, overwrite: bool = False,
                progress: bool = True, teacher_model: HFTeacher | None = None,
                profile: Profile | str | None = None) -> LabelResult:
    """Add ``depth/<id>.png`` to every shard of ``dataset`` and depth columns to the manifest.

    ``teacher``, ``mode`` (the profile's ``depth_mode``), ``batch_size`` and ``input_size`` (its
    ``teacher_input``) left None are ``profile``'s (a :class:`config.Profile` or its name; ``sample``
    when None).

    ``weights="random"`` (the teacher's architecture, untrained: noise) must be asked for, and is
    refused for ``profile="full"``, where it would label the assignment's dataset with noise.
    Each shard is rewritten atomically with its depth members and a ``depth/_labels.csv`` record;
    a re-run skips shards already labelled by the same teacher and mode, so a killed run resumes.
    """
    from tqdm import tqdm

    profile = as_profile(profile or "sample")
    teacher, mode, batch_size, input_size = from_profile(profile, teacher=teacher, depth_mode=mode,
                                                         batch_size=batch_size, teacher_input=input_size)
    dataset = Path(dataset)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    if teacher not in TEACHERS:
        raise ValueError(f"unknown teacher {teacher!r}; choose one of {', '.join(TEACHERS)}")
    if weights == "random" and profile.name == "full" and teacher != SceneTeacher.name:
        raise TeacherUnavailable(f"{dataset}: random teacher weights are refused on the full profile: they would "
                                 "label the whole dataset with noise. Use pretrained weights (the default), or "
                                 "--teacher mini offline")
    info = read_json(dataset / DATASET_JSON)
    rows = read_manifest(dataset / MANIFEST_CSV)
    size = info["params"]["size"]
    by_shard = rows_by_shard(rows)

    remove_stale_temporaries(dataset / "shards")
    want_weights = teacher_model.weights if teacher_model else ("exact" if teacher == SceneTeacher.name else weights)
    todo = []
    for shard, srows in by_shard.items():
        with open_shard(dataset / shard) as zf:
            done = _read_labels_member(zf)
        if done and not overwrite:
            done_weights = done["rows"][0].get("weights", "") if done["rows"] else ""
            if (done["teacher"], done["mode"]) != (teacher, mode) or done_weights not in ("", want_weights):
                raise DatasetError(f"{dataset / shard}: already labelled by {done['teacher']} ({done['mode']}, "
                                   f"weights: {done_weights or 'unrecorded'}); pass --overwrite to relabel with "
                                   f"{teacher} ({mode}, weights: {want_weights})")
            continue
        todo.append(shard)

    model = None  # loaded only if there is work: a finished dataset needs no download
    if todo:
        model = teacher_model or make_teacher(teacher, weights, teacher_path, device, input_size)
    tasks = [ShardJob(dataset, shard, by_shard[shard], model, mode, size, batch_size) for shard in todo]
    t0 = time.perf_counter()
    with tqdm(total=len(rows), initial=len(rows) - sum(len(by_shard[s]) for s in todo), unit="img",
              desc=f"depth ({teacher})", disable=not progress) as bar:
        # The exact depth needs no model, so shards are labelled in parallel; a network teacher
        # stays in this process, on its device, batching within each shard.
        for n in run_tasks(_relabel_shard, tasks, None if model is None or model.parallel else 1, ordered=False):
            bar.update(n)
    seconds = time.perf_counter() - t0
    labelled_images = model.calls if model else 0  # before the room depths below

    # Gather the per-image ranges from every shard into the manifest, then mark dataset.json.
    ranges, teachers = {}, set()
    for shard in by_shard:
        with open_shard(dataset / shard) as zf:
            rec = _read_labels_member(zf)
        if rec is None:
            raise DatasetError(f"{dataset / shard}: not labelled - re-run label-depth")
        teachers.add((rec["teacher"], rec["mode"], rec["rows"][0].get("weights", "") if rec["rows"] else ""))
        ranges.update({r["id"]: (r["depth_lo"], r["depth_hi"]) for r in rec["rows"]})
    if len(teachers) > 1:
        raise DatasetError(f"{dataset}: shards labelled by different teachers/modes {sorted(teachers)}; "
                           "re-run with --overwrite")
    # What the shards say, not what this call asked for: a resumed run must not relabel noise as pretrained.
    used_weights = next(iter(teachers))[2] if teachers else ""
    used_weights = used_weights or (model.weights if model else want_weights)
    missing = [r["id"] for r in rows if r["id"] not in ranges]
    if missing:
        raise DatasetError(f"{dataset}: {len(missing)} composites have no depth label, e.g. {missing[0]}")
    for r in rows:
        r["depth_lo"], r["depth_hi"] = ranges.pop(r["id"])
    fields = [f for f in rows[0] if f not in ("depth_lo", "depth_hi")] if rows else MANIFEST_FIELDS
    write_manifest(dataset / MANIFEST_CSV, rows, fields + ["depth_lo", "depth_hi"])
    if teacher != SceneTeacher.name:
        store_room_depths(dataset, lambda: teacher_model or model or make_teacher(teacher, weights, teacher_path, device,
                                                                                  input_size),
                          size, {"teacher": teacher, "weights": used_weights})
    visible = person_visibility(dataset, rows)
    info = read_json(dataset / DATASET_JSON)
    info["depth"] = {"teacher": teacher, "mode": mode, "weights": used_weights,
                     "input_size": model.input_size if model else (None if teacher == SceneTeacher.name else input_size),
                     "member": member_pattern("depth"),
                     "encoding": "uint8 PNG of relative inverse depth, normalised per image (255 = nearest); "
                                 "raw = depth_lo + png/255 * (depth_hi - depth_lo), columns in manifest.csv",
                     "person_visible": {k: visible[k] for k in ("share", "checked", "margin")}}
    atomic_write_json(dataset / DATASET_JSON, info)
    return LabelResult(teacher, mode, used_weights, len(rows), len(todo), labelled_images, seconds)


ROOM_DEPTH = "room_depth"  # DATASET/room_depth/<bg>.png: a network teacher's depth of each empty background


def store_room_depths(dataset: Path, get_teacher, size: int, made_by: dict) -> int:
    """Write the teacher's inverse depth of every empty background that has none yet, as 16-bit PNG
    normalised per room (``room_depth/<bg:03d>.png``): what on-the-fly composites (chapter 08) paste
    people into. Normalising loses nothing they need, since the foot-point rule commutes with any
    positive scale and shift. ``get_teacher()`` is called only if a room is missing. ``made_by``
    (teacher and weights) is recorded in ``room_depth/teacher.json``; maps made by another teacher are
    replaced, never mixed in. Returns how many were written."""
    import shutil

    info = read_json(dataset / DATASET_JSON)
    folder = dataset / ROOM_DEPTH
    record = folder / "teacher.json"
    if folder.is_dir() and (not record.exists() or read_json(record) != made_by):
        shutil.rmtree(folder)  # another teacher's rooms: stale for these labels
    folder.mkdir(exist_ok=True)
    if not record.exists():
        atomic_write_json(record, made_by)
    todo = [b for b in range(int(info["counts"]["bg"])) if not (folder / f"{b:03d}.png").exists()]
    teacher = get_teacher() if todo else None
    for i in range(0, len(todo), 16):
        ids = todo[i:i + 16]
        for b, raw in zip(ids, teacher.predict(np.stack([load_prepared(dataset, "bg", b) for b in ids]))):
            buf = io.BytesIO()
            Image.fromarray(normalise(raw, 65535)[0]).save(buf, format="PNG")
            atomic_write_bytes(folder / f"{b:03d}.png", buf.getvalue())
    return len(todo)


def room_depth(dataset: str | Path, bg: int, size: int) -> np.ndarray:
    """Inverse depth of empty background ``bg``, float32 (size, size): exact for the sample world,
    else the labelling teacher's stored map (:func:`store_room_depths`), 0-1."""
    dataset = Path(dataset)
    if read_json(dataset / DATASET_JSON).get("depth", {}).get("teacher") == SceneTeacher.name:
        return scene_inverse_depth(dataset, bg, size)
    path = dataset / ROOM_DEPTH / f"{bg:03d}.png"
    if not path.exists():
        raise DatasetError(f"{path}: no room depth stored; re-run label-depth on {dataset} (it stores one per background)")
    im = Image.open(path)
    arr = np.asarray(im, dtype=np.float32) / 65535
    if arr.shape[0] != size:
        arr = np.asarray(Image.fromarray(arr, "F").resize((size, size), Image.BILINEAR), dtype=np.float32)
    return arr


# --------------------------------------------------------------------------- do the labels show the person?

def person_contrast(mask: np.ndarray, label: np.ndarray, ring: int = 3) -> float | None:
    """How much nearer the person is than what lies behind their upper body, on the 0-1 label scale.

    ``mask`` and ``label`` uint8 (H, W); labels are inverse depth, near = bright. Median label over
    the person minus the median over a ``ring``-pixel band just outside the upper half of the mask
    (the wall or furniture behind the torso). None for an empty mask.
    """
    import cv2

    person = mask >= 128
    rows = np.flatnonzero(person.any(axis=1))
    if rows.size == 0:
        return None
    upper = np.zeros_like(person)
    upper[rows[0]:(rows[0] + rows[-1]) // 2 + 1] = True
    grown = cv2.dilate(person.astype(np.uint8), np.ones((2 * ring + 1, 2 * ring + 1), np.uint8)).astype(bool)
    band = grown & ~(mask > 0) & upper
    if not band.any():
        return None
    return float(np.median(label[person]) - np.median(label[band])) / 255.0


def person_visibility(dataset: str | Path, rows: list[dict] | None = None, n: int = 2000, margin: float = 0.03,
                      seed: int = 0) -> dict:
    """Share of composites whose depth label shows the person in front of what is behind them.

    Checks ``n`` composites drawn with ``seed`` (all if fewer): a composite passes when
    :func:`person_contrast` >= ``margin``. People pasted onto a wall get the wall's depth by the
    foot-point rule and vanish into it; floor placement (chapter 03) is what keeps this share high.
    Returns ``{"share", "checked", "margin", "contrast": {id: value}}``.
    """
    dataset = Path(dataset)
    rows = rows if rows is not None else read_manifest(dataset / MANIFEST_CSV)
    pick = rows if len(rows) <= n else [rows[i] for i in sorted(np.random.default_rng(seed).choice(len(rows), n,
                                                                                                     replace=False))]
    contrast = {}
    for shard, srows in rows_by_shard(pick).items():
        with open_shard(dataset / shard) as zf:
            for r in srows:
                mask = decode_image(zf.read(member("mask", r["id"])), f"{shard}:{r['id']}")
                label = decode_image(zf.read(member("depth", r["id"])), f"{shard}:{r['id']}")
                c = person_contrast(mask, label)
                if c is not None:
                    contrast[r["id"]] = c
    share = float(np.mean([c >= margin for c in contrast.values()])) if contrast else 0.0
    return {"share": round(share, 4), "checked": len(contrast), "margin": margin, "contrast": contrast}


def uniform_vs_floor(dataset: str | Path, n: int = 200, seed: int = 0, room_depth=None, margin: float = 0.03) -> dict:
    """Chapter 05's measurement: does the person stand out in the depth label, placed uniformly vs as stored?

    Re-plans the dataset's own ``(bg, fg, flip, k)`` without floors (boxes anywhere in the frame, by
    :func:`overlay.build_plan` with the dataset's size, placements, scale and seed), composites and
    labels ``n`` of them (drawn with ``seed``) by the foot-point rule, and scores each with
    :func:`person_contrast`; ``n`` of the dataset's own labels are scored the same way
    (:func:`person_visibility`). ``room_depth(bg) -> float32 (S, S)`` inverse depth of an empty room;
    default: the sample world's exact depth (:func:`scene_inverse_depth`).

    Returns a dict: ``table`` (DataFrame: composites, share with contrast >= ``margin``, median
    contrast; rows ``uniform`` and ``this dataset (<placement>)``), ``contrast`` (the same two keys ->
    pandas Series id -> contrast on the 0-1 scale), ``items`` (id -> uint8 fg_bg (S, S, 3), mask (S, S),
    label (S, S) of the uniform composites), ``rooms`` (bg -> the room depth used), ``worst`` (id of
    the lowest uniform contrast) and ``vanished`` (id of the uniform contrast closest to 0).
    """
    import pandas as pd

    from .compositing import composite, pyramids_for
    from .placement import build_plan

    dataset = Path(dataset)
    info = read_json(dataset / DATASET_JSON)
    params, counts = info["params"], info["counts"]
    size = params["size"]
    room_depth = room_depth or (lambda bg: scene_inverse_depth(dataset, bg, size))
    fgs = [load_prepared(dataset, "fg", j) for j in range(counts["fg"])]
    uniform = pd.DataFrame(build_plan([(f.shape[1], f.shape[0]) for f in fgs], counts["bg"], size,
                                      params["placements"], tuple(params["scale"]), params["seed"],
                                      fg_per_bg=params.get("fg_per_bg")))  # no floors
    pyramids, rooms, items = pyramids_for(fgs, size, tuple(params["scale"])), {}, {}
    for r in uniform.sample(min(n, len(uniform)), random_state=seed).sort_values("bg").itertuples():
        fg_bg, mask = composite(load_prepared(dataset, "bg", r.bg), pyramids[r.fg].placed(r.flip, r.w, r.h), r.x, r.y)
        if r.bg not in rooms:  # one room depth per background, shared by its composites
            rooms[r.bg] = room_depth(r.bg)
        items[r.id] = (fg_bg, mask, normalise(paste_person_depth(rooms[r.bg], mask))[0])
    mode = info.get("placement", {}).get("mode", params.get("placement") or "uniform")
    contrast = {"uniform": pd.Series({i: person_contrast(m, lab) for i, (_, m, lab) in items.items()},
                                     dtype=float).dropna(),
                f"this dataset ({mode})": pd.Series(person_visibility(dataset, n=n, seed=seed)["contrast"],
                                                    dtype=float)}
    table = pd.DataFrame({"composites": {k: len(c) for k, c in contrast.items()},
                          f"person stands out (>= {margin:g})": {k: f"{(c >= margin).mean():.0%}"
                                                                 for k, c in contrast.items()},
                          "median contrast": {k: round(c.median(), 3) for k, c in contrast.items()}})
    u = contrast["uniform"]
    return {"table": table, "contrast": contrast, "items": items, "rooms": rooms,
            "worst": u.idxmin(), "vanished": u.abs().idxmin()}


# --------------------------------------------------------------------------- comparing the modes

def align_scale_shift(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares s, t so that s * pred + t best matches target (how relative depth is scored)."""
    A = np.stack([pred.ravel(), np.ones(pred.size)], 1).astype(np.float64)
    s, t = np.linalg.lstsq(A, target.ravel().astype(np.float64), rcond=None)[0]
    return (s * pred + t).astype(np.float32)


def compare_modes(dataset: str | Path, teacher: HFTeacher, n: int = 8, seed: int = 0) -> dict:
    """Label ``n`` random composites both ways with ``teacher`` and compare.

    Returns a dict with the ids, both label sets (float32 (n, H, W), per-image normalised 0..1),
    the exact labels when the sample world's depth is available, and a table of numbers:
    teacher images seen, seconds, and mean absolute difference on background and person pixels.
    """
    import pandas as pd

    dataset = Path(dataset)
    info = read_json(dataset / DATASET_JSON)
    size = info["params"]["size"]
    rows = read_manifest(dataset / MANIFEST_CSV)
    pick = [rows[i] for i in sorted(np.random.default_rng(seed).choice(len(rows), size=min(n, len(rows)),
                                                                       replace=False))]
    imgs, masks = [], []
    for r in pick:
        with open_shard(dataset / r["shard"]) as zf:
            imgs.append(decode_image(zf.read(member("fg_bg", r["id"]))))
            masks.append(decode_image(zf.read(member("mask", r["id"]))))
    imgs, masks = np.stack(imgs), np.stack(masks)

    t0, c0 = time.perf_counter(), teacher.calls
    per = teacher.predict(imgs)
    t_per, calls_per = time.perf_counter() - t0, teacher.calls - c0
    t0, c0 = time.perf_counter(), teacher.calls
    bgs = sorted({int(r["bg"]) for r in pick})
    bg_inv = dict(zip(bgs, teacher.predict(np.stack([load_prepared(dataset, "bg", b) for b in bgs]))))
    foot = np.stack([paste_person_depth(bg_inv[int(r["bg"])], m) for r, m in zip(pick, masks)])
    t_foot, calls_foot = time.perf_counter() - t0, teacher.calls - c0

    def norm01(a):
        return np.stack([normalise(x)[0] for x in a]).astype(np.float32) / 255.0

    per_n, foot_n = norm01(per), norm01(foot)
    person = masks >= 128
    table = [{"mode": "per-composite", "teacher images": calls_per, "seconds": round(t_per, 3)},
             {"mode": "bg-plus-foreground", "teacher images": calls_foot, "seconds": round(t_foot, 3)}]
    out = {"ids": [r["id"] for r in pick], "images": imgs, "masks": masks, "per_composite": per_n,
           "bg_plus_foreground": foot_n}
    try:
        exact = np.stack([paste_person_depth(scene_inverse_depth(dataset, int(r["bg"]), size), m)
                          for r, m in zip(pick, masks)])
        exact_n = norm01(exact)
        out["exact"] = exact_n
        for row, lab in zip(table, (per_n, foot_n)):
            aligned = np.stack([align_scale_shift(p, e) for p, e in zip(lab, exact_n)])
            err = np.abs(aligned - exact_n)
            row["MAE vs exact, background"] = round(float(err[~person].mean()), 4)
            row["MAE vs exact, person"] = round(float(err[person].mean()), 4)
    except TeacherUnavailable:
        pass
    diff = np.abs(per_n - foot_n)
    out["agreement"] = {"background": float(diff[~person].mean()), "person": float(diff[person].mean())}
    out["table"] = pd.DataFrame(table).set_index("mode")
    return out
