"""Profiles: named sets of parameter values, defined once, used by notebooks and the CLI.

``sample`` is small enough for 2 CPU cores in seconds; ``full`` is the assignment:
100 bg x 100 fg x 2 flips x 20 placements = 400,000 composites at 224 x 224.
Notebooks read a profile with :func:`get_profile` (papermill: ``-p profile full``), the CLI with
``--profile full``.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class Profile:
    """A named, frozen set of parameter values: sample world, composites, depth teacher, training.

    ``train`` holds :class:`~depthmask_utils.train.TrainConfig` values for chapter 10 and the ``train`` command.
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
    train: dict = field(default_factory=dict)  # TrainConfig values for chapter 10 and `train`
    network_teacher: str = "mini"  # labels photos without exact depth (your own) and estimates their floors
    depth_mode: str = "bg-plus-foreground"  # how the teacher labels: per-composite or bg-plus-foreground

    @property
    def expected_composites(self) -> int:
        """Composites the dataset will hold: ``n_bg * n_fg * 2 flips * placements``."""
        return self.n_bg * self.n_fg * 2 * self.placements

    def as_dict(self) -> dict:
        """All fields as a plain dict (``dataclasses.asdict``; nested values are copies)."""
        return asdict(self)


PROFILES = {
    # Many rooms, because depth and the mask on unseen rooms generalise only with many rooms (chapter 10;
    # with as many composites, 100 rooms x 4 placements missed both 5-minute targets). 400 x 1 rather
    # than 200 x 2 for the spread, not the mean: at the profile's 980 steps both met both targets with
    # 4 seeds of 4, 400 x 1 over a narrower range on a test set of twice the rooms (mean depth RMSE
    # 0.075 against 0.071); within a 5-minute budget in float32, all 4 seeds met both on a day this
    # machine fitted ~1,480 steps in it, about half the runs that fitted 788-1,000 (slower days); in
    # bfloat16 (train.cpu_has_bf16) all 4 seeds met both within 5 minutes (1,890-2,160 steps) and
    # within 3.1, a slower day's share (1,230-1,344 steps; book/results.md);
    # 8 people x 2 flips x 1 placement keep the dataset at 6,400 composites, seconds to build.
    # The small U-Net works at 64 px on the 128-px composites folded 2 x 2 into channels (unshuffle),
    # so its mask has the labels' resolution for a little more than a 64-px network costs; a small
    # full-resolution refinement (refine) and mask BCE weighted x5 near the soft edge (edge_weight;
    # on people this small, most of the person and a ring around it) sharpen the outline, where a
    # small person's IoU is lost.
    # Mirror-only augmentation: a resampling warp blurs the 1-2 px edges of these small people.
    # Validation after each epoch on 320 of the 840 val composites, spread over all 60 val rooms: it
    # only reports (the weights are the same), and the seconds it saves go to training steps.
    # Batches of 16 and nearest upsampling in the decoder: twice the steps in the same minutes on a
    # CPU, which is what depth on unseen rooms needed (benchmarks/train.py; book/results.md).
    "sample": Profile("sample", n_bg=400, n_fg=8, world_size=168, size=128, placements=1, scale=(0.35, 0.65),
                      jpeg_quality=90, jpeg_chroma="444", seed=0, teacher="scene", teacher_input=126, batch_size=8,
                      train={"model": "small-unet", "epochs": 4, "sizes": (128,), "batch_size": 16, "lr": 2e-3,
                             "model_options": {"base": 16, "unshuffle": 2, "upsample": "nearest", "refine": 8},
                             "depth_scale": 0.5, "edge_weight": 5.0, "val_samples": 320,
                             "geometry": "flip", "workers": 1}),
    # ImageNet weights for the encoder by default: the assignment's 400,000 composites train on a GPU
    # with a download at hand (Colab); where none is possible, `pretrained` False says so in one line.
    "full": Profile("full", n_bg=100, n_fg=100, world_size=240, size=224, placements=20, scale=(0.35, 0.65),
                    jpeg_quality=90, jpeg_chroma="444", seed=0, teacher="depth-anything-v2-small", teacher_input=518, batch_size=128,
                    train={"model": "resnet18", "epochs": 6, "sizes": (112, 160, 224), "batch_size": 64, "lr": 2e-3,
                           "workers": 2, "checkpoint_every": 500, "pretrained": True},
                    network_teacher="depth-anything-v2-small"),
    # The full profile's code paths at tiny counts, for CI: the ResNet-18 U-Net (random init: no
    # download in CI), progressive sizes, per-composite labels from the shipped mini teacher,
    # checkpoints every few steps. Seconds per chapter; its numbers mean nothing.
    "smoke": Profile("smoke", n_bg=12, n_fg=6, world_size=96, size=64, placements=2, scale=(0.35, 0.65),
                     jpeg_quality=90, jpeg_chroma="444", seed=0, teacher="mini", teacher_input=128, batch_size=16,
                     train={"model": "resnet18", "epochs": 2, "sizes": (32, 64), "batch_size": 8, "lr": 2e-3,
                            "workers": 0, "checkpoint_every": 5, "pretrained": False},
                     network_teacher="mini", depth_mode="per-composite"),
}


def get_profile(name: str = "sample", **overrides) -> Profile:
    """Return profile ``name`` with any non-None ``overrides`` applied."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return replace(PROFILES[name], **{k: v for k, v in overrides.items() if v is not None})


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
