import json

import numpy as np
from PIL import Image

from depthmask_utils.sample import make_sample_world, random_room, read_depth_mm, render_person, render_room


def test_world_layout_and_depth(world):
    bgs = sorted((world / "bg").glob("*.jpg"))
    assert len(bgs) == 3
    for p in bgs:
        rgb = Image.open(p)
        depth = read_depth_mm(world / "bg_depth" / (p.stem + ".png"))
        assert rgb.size == (96, 72) and depth.shape == (72, 96)
        assert 0.5 < depth.min() < depth.max() < 20  # metres, inside a room
    assert json.loads((world / "world.json").read_text())["params"]["n_fg"] == 4
    fgs = sorted((world / "fg").iterdir())
    assert [p.suffix for p in fgs] == [".png", ".png", ".png", ".jpg"]  # last one on a plain backdrop
    assert Image.open(fgs[-1]).mode == "RGB"


def test_rooms_deterministic_and_depth_is_exact_geometry():
    room = random_room(3)
    a, da = render_room(room, 48, 64)
    b, db = render_room(random_room(3), 48, 64)
    assert np.array_equal(a, b) and np.array_equal(da, db)
    # Floor pixels: the ray hits y = 0, so z-depth follows from the camera height and the ray slope.
    assert da[-1].mean() < da[24].mean()  # the bottom row (floor near the camera) is nearer than the middle


def test_people_have_soft_alpha_edges():
    rgba = render_person(5, 120)
    alpha = rgba[..., 3]
    soft = ((alpha > 0) & (alpha < 255)).sum()
    assert (alpha == 255).sum() > 500 and soft > 50
    assert alpha[0].max() == 0 and alpha[:, 0].max() == 0  # transparent margin to crop


def test_world_is_reproducible(tmp_path):
    make_sample_world(tmp_path / "a", 1, 2, 48, seed=4)
    make_sample_world(tmp_path / "b", 1, 2, 48, seed=4)
    for p in (tmp_path / "a").rglob("*.*"):
        assert p.read_bytes() == (tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes()
