"""What a student really runs: every chapter on their own folders under the `full` profile's code paths
(the `smoke` profile), and the Colab install cell for real: a git clone, a pip install into a fresh
virtual environment, then the chapter's first cells from the clone."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from depthmask_utils import course

ROOT = Path(course.__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def own_folders(tmp_path_factory):
    """Own-photo folders made from a sample world's renders: room JPEGs and people, nothing else
    (no bg_depth/, no bg_floor/): what a student brings."""
    from depthmask_utils.sample import make_sample_world

    world = tmp_path_factory.mktemp("world")
    make_sample_world(world, n_bg=12, n_fg=6, size=96, seed=7)
    own = tmp_path_factory.mktemp("own")
    shutil.copytree(world / "bg", own / "photos")
    shutil.copytree(world / "fg", own / "people")
    return own


@pytest.mark.slow
def test_every_chapter_runs_on_own_photos_with_the_full_profiles_code_paths(own_folders, tmp_path):
    out = tmp_path / "course"
    # epochs = 3 in chapter 11's parameters (the profile says 2), as a student changes it: 12 and 13 use that run
    report = course.run_course("smoke", out, log=lambda *a, **k: None, fg_dir=own_folders / "people",
                               bg_dir=own_folders / "photos", parameters={"epochs": 3})
    dataset = out / "data" / "smoke" / "dataset"
    info = json.loads((dataset / "dataset.json").read_text())
    assert info["inputs"]["bg_dir"] == str((own_folders / "photos").resolve())  # the student's, not the sample world
    assert info["placement"]["floors"] == "estimated by mini" and info["placement"]["on_floor"] > 0
    assert (info["depth"]["teacher"], info["depth"]["mode"], info["depth"]["weights"]) == \
        ("mini", "per-composite", "pretrained")
    run = out / "data" / "smoke" / "run"
    cfg = json.loads((run / "config.json").read_text())["config"]
    assert cfg["model"] == "resnet18" and cfg["sizes"] == [32, 64] and cfg["epochs"] == 3
    assert (run / "metrics.json").exists() and "Test metrics" in report.read_text()
    assert len(list((out / "notebooks").glob("*.ipynb"))) == len(course.chapters())


def _git(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_colab_install_cell_for_real_clone_install_and_first_cells(tmp_path):
    repo = course.repository()
    if _git("rev-parse", "--verify", repo.branch).returncode != 0:
        pytest.skip(f"no local branch {repo.branch!r} to clone")
    # A fake google.colab (what the cell checks for), a fresh venv that sees this machine's packages
    # (Colab ships torch and friends), and pip told to use no index: nothing is downloaded.
    fake = tmp_path / "fake"
    (fake / "google" / "colab").mkdir(parents=True)
    (fake / "google" / "__init__.py").write_text("")
    (fake / "google" / "colab" / "__init__.py").write_text("")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    # What Colab ships (torch, transformers, ...) is this environment's: the new venv sees its packages
    # through a .pth file, and its own bundled setuptools, older than the one torch requires, goes.
    subprocess.run([str(python), "-m", "pip", "uninstall", "-q", "-y", "setuptools"], check=True)
    inner = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    outer = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(inner) / "_colab_preinstalled.pth").write_text("\n".join(sorted(outer)) + "\n")
    nb = json.loads((ROOT / "notebooks" / "05_depth_labels.ipynb").read_text())
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"][:3]  # parameters, install, imports
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(fake)!r})
        import google.colab  # noqa: F401  (as on Colab)
        from IPython.terminal.interactiveshell import TerminalInteractiveShell  # runs %matplotlib inline
        shell = TerminalInteractiveShell.instance()
        for src in {cells!r}:
            result = shell.run_cell(src)
            if not result.success:
                raise SystemExit(f"cell failed: {{result.error_in_exec or result.error_before_exec!r}}")
        import os, depthmask_utils
        print("FILE", depthmask_utils.__file__)
        print("CWD", os.getcwd())
        print("DATA_ROOT", shell.user_ns["data_root"])
        print("PROFILE", shell.user_ns["P"].name)
    """)
    clone = tmp_path / "content" / "depthmask-course"
    env = {**os.environ, "DEPTHMASK_REPO": f"file://{ROOT}", "DEPTHMASK_COURSE_DIR": str(clone),
           "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0", "MPLBACKEND": "Agg"}
    done = subprocess.run([str(python), "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.split(" ", 1)[0].isupper())
    assert (clone / ".git").is_dir() and _git("rev-parse", "HEAD", cwd=clone).stdout == _git("rev-parse", repo.branch).stdout
    assert lines["FILE"].startswith(str(clone))  # the clone's package, not this checkout's
    assert lines["CWD"] == str(clone / "notebooks") and lines["DATA_ROOT"] == str(clone / "data")
    assert lines["PROFILE"] == "sample"
    # pip installed the clone into the fresh venv, with the chapter's extra
    listed = subprocess.run([str(python), "-m", "pip", "show", "-f", "depthmask_utils"], capture_output=True, text=True,
                            env=env)
    assert str(clone) in listed.stdout and str(venv) in listed.stdout


def test_a_dataset_on_drive_is_copied_to_local_disk_once_and_again_when_it_changes(built, tmp_path):
    from depthmask_utils.pipeline import stage_locally

    lines = []
    local = stage_locally(built, tmp_path / "local", log=lines.append)
    assert local == tmp_path / "local" / built.name and (local / "dataset.json").read_bytes() == \
        (built / "dataset.json").read_bytes()
    assert sorted(p.relative_to(local) for p in local.rglob("*")) == sorted(p.relative_to(built) for p in built.rglob("*"))
    assert len(lines) == 1 and lines[0].startswith(f"copied {built}")
    assert stage_locally(built, tmp_path / "local", log=lines.append) == local and len(lines) == 1  # reused
    changed = tmp_path / "changed" / built.name
    shutil.copytree(built, changed)
    (changed / "stats.json").write_text("{}")  # a later chapter added a file
    assert stage_locally(changed, tmp_path / "local", log=lines.append) == local and len(lines) == 2
    assert (local / "stats.json").exists() and not (tmp_path / "local" / f"{built.name}.partial").exists()


def test_later_chapters_use_the_run_chapter_11_trained_from_a_local_copy_with_its_own_settings(labelled, tmp_path):
    from depthmask_utils.checkpoint import run_overrides
    from depthmask_utils.config import get_profile, train_config
    from depthmask_utils.pipeline import data_paths, ensure_run, stage_locally
    from depthmask_utils.train import RunError, train

    # Chapter 11 on Colab with drive = True: the run on Drive, trained from a local copy of the dataset,
    # with values changed in its parameters cell (epochs, pretrained) or set-up cell (a named type).
    P, root = get_profile("sample"), tmp_path / "drive"
    local = stage_locally(labelled, tmp_path / "local", log=lambda *_: None)
    run = data_paths(P, root)["run"]
    tiny = dict(epochs=1, sizes=[32], batch_size=8, model_options={"base": 8, "levels": 3}, val_samples=25,
                pretrained=False, autocast_dtype="bfloat16")
    train(local, run, train_config(P, device="cpu", workers=0, **tiny), progress=False, log=lambda *_: None)
    made = (run / "model.pt").read_bytes()
    # Chapters 12 and 13 find that run as it is: no "another configuration", nothing trained again.
    assert ensure_run(P, root, local, log=lambda *_: None) == run
    assert (run / "model.pt").read_bytes() == made
    # What they must still refuse: the run scored as if trained on another dataset, or with other values.
    with pytest.raises(RunError, match="differs in: dataset"):
        ensure_run(P, root, labelled, log=lambda *_: None)
    with pytest.raises(RunError, match="differs in: epochs"):
        ensure_run(P, root, local, log=lambda *_: None, epochs=3)
    assert ensure_run(P, root, local, log=lambda *_: None, epochs=None) == run  # None: the run's own value
    recorded = run_overrides(run)
    assert recorded["epochs"] == 1 and "device" not in recorded and "workers" not in recorded  # runtime: free
    assert run_overrides(tmp_path / "nothing_here") == {}


def test_a_run_made_with_a_null_override_is_found_again(labelled, tmp_path):
    from depthmask_utils.checkpoint import run_overrides
    from depthmask_utils.config import get_profile, train_config
    from depthmask_utils.pipeline import data_paths, ensure_run
    from depthmask_utils.train import train

    # --set val_samples=null: validate on every composite, where the profile samples some. The run
    # records null; found again, it must stay null, not turn back into the profile's value.
    P, root = get_profile("sample"), tmp_path / "data"
    run = data_paths(P, root)["run"]
    tiny = ["epochs=1", "sizes=[32]", "batch_size=8", 'model_options={"base": 8, "levels": 3}', "val_samples=null"]
    train(labelled, run, train_config(P, tiny, device="cpu", workers=0), progress=False, log=lambda *_: None)
    assert P.train.val_samples is not None and run_overrides(run)["val_samples"] is None
    assert ensure_run(P, root, labelled, log=lambda *_: None) == run


def test_pretrained_encoder_weights_that_cannot_be_fetched_say_so_in_one_line(monkeypatch):
    import torch

    from depthmask_utils.errors import WeightsUnavailable
    from depthmask_utils.models import build_model

    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    import torchvision.models._api as weights_api

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(weights_api, "load_state_dict_from_url", offline)  # what torchvision calls: no download
    with pytest.raises(WeightsUnavailable, match=r"resnet18-.*\.pth: cannot fetch the ImageNet weights of resnet18 "
                                                 r"\(OSError: .*name resolution\); train from random weights"):
        build_model("resnet18", pretrained=True)
    from depthmask_utils.config import get_profile

    assert get_profile("full").train.pretrained is True and not get_profile("smoke").train.pretrained
