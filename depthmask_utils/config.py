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

COURSE_REPO = "https://github.com/depthmask/depthmask-course"  # where the Colab cell clones from


@dataclass(frozen=True)
class Profile:
    name: str
    n_bg: int  # sample-world backgrounds to render
    n_fg: int  # sample-world foregrounds to draw
    world_size: int  # sample-world photo height in pixels (photos are 4:3)
    size: int  # square size of backgrounds and composites
    placements: int  # placements per (bg, fg, flip)
    scale: tuple[float, float]  # fg height as a fraction of the bg height
    jpeg_quality: int
    seed: int
    teacher: str  # default depth teacher for this profile
    teacher_input: int  # side the teacher sees (multiple of 14 for ViT teachers)
    batch_size: int
    train: dict = field(default_factory=dict)  # TrainConfig values for chapter 10 and `train`

    @property
    def expected_composites(self) -> int:
        return self.n_bg * self.n_fg * 2 * self.placements

    def as_dict(self) -> dict:
        return asdict(self)


PROFILES = {
    "sample": Profile("sample", n_bg=6, n_fg=8, world_size=168, size=128, placements=4, scale=(0.35, 0.65),
                      jpeg_quality=90, seed=0, teacher="scene", teacher_input=126, batch_size=8,
                      train={"model": "small-unet", "epochs": 4, "sizes": (64,), "batch_size": 32, "lr": 3e-3,
                             "model_options": {"base": 16}, "workers": 1}),
    "full": Profile("full", n_bg=100, n_fg=100, world_size=240, size=224, placements=20, scale=(0.35, 0.65),
                    jpeg_quality=90, seed=0, teacher="depth-anything-v2-small", teacher_input=518, batch_size=128,
                    train={"model": "resnet18", "epochs": 6, "sizes": (112, 160, 224), "batch_size": 64, "lr": 2e-3,
                           "workers": 2, "checkpoint_every": 500}),
}


def get_profile(name: str = "sample", **overrides) -> Profile:
    """Return profile ``name`` with any non-None ``overrides`` applied."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return replace(PROFILES[name], **{k: v for k, v in overrides.items() if v is not None})


def on_colab() -> bool:
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


# --------------------------------------------------------------------------- chapter plumbing
# Every chapter can run on its own: these build what earlier chapters would have built, skipping
# whatever is already there (each step resumes), so running 05 first is fine.

def data_paths(profile: Profile, root: str = "../data") -> dict:
    """Where a profile's sample world and dataset live (relative to the notebooks folder)."""
    from pathlib import Path

    base = Path(root) / profile.name
    return {"world": base / "world", "dataset": base / "dataset"}


def ensure_world(profile: Profile, root: str = "../data"):
    """The sample world of ``profile`` (rendered once, then reused)."""
    from .sample import make_sample_world

    world = data_paths(profile, root)["world"]
    make_sample_world(world, profile.n_bg, profile.n_fg, profile.world_size, profile.seed)
    return world


def ensure_dataset(profile: Profile, root: str = "../data", bg_dir=None, fg_dir=None, progress: bool = False):
    """The generated dataset of ``profile`` (chapter 03), built or resumed as needed."""
    from pathlib import Path

    from .overlay import generate

    paths = data_paths(profile, root)
    if bg_dir is None or fg_dir is None:
        world = ensure_world(profile, root)
        bg_dir, fg_dir = bg_dir or world / "bg", fg_dir or world / "fg"
    if not (Path(paths["dataset"]) / "dataset.json").exists():
        generate(bg_dir, fg_dir, paths["dataset"], size=profile.size, placements=profile.placements,
                 scale=profile.scale, seed=profile.seed, jpeg_quality=profile.jpeg_quality, progress=progress)
    return paths["dataset"]


def ensure_depth(profile: Profile, root: str = "../data", progress: bool = False, **label_kwargs):
    """The dataset with depth labels (chapter 04), labelled with the profile's teacher if needed."""
    from .depth import label_depth
    from .storage import read_json

    dataset = ensure_dataset(profile, root)
    if "depth" not in read_json(dataset / "dataset.json"):
        label_depth(dataset, teacher=profile.teacher, batch_size=profile.batch_size,
                    input_size=profile.teacher_input, progress=progress, **label_kwargs)
    return dataset
