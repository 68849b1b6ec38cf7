"""The dataset contract: file and member names, the typed manifest, ``dataset.json``, verify, splits.

Every other module asks this one where things live, so a name is spelled in one place::

    DATASET/
      dataset.json  params.json  manifest.csv  stats.json
      bg/<bg:03d>.png  fg/<fg:03d>.png  fg_mask/<fg:03d>.png
      shards/bg_<bg:03d>.zip   members fg_bg/<id>.jpg, mask/<id>.png, depth/<id>.png, depth/_labels.csv

Splits are made **by background**, plus a held-out set of foregrounds, never by random composite:
a model that has seen a room in training has seen its depth, so a random split measures memory.
Torch-free on purpose: the generator, verify and the statistics use it without PyTorch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DatasetError
from .parallel import run_tasks
from .storage import decode_image, open_shard, read_json, read_manifest, rows_by_shard

FORMAT = "depthmask-dataset/1"
DATASET_JSON = "dataset.json"
PARAMS_JSON = "params.json"
MANIFEST_CSV = "manifest.csv"
STATS_JSON = "stats.json"
LABELS_MEMBER = "depth/_labels.csv"  # per-shard record: id, depth_lo, depth_hi, teacher, mode, weights

# category -> file extension of its shard members
MEMBER_EXT = {"fg_bg": "jpg", "mask": "png", "depth": "png"}
# category -> folder of the prepared inputs (one file per bg or fg id)
PREPARED = ("bg", "fg", "fg_mask")


def member(category: str, cid: str) -> str:
    """Name of a composite's member inside its shard, e.g. ``member("mask", id) == "mask/<id>.png"``."""
    return f"{category}/{cid}.{MEMBER_EXT[category]}"


def member_pattern(category: str) -> str:
    """The member name with ``<id>`` for the id, as documented in ``dataset.json``."""
    return member(category, "<id>")


def prepared_path(root: str | Path, category: str, index: int) -> Path:
    """Path of a prepared input: ``bg/007.png``, ``fg/012.png`` or ``fg_mask/012.png``."""
    if category not in PREPARED:
        raise ValueError(f"category must be one of {PREPARED}, got {category!r}")
    return Path(root) / category / f"{index:03d}.png"


def load_prepared(root: str | Path, category: str, index: int) -> np.ndarray:
    """A prepared input as uint8: bg (S, S, 3), fg (h, w, 4) RGBA, fg_mask (h, w)."""
    path = prepared_path(root, category, index)
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert({"bg": "RGB", "fg": "RGBA", "fg_mask": "L"}[category]))
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing - the dataset's prepared inputs are incomplete") from None


# --------------------------------------------------------------------------- dataset.json and the manifest

def read_params(root: str | Path) -> dict:
    """``params.json``, the values ``generate`` made the dataset with.

    Folders made before ``jpeg_chroma`` was recorded hold OpenCV's default, 4:2:0; the key is filled
    in so that every reader (a resumed ``generate``, the pipeline's reuse check) agrees on it.
    """
    params = read_json(Path(root) / PARAMS_JSON)
    params.setdefault("jpeg_chroma", "420")
    return params


def read_info(root: str | Path, need_depth: bool = False) -> dict:
    """``dataset.json``, checked: it exists, has the supported format and (if asked) depth labels."""
    root = Path(root)
    path = root / DATASET_JSON
    if not path.exists():
        raise DatasetError(f"{root}: no {DATASET_JSON} - not a dataset, or generation did not finish "
                           "(re-run `python -m depthmask_utils generate` to resume)")
    info = read_json(path)
    if info.get("format") != FORMAT:
        raise DatasetError(f"{path}: format {info.get('format')!r}, this version reads {FORMAT!r}")
    if need_depth and "depth" not in info:
        raise DatasetError(f"{root}: has no depth labels - run `python -m depthmask_utils label-depth {root}` first")
    return info


@dataclass(frozen=True)
class Composite:
    """One manifest row, typed. ``x, y, w, h`` is the pasted foreground's box in pixels."""
    id: str
    bg: int
    fg: int
    flip: int
    k: int
    x: int
    y: int
    w: int
    h: int
    shard: str
    depth_lo: float | None = None  # raw range of the depth label (teacher units), once labelled
    depth_hi: float | None = None

    @classmethod
    def from_row(cls, row: dict) -> "Composite":
        """A manifest row (dict of strings) as a Composite; empty or absent depth columns become None.

        Raises KeyError or ValueError on a missing column or a non-integer field.
        """
        ints = {k: int(row[k]) for k in ("bg", "fg", "flip", "k", "x", "y", "w", "h")}
        lo, hi = row.get("depth_lo"), row.get("depth_hi")
        return cls(id=row["id"], shard=row["shard"], depth_lo=float(lo) if lo not in (None, "") else None,
                   depth_hi=float(hi) if hi not in (None, "") else None, **ints)


def read_composites(root: str | Path) -> list[Composite]:
    """Every row of ``manifest.csv`` as a :class:`Composite`, in manifest order."""
    path = Path(root) / MANIFEST_CSV
    try:
        return [Composite.from_row(r) for r in read_manifest(path)]
    except (KeyError, ValueError) as exc:
        raise DatasetError(f"{path}: malformed row ({exc})") from None


# --------------------------------------------------------------------------- splits

@dataclass(frozen=True)
class Split:
    """Which backgrounds and foregrounds each part of the data may use.

    * ``train``: training backgrounds x seen foregrounds;
    * ``val``: validation backgrounds x seen foregrounds;
    * ``test``: everything a trained model has never seen, in three groups -
      ``unseen_bg`` (test backgrounds, seen foregrounds), ``unseen_fg`` (training backgrounds,
      held-out foregrounds) and ``unseen_both`` (test backgrounds, held-out foregrounds).
    """
    train_bg: tuple[int, ...]
    val_bg: tuple[int, ...]
    test_bg: tuple[int, ...]
    seen_fg: tuple[int, ...]
    heldout_fg: tuple[int, ...]
    seed: int
    fractions: dict = field(default_factory=dict)

    def group(self, c: Composite) -> str | None:
        """The part a composite belongs to: train, val, unseen_bg, unseen_fg, unseen_both or None."""
        seen = c.fg in self.seen_fg
        if c.bg in self.train_bg:
            return "train" if seen else "unseen_fg"
        if c.bg in self.val_bg:
            return "val" if seen else None  # val rooms with held-out people: used by nobody
        return "unseen_bg" if seen else "unseen_both"

    def select(self, composites: list[Composite], part: str) -> list[Composite]:
        """Composites of ``part``: train, val, test (all three unseen groups) or one group name."""
        parts = {"test": ("unseen_bg", "unseen_fg", "unseen_both")}.get(part, (part,))
        if part not in ("train", "val", "test", "unseen_bg", "unseen_fg", "unseen_both"):
            raise ValueError(f"unknown split part {part!r}")
        return [c for c in composites if self.group(c) in parts]

    def as_dict(self) -> dict:
        """The fields as a JSON-ready dict, tuples as lists (what ``split.json`` holds)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Split":
        """Inverse of :meth:`as_dict`: lists become tuples again."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _take(ids: np.ndarray, frac: float, minimum: int) -> int:
    return max(minimum, int(round(frac * len(ids)))) if frac > 0 else 0


def make_split(n_bg: int, n_fg: int, seed: int = 0, val: float = 0.15, test: float = 0.15,
               heldout_fg: float = 0.15) -> Split:
    """Split ``n_bg`` backgrounds into train/val/test and hold out a fraction of the foregrounds.

    Deterministic for a seed and independent of the manifest's order. Each non-zero fraction gets
    at least one background or foreground; training keeps at least one of each.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and 0 <= heldout_fg < 1 and val + test < 1):
        raise ValueError("split fractions must be in [0, 1) with val + test < 1")
    rng = np.random.default_rng([seed, 7])
    bgs, fgs = rng.permutation(n_bg), rng.permutation(n_fg)
    n_test, n_val = _take(bgs, test, 1), _take(bgs, val, 1)
    n_held = _take(fgs, heldout_fg, 1)
    if n_bg - n_test - n_val < 1 or n_fg - n_held < 1:
        raise ValueError(f"{n_bg} backgrounds and {n_fg} foregrounds are too few to split "
                         f"(val {val}, test {test}, held-out fg {heldout_fg})")
    srt = lambda a: tuple(sorted(int(i) for i in a))  # noqa: E731
    return Split(train_bg=srt(bgs[n_test + n_val:]), val_bg=srt(bgs[n_test:n_test + n_val]), test_bg=srt(bgs[:n_test]),
                 seen_fg=srt(fgs[n_held:]), heldout_fg=srt(fgs[:n_held]), seed=seed,
                 fractions={"val": val, "test": test, "heldout_fg": heldout_fg})


def dataset_split(root: str | Path, seed: int = 0, **fractions) -> Split:
    """:func:`make_split` for the backgrounds and foregrounds counted in ``root/dataset.json``."""
    counts = read_info(root)["counts"]
    return make_split(counts["bg"], counts["fg"], seed, **fractions)


# --------------------------------------------------------------------------- verify

_VERIFY: dict = {}


def _init_verify(fg_dir: str, n_fg: int, size: int, scale: tuple[float, float]) -> None:
    """Per-process state for verify: every prepared foreground's pyramid, built once."""
    from .compositing import pyramids_for

    fgs = [load_prepared(Path(fg_dir).parent, "fg", j) for j in range(n_fg)]
    _VERIFY.update(pyramids=pyramids_for(fgs, size, scale), size=size)


def _verify_shard(task: tuple) -> list[str]:
    """Problems found in one shard (empty list if none)."""
    shard_path, rows, depth = task
    size, pyramids = _VERIFY["size"], _VERIFY["pyramids"]
    categories = ["fg_bg", "mask"] + (["depth"] if depth else [])
    problems: list[str] = []
    try:
        zf = open_shard(shard_path)
    except DatasetError as exc:
        return [str(exc)]
    with zf:
        names = set(zf.namelist())
        for row in rows:
            cid = row["id"]
            decoded = {}
            for cat in categories:
                m = member(cat, cid)
                if m not in names:
                    problems.append(f"{shard_path}: member {m} missing")
                    continue
                try:
                    decoded[cat] = decode_image(zf.read(m), f"{shard_path}:{m}")
                except Exception as exc:
                    problems.append(str(exc) if isinstance(exc, DatasetError) else f"{shard_path}:{m}: {exc}")
                    continue
                want = (size, size, 3) if cat == "fg_bg" else (size, size)
                if decoded[cat].shape != want:
                    problems.append(f"{shard_path}:{m}: shape {decoded[cat].shape}, expected {want}")
                    decoded.pop(cat)
            mask = decoded.get("mask")
            if mask is None:
                continue
            x, y, w, h = (int(row[k]) for k in ("x", "y", "w", "h"))
            expected = np.zeros((size, size), np.uint8)
            expected[y:y + h, x:x + w] = pyramids[int(row["fg"])].placed(int(row["flip"]), w, h)[..., 3]
            if not np.array_equal(mask, expected):
                bad = int((mask != expected).sum())
                problems.append(f"{shard_path}:{member('mask', cid)}: {bad} pixels differ from the fg alpha at its box")
        expected_names = {member(cat, r["id"]) for r in rows for cat in categories}
        # Depth members of a shard labelled ahead of the rest (a resumable labelling run) are fine.
        extra = sorted(n for n in names - expected_names if not n.startswith("depth/_" if depth else "depth/"))
        if extra:
            problems.append(f"{shard_path}: {len(extra)} members not in the manifest, e.g. {extra[0]}")
    return problems


@dataclass
class VerifyReport:
    """What :func:`verify` found: composites and shards checked, whether depth labels were
    checked, and ``problems``, one message per problem naming its file or member.
    """
    composites: int
    shards: int
    depth_checked: bool
    problems: list

    @property
    def ok(self) -> bool:
        """True when verify found no problems."""
        return not self.problems

    def __repr__(self) -> str:
        state = "OK" if self.ok else f"{len(self.problems)} problems"
        return (f"VerifyReport({self.composites} composites in {self.shards} shards, "
                f"depth {'checked' if self.depth_checked else 'not labelled yet'}: {state})")


def verify(dataset: str | Path, workers: int | None = None, shards: list[str] | None = None) -> VerifyReport:
    """Check a dataset: every member readable and the right size, counts match the manifest and
    dataset.json, each mask equals its fg alpha at its box, depth present once labelled.

    ``shards``: check the members of only these shards (names like ``bg_042.zip``), the counts still
    in full: a quick look at one shard of 400,000 composites."""
    dataset = Path(dataset)
    info = read_info(dataset)
    rows = read_manifest(dataset / MANIFEST_CSV)
    problems = []
    counts = info.get("counts", {})
    if counts.get("composites") != len(rows):
        problems.append(f"{dataset / MANIFEST_CSV}: {len(rows)} rows, {DATASET_JSON} says {counts.get('composites')}")
    depth = "depth" in info
    size, scale = info["params"]["size"], tuple(info["params"]["scale"])
    by_shard = rows_by_shard(rows)
    if counts.get("shards") is not None and counts["shards"] != len(by_shard):
        problems.append(f"{dataset}: manifest names {len(by_shard)} shards, {DATASET_JSON} says {counts['shards']}")
    tasks = [(str(dataset / s), rs, depth) for s, rs in sorted(by_shard.items())
             if shards is None or Path(s).name in shards]
    n_fg = counts.get("fg", len(info.get("inputs", {}).get("fg", [])))
    for found in run_tasks(_verify_shard, tasks, workers, _init_verify, (str(dataset / "fg"), n_fg, size, scale)):
        problems.extend(found)
    return VerifyReport(len(rows), len(by_shard), depth, problems)
