"""The course frame: Colab badges and install cells agree with _config.yml, papermill reads every
parameters cell, and `run` executes chapters in order and stops at the first failure."""

from __future__ import annotations

import json
import logging
import re
import sys
import types
from pathlib import Path

import pytest

from depthmask_utils import course

CHAPTERS = course.chapters()
PARAM_LINE = re.compile(r"^(\w+): (str|int|float|bool) = (.+?)  # ([^=]+)$")


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _tagged(path: Path, tag: str) -> list[str]:
    return ["".join(c["source"]) for c in _cells(path) if tag in c.get("metadata", {}).get("tags", [])]


def test_fourteen_chapters_in_order():
    assert [p.name[:2] for p in CHAPTERS] == [f"{i:02d}" for i in range(14)]


def test_badges_and_install_cells_match_config():
    assert course.sync_notebooks(write=False) == {}, "run `python -m depthmask_utils colab`"


def test_one_line_in_config_moves_every_badge_and_cell(tmp_path):
    for p in CHAPTERS[:3]:
        (tmp_path / p.name).write_text(p.read_text())
    other = course.Repository("https://github.com/someone/fork-of-course", "dev")
    changed = {p.name: course.sync_notebook(p, other) for p in sorted(tmp_path.glob("*.ipynb"))}
    assert all(set(v) == {"badge", "install cell text"} for v in changed.values())
    for p in sorted(tmp_path.glob("*.ipynb")):
        text = p.read_text()
        assert "depthmask/depthmask-course" not in text
        assert f"colab.research.google.com/github/someone/fork-of-course/blob/dev/notebooks/{p.name}" in text
        assert course.sync_notebook(p, other) == []  # idempotent


def test_config_without_repository_is_refused(tmp_path):
    (tmp_path / "_config.yml").write_text("title: x\n")
    with pytest.raises(ValueError, match="repository.url"):
        course.repository(tmp_path / "_config.yml")
    with pytest.raises(ValueError, match="OWNER/NAME"):
        course.Repository("https://gitlab.com/a/b", "main").slug


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name[:2])
def test_install_cell_installs_only_what_the_chapter_needs(path):
    (cell,) = _tagged(path, course.INSTALL_TAG)
    for tool in ("pytest", "nbval", "jupyter-book", "requirements.txt"):
        assert tool not in cell
    extra = course.EXTRAS.get(path.name[:2])
    assert (f"[{extra}]" in cell) if extra else ("[" not in cell.split("pip")[1].split("\n")[0])
    assert 'os.chdir(f"{COURSE}/notebooks")' in cell and "os.path.abspath(data_root)" in cell


def _fake_colab(monkeypatch, returncode: int):
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        return types.SimpleNamespace(returncode=returncode, stderr="fatal: repository not found")

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr("subprocess.run", fake_run)
    monkeypatch.setattr("os.path.isdir", lambda p: False)
    return calls


def test_install_cell_does_nothing_off_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    ns = {"data_root": "../data", "drive": False}
    exec(course.install_cell(course.repository(), "03_placing_and_compositing.ipynb"), ns)
    assert ns["data_root"] == "../data"


def test_install_cell_stops_with_the_failing_step(monkeypatch):
    calls = _fake_colab(monkeypatch, returncode=128)
    with pytest.raises(SystemExit, match="while cloning https://github.com/.*\n.*repository not found"):
        exec(course.install_cell(course.repository(), "11_training_loop.ipynb"), {"data_root": "../data", "drive": False})
    assert list(calls[0][:2]) == ["git", "clone"]


def test_install_cell_installs_the_extra_and_uses_absolute_paths(monkeypatch):
    calls = _fake_colab(monkeypatch, returncode=0)
    chdirs = []
    monkeypatch.setattr("os.chdir", chdirs.append)
    ns = {"data_root": "../data", "drive": False}
    exec(course.install_cell(course.repository(), "11_training_loop.ipynb"), ns)
    assert calls[1][-1].endswith("depthmask-course[model]") and "-e" in calls[1]
    assert chdirs == ["/content/depthmask-course/notebooks"] and Path(ns["data_root"]).is_absolute()


def test_install_cell_reads_your_folders_from_content_and_keeps_a_fresh_data_root_fresh_on_drive(monkeypatch):
    _fake_colab(monkeypatch, returncode=0)
    monkeypatch.setattr("os.chdir", lambda p: None)
    mounted = []
    fake_drive = types.SimpleNamespace(mount=mounted.append)
    monkeypatch.setattr(sys.modules["google.colab"], "drive", fake_drive, raising=False)
    chapter = CHAPTERS[[p.name[:2] for p in CHAPTERS].index("03")]
    cell = course.install_cell(course.repository(), chapter.name,
                               course._path_parameters(_tagged(chapter, "parameters")[0]))
    ns = {"data_root": "../data_dogs", "drive": True, "fg_dir": "dogs", "bg_dir": "", "floor_dir": "/content/drive/floors"}
    exec(cell, ns)
    assert ns["fg_dir"] == "/content/dogs"  # uploaded in Colab's file panel
    assert ns["bg_dir"] == "" and ns["floor_dir"] == "/content/drive/floors"  # empty: the sample's; absolute: as is
    assert ns["data_root"] == "/content/drive/MyDrive/depthmask-course/data_dogs" and mounted == ["/content/drive"]
    ns = {**ns, "data_root": "/content/drive/MyDrive/mine"}  # already on Drive: kept
    exec(cell, ns)
    assert ns["data_root"] == "/content/drive/MyDrive/mine"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name[:2])
def test_parameters_cell_is_readable_by_papermill(path, caplog):
    import papermill as pm

    (cell,) = _tagged(path, "parameters")
    lines = [ln for ln in cell.splitlines() if ln.strip()]
    for ln in lines:
        assert PARAM_LINE.match(ln), f"{path.name}: {ln!r} is not `name: type = value  # help` (no '=' in help)"
    with caplog.at_level(logging.WARNING, logger="papermill"):
        params = pm.inspect_notebook(str(path))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert list(params) == [PARAM_LINE.match(ln).group(1) for ln in lines]
    assert all(p["help"] and p["default"] for p in params.values())
    assert {"profile", "data_root", "drive"} <= set(params)


def _notebook(cells: list[str]) -> dict:
    return {"cells": [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {"tags": tags},
                       "outputs": [], "source": src} for i, (src, tags) in enumerate(cells)],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def test_run_stops_at_the_first_failing_chapter_and_names_it(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    params = ('profile: str = "sample"  # p\ndata_root: str = "../data"  # d', ["parameters"])
    (nbs / "00_fine.ipynb").write_text(json.dumps(_notebook([params, ("x = 1", [])])))
    (nbs / "01_broken.ipynb").write_text(json.dumps(_notebook([params, ("raise ValueError('no rooms found')", [])])))
    (nbs / "02_never.ipynb").write_text(json.dumps(_notebook([params])))
    lines = []
    with pytest.raises(course.ChapterFailed, match=r"chapter 01_broken failed .*ValueError: no rooms found") as exc:
        course.run_course("sample", tmp_path / "out", log=lambda *a, **k: lines.append(" ".join(map(str, a))),
                          notebooks=nbs)
    assert str(tmp_path / "out" / "notebooks" / "01_broken.ipynb") in str(exc.value)
    assert (tmp_path / "out" / "notebooks" / "00_fine.ipynb").exists()
    assert not (tmp_path / "out" / "notebooks" / "02_never.ipynb").exists()
    assert not (tmp_path / "out" / "report.md").exists()
    assert "FAILED" in lines


@pytest.mark.slow
def test_run_executes_a_real_chapter_and_reports(tmp_path, capfd):
    from depthmask_utils.cli import main

    assert main(["run", "--out", str(tmp_path), "--only", "00"]) == 0
    out, err = capfd.readouterr()
    assert "WARNING" not in err and "Warning" not in err, err  # no kernel or papermill warnings
    assert re.search(r"\[ 1/1\] 00_setup\s+\d+\.\d s", out)
    executed = json.loads((tmp_path / "notebooks" / "00_setup.ipynb").read_text())
    injected = [c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert str(tmp_path / "data") in "".join(injected[0]["source"])
    report = (tmp_path / "report.md").read_text()
    assert "profile `sample`" in report and "| 00_setup |" in report


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name[:2])
def test_committed_chapter_is_clean(path):
    """What the book shows: no stderr or error output, no run metadata or timestamps, under 1 MB."""
    nb = json.loads(path.read_text())
    assert "papermill" not in nb["metadata"]
    assert path.stat().st_size < 1_000_000
    for i, c in enumerate(nb["cells"]):
        meta = c.get("metadata", {})
        assert "execution" not in meta and "papermill" not in meta, f"cell {i} keeps run metadata"
        assert "injected-parameters" not in meta.get("tags", [])
        assert "NBVAL" not in "".join(c["source"]), f"cell {i}: nbval markers belong in cell tags"
        for o in c.get("outputs", []):
            assert o.get("output_type") != "error" and o.get("name") != "stderr", f"cell {i} shows {o}"
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and "colab-install" not in c["metadata"].get("tags", [])]
    assert all(c.get("execution_count") for c in code[1:]), "commit the outputs of a full run"


def test_clean_executed_strips_run_metadata(tmp_path):
    nb = _notebook([("x = 1", ["injected-parameters"]), ("y = 2", [])])
    nb["metadata"]["papermill"] = {"input_path": "/home/me/secret"}
    nb["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nb["cells"][1]["metadata"]["execution"] = {"iopub.status.busy": "2026-01-01"}
    nb["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stderr", "text": "10%|#"}]
    p = tmp_path / "n.ipynb"
    p.write_text(json.dumps(nb))
    problems = course.clean_executed(p)
    cleaned = json.loads(p.read_text())
    assert problems == ["cell 0: stream stderr"]
    assert "papermill" not in cleaned["metadata"] and "widgets" not in cleaned["metadata"] and len(cleaned["cells"]) == 1
    assert "execution" not in cleaned["cells"][0]["metadata"]


def test_course_commands_outside_a_checkout_say_what_they_need(tmp_path, capsys):
    from depthmask_utils import cli
    from depthmask_utils.course import CheckoutNeeded, chapters, repository

    with pytest.raises(CheckoutNeeded, match="no chapter notebooks.*git clone"):
        chapters(tmp_path)
    with pytest.raises(CheckoutNeeded, match="_config.yml: the book's configuration not found"):
        repository(tmp_path / "_config.yml")
    assert cli.main(["run", "--notebooks", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "checkout of the course" in capsys.readouterr().err


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name[:2])
def test_every_chapter_is_a_lesson(path):
    """Badge and objectives on top, a failure shown next to its fix, a summary, 3-5 exercises each
    with a hidden solution (one coded and checked from chapter 03 on), and the next chapter last."""
    cells = _cells(path)
    md = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    assert "colab-badge" in md[0] and "**You will learn to**" in md[0], path.name
    assert any(re.search(r"^#+ .*What goes wrong", s, re.M) for s in md), f"{path.name}: no 'What goes wrong' section"
    assert any(re.search(r"^## Summary", s, re.M) for s in md), f"{path.name}: no Summary"
    start = next(i for i, s in enumerate(md) if s.startswith("## Exercises"))
    exercises = "\n".join(md[start:])
    n = len(re.findall(r"^\d\. ", exercises, re.M))
    assert 3 <= n <= 5 and exercises.count(":::{dropdown} Solution") == n, f"{path.name}: {n} exercises"
    if int(path.name[:2]) >= 3:
        assert any(re.search(r"dm\.check\.\w+\(", s) for s in code), f"{path.name}: no coded exercise with dm.check"
    assert md[-1].startswith("**Next:**"), f"{path.name}: the last cell is not the way on"
