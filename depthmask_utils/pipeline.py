"""Make sure what earlier chapters build exists: the world, the dataset, its labels, statistics, a run.

Every chapter can run on its own: these build what earlier chapters would have built, skipping
whatever is already there (each step resumes), so running chapter 11 first is fine.
"""

from __future__ import annotations

from pathlib import Path

from .config import Profile
from .dataset import DATASET_JSON, STATS_JSON, read_params


def data_paths(profile: Profile, root: str | Path = "../data") -> dict[str, Path]:
    """Where a profile's sample world, dataset and training run live (relative to the notebooks)."""
    base = Path(root) / profile.name
    return {"world": base / "world", "dataset": base / "dataset", "run": base / "run"}


def ensure_world(profile: Profile, root: str | Path = "../data") -> Path:
    """The sample world of ``profile`` (rendered once, then reused)."""
    from .sample import make_sample_world

    world = data_paths(profile, root)["world"]
    make_sample_world(world, profile.n_bg, profile.n_fg, profile.world_size, profile.seed)
    return world


def ensure_dataset(profile: Profile, root: str | Path = "../data", bg_dir=None, fg_dir=None,
                   progress: bool = False) -> Path:
    """The generated dataset of ``profile`` (chapter 03), built or resumed as needed."""
    from .overlay import generate

    paths = data_paths(profile, root)
    if bg_dir is None or fg_dir is None:
        world = ensure_world(profile, root)
        bg_dir, fg_dir = bg_dir or world / "bg", fg_dir or world / "fg"
    if not (paths["dataset"] / DATASET_JSON).exists():
        generate(bg_dir, fg_dir, paths["dataset"], size=profile.size, placements=profile.placements,
                 scale=profile.scale, seed=profile.seed, jpeg_quality=profile.jpeg_quality,
                 jpeg_chroma=profile.jpeg_chroma, progress=progress)
    else:
        check_dataset_matches(profile, paths["dataset"])
    return paths["dataset"]


def check_dataset_matches(profile: Profile, dataset: str | Path) -> None:
    """Raise DatasetError if the finished ``dataset`` was generated with other values than ``profile``'s.

    A finished dataset is reused without regenerating it, so a folder left by an older version of the
    course (4:2:0 composites, say) would otherwise feed every later chapter without a word.
    """
    from .errors import DatasetError

    made = read_params(dataset)
    wanted = {"size": profile.size, "placements": profile.placements, "scale": list(profile.scale),
              "seed": profile.seed, "jpeg_quality": profile.jpeg_quality, "jpeg_chroma": profile.jpeg_chroma}
    differs = [f"{k} {made.get(k)!r} (profile {profile.name!r}: {v!r})" for k, v in wanted.items() if made.get(k) != v]
    if differs:
        raise DatasetError(f"{dataset}: was generated with other values than profile {profile.name!r}: "
                           + "; ".join(differs) + ". Delete the folder to rebuild it (chapter 03), or use another data root")


def ensure_depth(profile: Profile, root: str | Path = "../data", progress: bool = False, **label_kwargs) -> Path:
    """The dataset with depth labels (chapter 04), labelled with the profile's teacher if needed."""
    from .depth import label_depth
    from .storage import read_json

    dataset = ensure_dataset(profile, root)
    if "depth" not in read_json(dataset / DATASET_JSON):
        label_depth(dataset, teacher=profile.teacher, batch_size=profile.batch_size,
                    input_size=profile.teacher_input, progress=progress, **label_kwargs)
    return dataset


def ensure_stats(profile: Profile, root: str | Path = "../data") -> Path:
    """The labelled dataset with ``stats.json`` (chapter 05), what training needs."""
    from .stats import dataset_stats

    dataset = ensure_depth(profile, root)
    if not (dataset / STATS_JSON).exists():
        dataset_stats(dataset, progress=False)
    return dataset


def ensure_run(profile: Profile, root: str | Path = "../data", log=print, **overrides) -> Path:
    """A trained run of ``profile`` (chapter 10): trains, resumes, or returns the finished one.

    Always goes through :func:`train`, which returns at once for a finished run of the same
    configuration and refuses a run folder made by another one (an older profile's model is not
    scored silently).
    """
    from .train import TrainConfig, train

    dataset = ensure_stats(profile, root)
    run = data_paths(profile, root)["run"]
    train(dataset, run, TrainConfig.from_dict({**profile.train, **overrides}), progress=False, log=log)
    return run
