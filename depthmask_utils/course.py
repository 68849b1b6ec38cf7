"""The course frame around the chapters, generated from one place: ``_config.yml``.

The repository address lives only in ``_config.yml`` (``repository.url`` and ``repository.branch``).
From it, ``python -m depthmask_utils colab`` writes every chapter's "Open in Colab" badge and its
Colab install cell; ``--check`` (and ``tests/test_course.py``) fails when a notebook disagrees, so
publishing the course elsewhere means changing one line and running one command. Jupyter Book
builds its own launch buttons from the same ``repository`` and ``launch_buttons.colab_url`` keys.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import DepthmaskError

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
INSTALL_TAG = "colab-install"  # the generated cell carries this tag (and hide-cell for the book)
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE_RE = re.compile(r"^\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)$", re.M)

# What each chapter installs on Colab beyond the package's core (pyproject extras); Colab already
# ships torch, so the extras add only what is missing and never reinstall torch.
# chapters 03-04 estimate floors with the depth teacher (Depth Anything V2 on `full`), 05 labels with it
EXTRAS = {"03": "depth", "04": "depth", "05": "depth", **{f"{n:02d}": "model" for n in range(8, 14)}}


@dataclass(frozen=True)
class Repository:
    """Where the course lives: a GitHub address and the branch the badges and install cells use."""
    url: str  # https://github.com/<owner>/<name>
    branch: str

    @property
    def slug(self) -> str:
        """``owner/name`` of a GitHub address."""
        m = re.match(r"https://github\.com/([^/]+/[^/]+?)(?:\.git)?/?$", self.url)
        if not m:
            raise ValueError(f"_config.yml: repository.url must be a https://github.com/OWNER/NAME address, got {self.url!r}")
        return m.group(1)

    @property
    def name(self) -> str:
        """The repository's name, also the folder it is cloned into on Colab."""
        return self.slug.split("/")[1]


def repository(config: str | Path = ROOT / "_config.yml") -> Repository:
    """The course repository named in the book's ``_config.yml``."""
    import yaml

    if not Path(config).exists():
        raise needs_checkout(Path(config), "the book's configuration")
    cfg = yaml.safe_load(Path(config).read_text())
    repo = cfg.get("repository") or {}
    if not repo.get("url"):
        raise ValueError(f"{config}: no repository.url; the badges and Colab cells are generated from it")
    return Repository(repo["url"].rstrip("/"), str(repo.get("branch", "main")))


def colab_url(repo: Repository, notebook: str) -> str:
    """The address that opens ``notebooks/<notebook>`` of ``repo`` in Colab."""
    return f"https://colab.research.google.com/github/{repo.slug}/blob/{repo.branch}/notebooks/{notebook}"


def badge(repo: Repository, notebook: str) -> str:
    """The markdown line of the "Open in Colab" badge."""
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(repo, notebook)})"


def install_cell(repo: Repository, notebook: str, paths: Sequence[str] = ()) -> str:
    """Source of the Colab install cell of ``notebook``: clone, install what the chapter needs, optionally
    mount Drive. Elsewhere it does nothing. Every failing step stops with the step's own error.

    ``paths``: the chapter's parameters that name your files (``fg_dir``, ``teacher_path``...). A
    relative one is read from ``/content``, where Colab's file panel uploads, not from the course's
    ``notebooks`` folder the cell moves to. ``data_root`` keeps its own folder's name on
    Google Drive, so a fresh ``data_root`` is a fresh folder there too.
    """
    extra = EXTRAS.get(notebook[:2])
    target = f'f"{{COURSE}}[{extra}]"' if extra else "COURSE"
    own = "".join(f'    {n} = os.path.join("/content", {n}) if {n} else {n}\n' for n in paths)
    if own:
        own = "    # your files: a relative path is read from /content, where Colab's file panel uploads\n" + own
    return f'''\
# Colab only: fetch the course, install what this chapter needs, and work from absolute paths.
# Elsewhere this cell does nothing. (Generated from _config.yml by `python -m depthmask_utils colab`.)
import os, subprocess, sys
if "google.colab" in sys.modules:
    # DEPTHMASK_REPO / DEPTHMASK_COURSE_DIR: another copy of the course (a fork, or a local clone)
    REPO = os.environ.get("DEPTHMASK_REPO", "{repo.url}")
    COURSE = os.environ.get("DEPTHMASK_COURSE_DIR", "/content/{repo.name}")

    def step(what, *cmd):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"Colab set-up failed while {{what}}:\\n{{done.stderr[-3000:]}}")

    if not os.path.isdir(COURSE):
        step(f"cloning {{REPO}}", "git", "clone", "-q", "--depth", "1", "-b", "{repo.branch}", REPO, COURSE)
    step("installing the course package", sys.executable, "-m", "pip", "install", "-q", "-e", {target})
    sys.path.insert(0, COURSE)
{own}    os.chdir(f"{{COURSE}}/notebooks")
    data_root = os.path.abspath(data_root)
    if drive:  # datasets and runs on Google Drive survive a disconnect; re-running resumes them
        from google.colab import drive as gdrive
        gdrive.mount("/content/drive")
        if not data_root.startswith("/content/drive/"):  # a folder of the same name, on Drive
            data_root = f"/content/drive/MyDrive/{repo.name}/{{os.path.basename(data_root)}}"
'''


def _source(cell: dict) -> str:
    src = cell["source"]
    return src if isinstance(src, str) else "".join(src)


def _set_source(cell: dict, text: str) -> None:
    cell["source"] = text.splitlines(keepends=True)


def _path_parameters(parameters: str) -> list[str]:
    """The names in a parameters cell that name a student's files or folders (``*_dir``, ``*_path``)."""
    names = (line.split(":", 1)[0].strip() for line in parameters.splitlines() if ":" in line)
    return [n for n in names if n.isidentifier() and n.endswith(("_dir", "_path"))]


def sync_notebook(path: Path, repo: Repository, write: bool = True) -> list[str]:
    """Make the badge and install cell of one chapter match ``repo``; returns what differed."""
    nb = json.loads(path.read_text())
    name, cells, problems = path.name, nb["cells"], []
    first = cells[0]
    want = badge(repo, name)
    text = _source(first)
    if first["cell_type"] != "markdown" or not text.startswith("# "):
        raise ValueError(f"{path}: the first cell must be the markdown title")
    if BADGE_RE.search(text):
        new = BADGE_RE.sub(want, text, count=1)
    else:
        title, _, rest = text.partition("\n")
        new = f"{title}\n\n{want}\n{rest}"
    if new != text:
        problems.append("badge")
        _set_source(first, new)
    params = [i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not params:
        raise ValueError(f"{path}: no cell tagged 'parameters'")
    install = [i for i, c in enumerate(cells) if INSTALL_TAG in c.get("metadata", {}).get("tags", [])]
    want_cell = install_cell(repo, name, _path_parameters(_source(cells[params[0]])))
    if install != [params[0] + 1]:
        problems.append("install cell missing or not right after the parameters cell")
        for i in reversed(install):
            del cells[i]
        cells.insert(params[0] + 1, {"cell_type": "code", "execution_count": None, "id": f"colab-install-{name[:2]}",
                                     "metadata": {"tags": [INSTALL_TAG, "hide-cell"]}, "outputs": [], "source": []})
    cell = cells[params[0] + 1]
    if _source(cell) != want_cell:
        problems.append("install cell text")
        _set_source(cell, want_cell)
    if problems and write:
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return problems


def sync_notebooks(write: bool = True, notebooks: Path = NOTEBOOKS) -> dict[str, list[str]]:
    """Badge and install cell of every chapter from ``_config.yml``; returns ``{notebook: differences}``."""
    repo = repository()
    out = {}
    for path in chapters(notebooks):
        problems = sync_notebook(path, repo, write)
        if problems:
            out[path.name] = problems
    return out


class ChapterFailed(Exception):
    """A chapter raised while ``run_course`` executed it; the message names it and its executed copy."""


def _kernel_manager():
    """A Jupyter kernel manager that encrypts kernel traffic where the kernel supports it.

    ipykernel >= 7.3 warns on every start when its sockets run over TCP unencrypted; asking the
    manager to provision CurveZMQ keys ("auto") removes the warning, and older versions ignore it.
    """
    from jupyter_client.manager import KernelManager
    from traitlets import default

    if "transport_encryption" not in KernelManager.class_trait_names():
        return KernelManager

    class EncryptedKernelManager(KernelManager):
        @default("transport_encryption")
        def _auto(self) -> str:
            return "auto"

    return EncryptedKernelManager


class CheckoutNeeded(DepthmaskError):
    """A course command (run, refresh, colab) that needs the notebooks of a checkout, not the package alone."""


def needs_checkout(path: Path, what: str) -> CheckoutNeeded:
    return CheckoutNeeded(f"{path}: {what} not found. The course commands (run, refresh, colab) work on a "
                          "checkout of the course: git clone it, pip install -e . inside, and run them from "
                          "there (run also takes --notebooks DIR)")


def chapters(notebooks: Path = NOTEBOOKS, only: list[str] | None = None) -> list[Path]:
    """The chapter notebooks, in order; ``only`` keeps those whose number (``03``) or name is listed.

    An installed package holds no notebooks: without any, :class:`CheckoutNeeded` says where they are."""
    found = sorted(Path(notebooks).glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise needs_checkout(Path(notebooks), "no chapter notebooks (NN_name.ipynb)")
    return [p for p in found if not only or p.name[:2] in only or p.stem in only]


def _execute(nb: Path, executed: Path, parameters: dict | None, after_failure: str) -> None:
    """Run ``nb`` top to bottom in a fresh kernel from its folder into ``executed``; a failing cell
    raises :class:`ChapterFailed` naming the chapter, the cell and the error, then ``after_failure``."""
    import logging

    import papermill as pm

    logging.getLogger("papermill").setLevel(logging.ERROR)  # its INFO lines would interleave with ours
    try:
        pm.execute_notebook(str(nb), str(executed), parameters=parameters, cwd=str(nb.parent), progress_bar=False,
                            log_output=False, kernel_name="python3", kernel_manager_class=_kernel_manager())
    except pm.PapermillExecutionError as exc:
        raise ChapterFailed(f"chapter {nb.stem} failed in cell [{exc.exec_count}] with {exc.ename}: "
                            f"{exc.evalue}{after_failure}") from None


def run_course(profile: str = "sample", out: str | Path = "executed", only: list[str] | None = None,
               log=print, notebooks: Path = NOTEBOOKS, fg_dir: str | Path | None = None,
               bg_dir: str | Path | None = None, floor_dir: str | Path | None = None,
               parameters: dict | None = None) -> Path:
    """Execute every chapter in order with papermill under ``profile``; returns ``OUT/report.md``.

    ``OUT/notebooks/`` gets the executed chapters, ``OUT/data/<profile>/`` the world, dataset and
    trained run they build (each step resumes, so running again after a failure continues), and
    ``OUT/report.md`` the key figures. ``only`` keeps chapters whose number or name is listed.
    ``fg_dir``, ``bg_dir``, ``floor_dir``: your own folders, passed to every chapter that takes them
    (the later chapters find the dataset built from them in ``OUT/data``). ``parameters``: other
    values of the chapters' parameters cells, each passed to the chapters that declare it (e.g.
    ``{"epochs": 1}`` reaches chapter 11 alone; 12 and 13 then use the run it trained).
    Raises :class:`ChapterFailed` at the first failing chapter.
    """
    import time

    import papermill as pm

    from .config import get_profile

    get_profile(profile)  # an unknown profile fails here, before any chapter runs
    todo = chapters(notebooks, only)  # and so does a missing checkout, before any folder is made
    out = Path(out).resolve()
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    data_root = out / "data"
    times = {}
    t_all = time.perf_counter()
    for i, nb in enumerate(todo, 1):
        executed = out / "notebooks" / nb.name
        log(f"[{i:2d}/{len(todo)}] {nb.stem:<34s}", end="", flush=True)
        t0 = time.perf_counter()
        own = {k: str(Path(v).resolve()) for k, v in (("fg_dir", fg_dir), ("bg_dir", bg_dir), ("floor_dir", floor_dir)) if v}
        declared = pm.inspect_notebook(str(nb))
        try:
            _execute(nb, executed, {"profile": profile, "data_root": str(data_root),
                                    **{k: v for k, v in {**(parameters or {}), **own}.items() if k in declared}},
                     f"\nthe executed notebook, with the error in place: {executed}")
        except ChapterFailed:
            log("FAILED")
            raise
        times[nb.stem] = time.perf_counter() - t0
        log(f"{times[nb.stem]:6.1f} s")
    report = out / "report.md"
    report.write_text(course_report(profile, data_root, times, time.perf_counter() - t_all))
    return report


def _table(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def course_report(profile: str, data_root: str | Path, times: dict[str, float], total_s: float) -> str:
    """A short markdown report of a course run: where it ran, chapter times, dataset, training, test metrics."""
    from .config import environment_report, get_profile
    from .pipeline import data_paths
    from .storage import read_json

    paths = data_paths(get_profile(profile), data_root)
    env = environment_report()
    parts = [f"# depthmask course run: profile `{profile}`", "",
             f"Python {env['python']}, torch {env['torch']}, {env['cpus']} CPU cores, device: {env['device']}. "
             f"{len(times)} chapters in {total_s / 60:.1f} minutes.", "", "## Chapters", "",
             _table([{"chapter": k, "seconds": f"{v:.1f}"} for k, v in times.items()])]
    info_path = paths["dataset"] / "dataset.json"
    if info_path.exists():
        info = read_json(info_path)
        counts = info.get("counts", {})
        depth = info.get("depth", {})
        parts += ["", "## Dataset", "", f"`{paths['dataset']}`: " + ", ".join(f"{v:,} {k}" for k, v in counts.items()
                                                                               if isinstance(v, int))
                  + (f"; depth from teacher `{depth.get('teacher')}` ({depth.get('mode')})." if depth else "; no depth labels.")]
        placed = info.get("placement", {})
        if placed:
            parts[-1] += (f" Placement `{placed['mode']}`: {placed['on_floor']:,} composites with their feet on the floor, "
                          f"{placed['uniform']:,} placed anywhere.")
        visible = depth.get("person_visible")
        if visible:
            parts[-1] += (f" The depth label shows the person in front of what is behind them in "
                          f"{visible['share']:.1%} of {visible['checked']:,} checked composites.")
    history = paths["run"] / "history.csv"
    if history.exists():
        import pandas as pd

        h = pd.read_csv(history)
        last = h.iloc[-1]
        cfg = read_json(paths["run"] / "config.json") if (paths["run"] / "config.json").exists() else {}
        model = cfg.get("config", cfg).get("model", "?")
        cols = [c for c in ("val_mask_iou", "val_depth_rmse") if c in h]
        parts += ["", "## Training", "", f"`{paths['run']}`: model `{model}`, {len(h)} epochs"
                  + (f", {h['seconds'].sum() / 60:.1f} minutes" if "seconds" in h else "") + "; last epoch: "
                  + ", ".join(f"{c} {last[c]:.3f}" for c in cols) + "."]
    metrics = paths["run"] / "metrics.json"
    if metrics.exists():
        m = read_json(metrics)
        keys = ["mask_iou", "mask_boundary_f", "depth_rmse", "depth_abs_rel", "depth_delta1", "depth_ssim"]
        rows = [{"test group": "all", "n": m["test"].get("n", "")} | {k: f"{m['test'][k]:.3f}" for k in keys if k in m["test"]}]
        for g, v in m.get("groups", {}).items():
            rows.append({"test group": g, "n": v.get("n", "")} | {k: f"{v[k]:.3f}" for k in keys if k in v})
        parts += ["", "## Test metrics (held-out rooms and people)", "", _table(rows)]
    return "\n".join(parts) + "\n"


def clean_executed(path: Path) -> list[str]:
    """Strip what a run leaves that does not belong in the committed chapter: execution timestamps,
    papermill's run metadata (it holds machine paths), the sliders' saved widget state and an
    injected-parameters cell. Returns the
    problems a reader would see and that cannot be stripped: stderr or error outputs, size over 1 MB."""
    nb = json.loads(path.read_text())
    nb["metadata"].pop("papermill", None)
    nb["metadata"].pop("widgets", None)  # the sliders' saved state: dead without a kernel, and 100 KB
    nb["cells"] = [c for c in nb["cells"] if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    problems = []
    for i, c in enumerate(nb["cells"]):
        c.get("metadata", {}).pop("execution", None)
        c.get("metadata", {}).pop("papermill", None)
        for o in c.get("outputs", []):
            if o.get("output_type") == "error" or o.get("name") == "stderr":
                problems.append(f"cell {i}: {o.get('output_type')} {o.get('name', o.get('ename', ''))}")
    text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    path.write_text(text)
    if len(text.encode()) > 1_000_000:
        problems.append(f"{len(text.encode()) / 1e6:.2f} MB (limit 1 MB)")
    return problems


def refresh_chapters(only: list[str] | None = None, log=print, notebooks: Path = NOTEBOOKS) -> dict[str, list[str]]:
    """Re-run chapters top to bottom in place with their default (sample) parameters, as committed.

    Each runs in a fresh kernel from ``notebooks/``; the result replaces the chapter only if it ran,
    then :func:`clean_executed` strips run metadata. Returns ``{chapter: problems}`` for any with problems.
    """
    import tempfile
    import time

    out = {}
    for nb in chapters(notebooks, only):
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            executed = Path(tmp) / nb.name
            _execute(nb, executed, None, "; the chapter was left as it was")
            problems = clean_executed(executed)
            nb.write_text(executed.read_text())
        log(f"{nb.stem:<34s} {time.perf_counter() - t0:6.1f} s" + (f"  PROBLEMS: {problems}" if problems else ""))
        if problems:
            out[nb.stem] = problems
    return out
