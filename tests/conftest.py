import os
import shutil

import pytest
import torch

# Tests never download: any hub access must fail at once rather than retry for half a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A tiny sample world: 3 rooms, 4 people (the last on a plain backdrop)."""
    from depthmask_utils.sample import make_sample_world

    out = tmp_path_factory.mktemp("world")
    make_sample_world(out, n_bg=3, n_fg=4, size=72, seed=1)
    return out


@pytest.fixture(scope="session")
def built(world, tmp_path_factory):
    """A generated dataset over the tiny world (read-only: copy it before changing it)."""
    from depthmask_utils.overlay import generate

    out = tmp_path_factory.mktemp("ds") / "ds"
    generate(world / "bg", world / "fg", out, size=64, placements=3, workers=1, progress=False)
    return out


@pytest.fixture
def dataset(built, tmp_path):
    """A private copy of the generated dataset."""
    dst = tmp_path / "ds"
    shutil.copytree(built, dst)
    return dst


@pytest.fixture(scope="session")
def labelled(tmp_path_factory):
    """A depth-labelled dataset with statistics, big enough to split: 8 rooms x 6 people x 2 x 2 at 64 px."""
    from depthmask_utils.depth import label_depth
    from depthmask_utils.overlay import generate
    from depthmask_utils.sample import make_sample_world
    from depthmask_utils.stats import dataset_stats

    world = tmp_path_factory.mktemp("world8")
    make_sample_world(world, n_bg=8, n_fg=6, size=64, seed=3)
    out = tmp_path_factory.mktemp("labelled") / "ds"
    generate(world / "bg", world / "fg", out, size=64, placements=2, workers=1, progress=False)
    label_depth(out, "scene", progress=False)
    dataset_stats(out, workers=1, progress=False)
    return out


@pytest.fixture
def toy_scene():
    """Four 32-px scenes a tiny model can fit: random rooms with a red box each, depth a ramp, the box
    at 0.7. A dict of float (4, C, 32, 32) tensors in 0..1: fg_bg, bg, mask, depth."""
    torch.manual_seed(0)
    bg = torch.rand(4, 3, 32, 32)
    mask = torch.zeros(4, 1, 32, 32)
    for i in range(4):
        mask[i, :, 4 + i:20 + i, 8:16 + i] = 1
    fg_bg = bg * (1 - mask) + mask * torch.tensor([0.9, 0.2, 0.2]).view(1, 3, 1, 1)
    depth = torch.linspace(0, 1, 32).view(1, 1, 32, 1).expand(4, 1, 32, 32) * (1 - mask) + 0.7 * mask
    return {"fg_bg": fg_bg, "bg": bg, "mask": mask, "depth": depth}
