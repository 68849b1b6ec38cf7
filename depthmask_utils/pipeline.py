"""Make sure what earlier chapters build exists: the world, the dataset, its labels, statistics, a run.

Every chapter can run on its own: these build what earlier chapters would have built, skipping
whatever is already there (each step resumes), so running chapter 13 first is fine.
"""

from __future__ import annotations

from pathlib import Path

from .config import Profile, recorded_fg_per_bg
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


def ensure_dataset(profile: Profile, root: str | Path = "../data", bg_dir=None, fg_dir=None, floor_dir=None,
                   placement: str | None = None, progress: bool = False, log=print) -> Path:
    """The generated dataset of ``profile`` (chapter 04), built or resumed as needed.

    ``bg_dir``/``fg_dir``: your own folders (either may be left None for the sample world's); the
    dataset lands in the same place as the sample world's would, so later chapters, which name no
    folders, find it. A finished dataset made from other folders is refused, never reused silently.
    """
    from .overlay import generate

    paths = data_paths(profile, root)
    if (paths["dataset"] / DATASET_JSON).exists():
        check_dataset_matches(profile, paths["dataset"], bg_dir, fg_dir, floor_dir)
        return paths["dataset"]
    if bg_dir is None or fg_dir is None:
        world = ensure_world(profile, root)
        bg_dir, fg_dir = bg_dir or world / "bg", fg_dir or world / "fg"
    generate(bg_dir, fg_dir, paths["dataset"], profile=profile, progress=progress, floor_dir=floor_dir,
             placement=placement, log=log)  # every other value: the profile's
    return paths["dataset"]


def check_dataset_matches(profile: Profile, dataset: str | Path, bg_dir=None, fg_dir=None, floor_dir=None) -> None:
    """Raise DatasetError if the finished ``dataset`` was generated with other values than ``profile``'s,
    or from other folders than ``bg_dir``/``fg_dir``/``floor_dir`` (where given).

    A finished dataset is reused without regenerating it, so a folder left by an older version of the
    course (4:2:0 composites, say), or the sample world's dataset when you pass your own photos,
    would otherwise feed every later chapter without a word.
    """
    from .errors import DatasetError
    from .storage import read_json

    inputs = read_json(Path(dataset) / DATASET_JSON)["inputs"]
    for kind, given in (("bg", bg_dir), ("fg", fg_dir), ("floor", floor_dir)):
        if given is not None and Path(inputs.get(f"{kind}_dir") or "-") != Path(given).resolve():
            raise DatasetError(f"{dataset}: was made from {inputs[f'{kind}_dir']}, not from {Path(given).resolve()}; "
                               "use a fresh data_root for your own photos (or delete the folder to rebuild it)")
    made = read_params(dataset)
    counts = read_json(Path(dataset) / DATASET_JSON)["counts"]
    wanted = {"size": profile.size, "placements": profile.placements_for(counts["bg"], counts["fg"]), "scale": list(profile.scale),
              "seed": profile.seed, "jpeg_quality": profile.jpeg_quality, "jpeg_chroma": profile.jpeg_chroma,
              "fg_per_bg": recorded_fg_per_bg(counts["fg"], profile.fg_per_bg)}
    differs = [f"{k} {made.get(k)!r} (profile {profile.name!r}: {v!r})" for k, v in wanted.items() if made.get(k) != v]
    world = (Path(dataset).parent / "world").resolve()  # data_paths: the sample world beside its dataset
    if Path(inputs["fg_dir"]) == world / "fg":  # made from the sample world, whose counts are the profile's
        differs += [f"{kind} {counts[kind]} (profile {profile.name!r}: {n})"
                    for kind, n in (("bg", profile.n_bg), ("fg", profile.n_fg)) if counts[kind] != n]
    if differs:
        raise DatasetError(f"{dataset}: was generated with other values than profile {profile.name!r}: "
                           + "; ".join(differs) + ". Delete the folder to rebuild it (chapter 04), or use another data root")


def labelling_teacher(profile: Profile, dataset: str | Path) -> tuple[str, str]:
    """(teacher, why) for ``dataset``: the profile's teacher, except that the exact ``scene`` depth
    exists only for the sample world, so your own photos get the profile's network teacher."""
    from .depth import has_exact_depth

    if profile.teacher == "scene" and not has_exact_depth(dataset):
        return profile.network_teacher, (f"your photos have no exact depth, so the network teacher "
                                         f"{profile.network_teacher!r} labels them")
    return profile.teacher, f"profile {profile.name!r} labels with {profile.teacher!r}"


def ensure_depth(profile: Profile, root: str | Path = "../data", progress: bool = False, log=print,
                 **label_kwargs) -> Path:
    """The dataset with depth labels (chapter 05), labelled if needed by :func:`labelling_teacher`'s
    choice, with pretrained weights, in the profile's ``depth_mode``."""
    from .depth import label_depth
    from .storage import read_json

    dataset = ensure_dataset(profile, root, log=log)
    if "depth" not in read_json(dataset / DATASET_JSON):
        teacher, why = labelling_teacher(profile, dataset)
        log(f"depth labels: {why}")
        label_depth(dataset, **{"teacher": teacher, "progress": progress, "profile": profile, **label_kwargs})
    return dataset


def ensure_stats(profile: Profile, root: str | Path = "../data", log=print) -> Path:
    """The labelled dataset with ``stats.json`` (chapter 06), what training needs."""
    from .stats import dataset_stats

    dataset = ensure_depth(profile, root, log=log)
    if not (dataset / STATS_JSON).exists():
        dataset_stats(dataset, progress=False)
    return dataset


def ensure_labelled_world(folder: str | Path, seed: int, n_bg: int = 400, n_fg: int = 8, size: int = 128,
                          world_size: int = 168) -> Path:
    """A sample world rendered with ``seed`` in ``folder/world`` and its dataset in ``folder/dataset``
    (one placement per person and flip), labelled with the exact ``scene`` depth: what the ``mini``
    teacher learns from and is checked on. Built once, then reused."""
    from .depth import label_depth
    from .overlay import generate
    from .sample import make_sample_world
    from .storage import read_json

    folder = Path(folder)
    make_sample_world(folder / "world", n_bg, n_fg, world_size, seed)
    dataset = folder / "dataset"
    generate(folder / "world" / "bg", folder / "world" / "fg", dataset, size=size, placements=1, seed=seed,
             progress=False)
    if "depth" not in read_json(dataset / DATASET_JSON):
        label_depth(dataset, teacher="scene", progress=False)
    return dataset


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (size, modification time in ns) of every file under ``folder``: what a copy
    must reproduce (``copytree`` keeps modification times, so a rewritten file shows)."""
    return {str(f.relative_to(folder)): (f.stat().st_size, f.stat().st_mtime_ns)
            for f in sorted(folder.rglob("*")) if f.is_file()}


def stage_locally(dataset: str | Path, local_root: str | Path, log=print) -> Path:
    """A copy of ``dataset`` on local disk, made once: what to train from when the dataset lives on
    Google Drive.

    Drive is a network file system: every random read of a shard member is a round trip, and an epoch
    makes hundreds of thousands of them. One sequential copy to the machine's disk (``/content`` on
    Colab) costs a minute and makes every epoch read locally. The copy is written under a temporary
    name and renamed when complete; it is reused while its files match the original's names and
    sizes, and made again if the dataset changed (new labels, say). Returns the local folder.
    """
    import shutil
    import time

    dataset, local_root = Path(dataset), Path(local_root)
    target = local_root / dataset.name
    want = _listing(dataset)
    if target.is_dir() and _listing(target) == want:
        return target
    t0 = time.perf_counter()
    partial = local_root / (dataset.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(dataset, partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    log(f"copied {dataset} to {target}: {sum(size for size, _ in want.values()) / 1e6:.0f} MB in "
        f"{time.perf_counter() - t0:.1f} s "
        "(once; later runs reuse it)")
    return target


def ensure_run(profile: Profile, root: str | Path = "../data", dataset: str | Path | None = None, log=print,
               sets=(), **overrides) -> Path:
    """The trained run of ``profile`` (chapter 11's): returns the finished one, resumes an unfinished
    one, or trains one.

    Always goes through :func:`train`, which returns at once for a finished run of the same
    configuration and refuses a run folder made by another one (an older profile's model is not
    scored silently). The values chapter 11 changed (its ``epochs`` or ``pretrained``, a named
    ``autocast_dtype``: the ``overrides`` the run's ``config.json`` records) are kept, so the later
    chapters use the run you trained; ``sets``/``overrides`` change more, by
    :func:`config.train_config`'s rule. ``dataset``: the copy the run trains from, where that is not
    ``profile``'s own under ``root`` (chapter 11's local copy of a dataset on Google Drive).
    """
    import json

    from .checkpoint import run_overrides
    from .config import parse_set, train_config
    from .train import train

    dataset = ensure_stats(profile, root) if dataset is None else Path(dataset)
    run = data_paths(profile, root)["run"]
    asked = {k: v for k, v in overrides.items() if v is not None}  # None: "the profile's", or here the run's
    given = set(asked) | {parse_set(item)[0] for item in sets}
    # as KEY=JSON items, so a recorded null (--set val_samples=null) stays null instead of meaning "the profile's"
    kept = [f"{k}={json.dumps(v)}" for k, v in run_overrides(run).items() if k not in given]
    train(dataset, run, train_config(profile, [*kept, *sets], **asked), progress=False, log=log)
    return run
