import json
import math

import numpy as np
from PIL import Image

from depthmask_utils.sample import (_camera_rays, floor_mask, make_sample_world, random_room, read_depth_mm,
                                    render_person, render_room)


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
    H, W = 48, 64
    room = random_room(3)
    a, da = render_room(room, H, W)
    b, db = render_room(random_room(3), H, W)
    assert np.array_equal(a, b) and np.array_equal(da, db)

    # The camera basis, built here from pitch (tilt down), yaw (turn right) and the horizontal
    # field of view rather than taken from the renderer.
    cp, sp, cy, sy = math.cos(room.pitch), math.sin(room.pitch), math.cos(room.yaw), math.sin(room.yaw)
    forward = np.array([sy * cp, -sp, cy * cp])
    right = np.array([cy, 0.0, -sy])
    up = np.array([sy * sp, cp, cy * sp])
    f = 0.5 * W / math.tan(math.radians(room.fov_deg) / 2)  # focal length in pixels
    j, i = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)  # pixel centres
    rays = (forward + ((j - W / 2) / f)[..., None] * right - ((i - H / 2) / f)[..., None] * up)
    assert np.allclose(rays.reshape(-1, 3), _camera_rays(room, H, W)[1])  # same camera as the renderer

    # Floor pixels: the ray meets the plane y = 0 (or, on the rug, its top face); z-depth is the
    # distance from the camera to that point measured along the forward axis.
    floor = floor_mask(room, H, W)
    rug = next(b for b in room.boxes if b.texture == "rug")
    down = rays[..., 1] < 0
    assert floor.sum() > 0.1 * H * W and down[floor].all()

    def hit(plane_y):
        s = (plane_y - room.cam_pos[1]) / np.where(down, rays[..., 1], -1.0)
        return room.cam_pos + s[..., None] * rays

    on_floor, on_rug = hit(0.0), hit(rug.hi[1])
    rug_top = (down & (on_rug[..., 0] > rug.lo[0]) & (on_rug[..., 0] < rug.hi[0])
               & (on_rug[..., 2] > rug.lo[2]) & (on_rug[..., 2] < rug.hi[2]))
    plain = floor & ~rug_top
    assert plain.sum() > 0.05 * H * W
    expected = ((np.where(rug_top[..., None], on_rug, on_floor) - room.cam_pos) @ forward)
    np.testing.assert_allclose(da[plain], expected[plain], rtol=1e-3)
    np.testing.assert_allclose(da[floor & rug_top], expected[floor & rug_top], rtol=1e-3)
    # z-depth, not the distance along the ray: they differ off-centre, so this tells the two apart.
    ray_dist = np.linalg.norm(on_floor - room.cam_pos, axis=-1)
    assert (ray_dist[plain] > da[plain] * 1.01).any()


def test_people_have_soft_alpha_edges():
    rgba = render_person(5, 120)
    alpha = rgba[..., 3]
    soft = ((alpha > 0) & (alpha < 255)).sum()
    assert (alpha == 255).sum() > 500 and soft > 50
    assert alpha[0].max() == 0 and alpha[:, 0].max() == 0  # transparent margin to crop


def test_world_is_reproducible_with_any_number_of_workers(tmp_path):
    make_sample_world(tmp_path / "a", 3, 2, 48, seed=4, workers=1)
    make_sample_world(tmp_path / "b", 3, 2, 48, seed=4, workers=2)
    files = sorted((tmp_path / "a").rglob("*.*"))
    assert len([p for p in files if p.parent.name == "bg"]) == 3
    for p in files:
        assert p.read_bytes() == (tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes()


def test_a_world_rendered_again_with_other_counts_keeps_nothing_of_the_old(tmp_path):
    make_sample_world(tmp_path, n_bg=2, n_fg=2, size=48, seed=1, workers=1)
    assert sorted(p.name for p in (tmp_path / "fg").iterdir()) == ["person_000.png", "person_001.jpg"]
    make_sample_world(tmp_path, n_bg=1, n_fg=3, size=48, seed=1, workers=1)
    # person_001 is an RGBA figure now, and room 1 is not in this world: the old files are gone.
    assert sorted(p.name for p in (tmp_path / "fg").iterdir()) == ["person_000.png", "person_001.png", "person_002.jpg"]
    assert [p.name for p in (tmp_path / "bg").iterdir()] == ["room_000.jpg"]
