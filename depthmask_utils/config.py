"""Profiles and the training configuration: every parameter value, defined once, torch-free.

``sample`` is small enough for 2 CPU cores in seconds; ``full`` is the assignment:
100 bg x 100 fg x 2 flips x 20 placements = 400,000 composites at 224 x 224; ``smoke`` runs the
full profile's code paths at tiny counts. Notebooks read a profile with :func:`get_profile`
(papermill: ``-p profile full``), the CLI with ``--profile full``. Package functions take their
defaults from a profile (:func:`from_profile`); training values are a typed :class:`TrainConfig`,
changed by one rule everywhere (:func:`train_config`, ``train --set KEY=VALUE``).
"""

from __future__ import annotations

import difflib
import json
import os
import platform
import sys
import typing
from dataclasses import asdict, dataclass, field, replace

from .errors import ConfigError

GEOMETRIES = ("affine", "flip")  # the augmentation's geometry: flip, shift, scale, rotate; or flip only
DICE_TARGETS = ("soft", "binary")  # what the mask loss's Dice compares with (losses.mask_loss)
AUTOCAST_DTYPES = ("auto", "float16", "bfloat16")  # the forward pass's 16-bit type (train.forward_dtype)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """``value`` itself if it is one of ``choices``; else a one-line ConfigError (a ValueError) naming ``name``."""
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the weights a run ends with; ``RUNTIME`` values (workers, device,
    checkpoint_every, log_every) do not, and ``profile``/``overrides`` only record where the values came from.

    Make one from a profile with :func:`train_config`, which applies overrides by one rule.
    """
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
    dice_target: str = "soft"  # what the mask's Dice compares with: "soft" alpha or "binary" (alpha >= 0.5, as IoU counts)
    augment: bool = True
    geometry: str = "affine"  # augment_batch's geometry: "affine" (flip, shift, scale, rotate) or "flip"
    on_the_fly: bool = False
    pretrained: bool = False
    model_options: dict = field(default_factory=dict)
    split: dict = field(default_factory=lambda: {"val": 0.15, "test": 0.15, "heldout_fg": 0.15})
    checkpoint_every: int = 100
    log_every: int = 10  # steps per line of steps.csv (and TensorBoard): reading a loss waits for the GPU
    amp: bool = True  # mixed precision: on CUDA, on a CPU that computes bfloat16 natively, or where autocast_dtype names a type
    # the 16-bit type: "auto" is bfloat16 where the hardware multiplies it natively, float16 on older GPUs
    # and float32 (no autocast) on other CPUs; "float16" or "bfloat16" is used as named, on CUDA or a CPU
    autocast_dtype: str = "auto"
    channels_last: bool = True
    workers: int = 2
    device: str = "auto"
    profile: str = ""  # the profile the values started from
    overrides: dict = field(default_factory=dict)  # the values changed from the profile's, as applied

    RUNTIME = ("workers", "device", "checkpoint_every", "log_every")  # may differ between a run and its resume
    RECORD = ("profile", "overrides")  # where the values came from: recorded, never compared

    def __post_init__(self):
        check_choice("geometry", self.geometry, GEOMETRIES)  # caught here, before a run folder is made
        check_choice("dice_target", self.dice_target, DICE_TARGETS)
        check_choice("autocast_dtype", self.autocast_dtype, AUTOCAST_DTYPES)
        if self.val_samples is not None and self.val_samples < 1:
            raise ConfigError(f"val_samples must be at least 1 (or None for the whole val split), not {self.val_samples}")
        counts = {"epochs": self.epochs, "batch_size": self.batch_size, "checkpoint_every": self.checkpoint_every,
                  "log_every": self.log_every}
        small = [f"{k} {v}" for k, v in counts.items() if v < 1] + ([] if self.sizes else ["sizes ()"])
        if small:
            raise ConfigError("these need at least 1 (sizes at least one side): " + ", ".join(small))

    def size_at(self, epoch: int) -> int:
        """Training side for ``epoch`` under progressive resizing."""
        return self.sizes[min(len(self.sizes) - 1, epoch * len(self.sizes) // max(1, self.epochs))]

    def identity(self) -> dict:
        """The fields that decide the weights (all but ``RUNTIME`` and ``RECORD``), JSON-ready with
        ``sizes`` as a list: what ``config.json`` records and a resume must match."""
        d = asdict(self)
        d["sizes"] = list(self.sizes)
        return {k: v for k, v in d.items() if k not in self.RUNTIME + self.RECORD}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """A config from a dict such as ``config.json``'s; an unknown key is a :class:`ConfigError`."""
        return _checked(cls(), d)


def _field_types() -> dict[str, object]:
    return typing.get_type_hints(TrainConfig)


def _convert(key: str, value, kind) -> object:
    """``value`` as the type ``kind`` of TrainConfig's field ``key``, or a one-line ConfigError."""
    args = typing.get_args(kind)
    if type(None) in args:  # X | None
        if value is None:
            return None
        kind = next(a for a in args if a is not type(None))
    origin = typing.get_origin(kind) or kind
    if origin is tuple:
        items = value if isinstance(value, (list, tuple)) else [value]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            return tuple(items)
    elif origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif origin is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif origin in (bool, str, dict) and isinstance(value, origin):
        return value
    raise ConfigError(f"{key}: expected {getattr(kind, '__name__', kind)}, got {value!r}")


def _checked(cfg: TrainConfig, values: dict) -> TrainConfig:
    """``cfg`` with ``values`` (TrainConfig names, or ``model_options.K``) converted and applied."""
    types = _field_types()
    changes, one_option = {}, {}
    for key, value in values.items():
        if key.startswith("model_options."):  # one option, applied over the whole dict (given or the config's)
            one_option[key.split(".", 1)[1]] = value
        elif key in types:  # the fields (RUNTIME and RECORD are plain class attributes, not fields)
            changes[key] = value if key in TrainConfig.RECORD else _convert(key, value, types[key])
        else:
            near = difflib.get_close_matches(key, list(types), n=1)
            raise ConfigError(f"{key}: not a training value" + (f" (did you mean {near[0]}?)" if near else "")
                              + "; model_options.K sets one of the model's options")
    if one_option:
        changes["model_options"] = {**changes.get("model_options", cfg.model_options), **one_option}
    return replace(cfg, **changes)


def parse_set(item: str) -> tuple[str, object]:
    """``"KEY=VALUE"`` -> (KEY, VALUE read as JSON, else kept as text): ``epochs=2`` gives 2,
    ``sizes=[96,128]`` a list, ``geometry=flip`` the text ``"flip"``."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
    try:
        return key.strip(), json.loads(text)
    except json.JSONDecodeError:
        return key.strip(), text


def train_config(profile: "Profile | str" = "sample", sets: typing.Iterable[str] = (), **values) -> TrainConfig:
    """The training values of ``profile`` with overrides applied, by one rule for the CLI, the
    notebooks, the pipeline and the benchmarks.

    ``sets``: ``"KEY=VALUE"`` strings (:func:`parse_set`); ``values``: the same as keywords, where
    None means "the profile's". A key that is not a training value stops with a one-line
    :class:`ConfigError` naming it. A ``model`` other than the profile's starts from the default
    ``model_options`` and ``depth_scale`` (the profile's belong to its own model). The applied
    values are kept in ``overrides``, which the run's ``config.json`` records.
    """
    profile = as_profile(profile)
    applied = {k: v for k, v in values.items() if v is not None}
    applied.update(parse_set(item) for item in sets)
    base = profile.train
    if "model" in applied and applied["model"] != base.model:
        base = replace(base, model_options={}, depth_scale=1.0)
    cfg = _checked(base, applied)
    return replace(cfg, profile=profile.name, overrides={**profile.train.overrides, **applied})


@dataclass(frozen=True)
class Profile:
    """A named, frozen set of parameter values: sample world, composites, depth teacher, training.

    ``train`` holds the :class:`TrainConfig` of chapter 11 and the ``train`` command.
    """
    name: str
    n_bg: int  # sample-world backgrounds to render
    n_fg: int  # sample-world foregrounds to draw
    world_size: int  # sample-world photo height in pixels (photos are 4:3)
    size: int  # square size of backgrounds and composites
    placements: int  # placements per (bg, fg, flip)
    scale: tuple[float, float]  # fg height as a fraction of the bg height
    jpeg_quality: int
    jpeg_chroma: str  # "444" full-resolution colour in the composites, or "420" (half; OpenCV's default)
    seed: int
    teacher: str  # default depth teacher for this profile
    teacher_input: int  # side the teacher sees (multiple of 14 for ViT teachers)
    batch_size: int
    train: TrainConfig = field(default_factory=TrainConfig)  # chapter 11 and `train` (see train_config)
    network_teacher: str = "mini"  # labels photos without exact depth (your own) and estimates their floors
    depth_mode: str = "bg-plus-foreground"  # how the teacher labels: per-composite or bg-plus-foreground
    min_composites: int = 0  # fewer photos than n_bg x n_fg get more placements, up to this many composites
    fg_per_bg: int | None = None  # people placed in each room (a subset that turns round them all); None: every one

    @property
    def expected_composites(self) -> int:
        """Composites the dataset will hold: ``n_bg * people per room * 2 flips * placements``."""
        return self.n_bg * people_per_bg(self.n_fg, self.fg_per_bg) * 2 * self.placements

    def placements_for(self, n_bg: int, n_fg: int) -> int:
        """Placements per (bg, fg, flip) for ``n_bg`` backgrounds and ``n_fg`` foregrounds: the
        profile's, or more when that would give fewer than ``min_composites`` (:func:`scaled_placements`)."""
        return scaled_placements(self.placements, self.min_composites, n_bg, people_per_bg(n_fg, self.fg_per_bg))

    def as_dict(self) -> dict:
        """All fields as a plain dict (``dataclasses.asdict``; nested values are copies)."""
        return asdict(self)


def people_per_bg(n_fg: int, fg_per_bg: int | None) -> int:
    """How many of ``n_fg`` foregrounds each background gets: ``fg_per_bg``, at most all of them
    (``placement.foregrounds_for`` says which)."""
    return n_fg if fg_per_bg is None else min(n_fg, fg_per_bg)


def recorded_fg_per_bg(n_fg: int, fg_per_bg: int | None) -> int | None:
    """What ``params.json`` records as ``fg_per_bg``: the people per background where each gets a
    subset of the ``n_fg``; None (not recorded) where every background gets every person, so a
    dataset of every pair has the parameters it had before the option existed."""
    per_bg = people_per_bg(n_fg, fg_per_bg)
    return per_bg if per_bg < n_fg else None


MAX_PLACEMENTS = 100  # per (bg, fg, flip): beyond this, more placements of one pair teach little new


def scaled_placements(placements: int, min_composites: int, n_bg: int, n_fg: int) -> int:
    """``placements``, raised so that ``n_bg * n_fg * 2 * placements`` reaches ``min_composites``
    (at most :data:`MAX_PLACEMENTS`); ``n_fg`` is the people each background gets.

    Training runs for a number of epochs, so its steps grow with the dataset: 10 of your own rooms
    and 5 people at one placement give 100 composites and a few dozen steps, too few to learn
    anything. More placements of the same photos give the steps back, each person in new places.
    """
    per_placement = 2 * max(n_bg, 1) * max(n_fg, 1)
    return max(placements, min(MAX_PLACEMENTS, -(-min_composites // per_placement)))


PROFILES = {
    # Small enough for 2 CPU cores: 400 rooms (depth on unseen rooms generalises only with many
    # rooms) x 8 people x 2 flips x 1 placement = 6,400 composites, each room's 8 taken in turn from
    # 32 people (a model that learns "a person" from 7 people misses unseen ones). A small U-Net on the 128-px
    # composites folded 2 x 2 into channels, a full-size refinement and edge-weighted mask BCE for
    # the outline of small people, mirror-only augmentation (a warp blurs their 1-2 px edges);
    # 1,600 steps (8 epochs of 3,200 composites) fill about 5 minutes of 2 CPU cores.
    # Why each value: benchmarks/README.md, "The sample profile".
    "sample": Profile("sample", n_bg=400, n_fg=32, world_size=168, size=128, placements=1, scale=(0.35, 0.65),
                      jpeg_quality=90, jpeg_chroma="444", seed=0, teacher="scene", teacher_input=126, batch_size=8,
                      train=TrainConfig(model="small-unet", epochs=8, samples_per_epoch=3200, sizes=(128,),
                                        batch_size=16, lr=2e-3,
                                        model_options={"base": 16, "unshuffle": 2, "upsample": "nearest", "refine": 16},
                                        depth_scale=0.5, edge_weight=5.0, dice_target="binary", val_samples=320, geometry="flip",
                                        workers=1),
                      min_composites=6400, fg_per_bg=8),
    # ImageNet weights for the encoder by default: the assignment's 400,000 composites train on a GPU
    # with a download at hand (Colab); where none is possible, `pretrained` False says so in one line.
    # The validation after each epoch only reports (chapter 13 scores the test split): 4,000 of the
    # ~51,000 val composites, spread over every val room, instead of decoding them all six times.
    "full": Profile("full", n_bg=100, n_fg=100, world_size=240, size=224, placements=20, scale=(0.35, 0.65),
                    jpeg_quality=90, jpeg_chroma="444", seed=0, teacher="depth-anything-v2-small", teacher_input=518, batch_size=128,
                    train=TrainConfig(model="resnet18", epochs=6, sizes=(112, 160, 224), batch_size=64, lr=2e-3,
                                      dice_target="binary", workers=2, checkpoint_every=500, pretrained=True,
                                      val_samples=4000),
                    network_teacher="depth-anything-v2-small", min_composites=40_000),
    # The full profile's code paths at tiny counts, for CI: the ResNet-18 U-Net (random init: no
    # download in CI), progressive sizes, per-composite labels from the shipped mini teacher,
    # checkpoints every few steps. Seconds per chapter; its numbers mean nothing.
    "smoke": Profile("smoke", n_bg=12, n_fg=6, world_size=96, size=64, placements=2, scale=(0.35, 0.65),
                     jpeg_quality=90, jpeg_chroma="444", seed=0, teacher="mini", teacher_input=128, batch_size=16,
                     train=TrainConfig(model="resnet18", epochs=2, sizes=(32, 64), batch_size=8, lr=2e-3,
                                       dice_target="binary", workers=0, checkpoint_every=5, pretrained=False),
                     network_teacher="mini", depth_mode="per-composite"),
}


def get_profile(name: str = "sample", **overrides) -> Profile:
    """Return profile ``name`` with any non-None ``overrides`` applied."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return replace(PROFILES[name], **{k: v for k, v in overrides.items() if v is not None})


def as_profile(profile: "Profile | str") -> Profile:
    """``profile`` itself, or the profile of that name (:func:`get_profile`)."""
    return get_profile(profile) if isinstance(profile, str) else profile


def from_profile(profile: "Profile | str", **values) -> tuple:
    """``values`` in order, each None replaced by the profile's field of the same name: how package
    functions take their defaults from a profile (``generate(..., size=None)`` is the profile's size).

    >>> from_profile("sample", size=None, placements=3)
    (128, 3)
    """
    p = as_profile(profile)
    return tuple(getattr(p, k) if v is None else v for k, v in values.items())


def on_colab() -> bool:
    """True inside Google Colab (``google.colab`` imported or ``COLAB_RELEASE_TAG`` set)."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def environment_report() -> dict:
    """What the notebooks run on: Python, key packages, and the accelerator if any."""
    report = {"python": platform.python_version(), "platform": platform.system(), "cpus": os.cpu_count(),
              "colab": on_colab()}
    try:
        import torch

        report["torch"] = torch.__version__.split("+")[0]
        report["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except ImportError:
        report["torch"], report["device"] = None, "cpu"
    import warnings

    for mod in ("numpy", "PIL", "transformers"):
        try:
            with warnings.catch_warnings():  # transformers' tqdm import warns in notebooks
                warnings.filterwarnings("ignore", message="IProgress not found")
                report[mod] = __import__(mod).__version__
        except ImportError:
            report[mod] = None
    return report
