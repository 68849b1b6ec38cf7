"""Floor-aware placement (people stand on the floor, sized by perspective) and the depth-label check
that shows whether the person stands out from what is behind them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from depthmask_utils import depth, overlay
from depthmask_utils.errors import InputError


def _floor(size=64, horizon=24, with_depth=True):
    """A level camera over a flat floor below ``horizon``: z proportional to 1 / (row - horizon)."""
    rows = np.arange(size, dtype=np.float32)[:, None].repeat(size, 1)
    mask = rows > horizon + 2
    z = np.where(mask, 40.0 / np.maximum(rows - horizon, 1), 20.0).astype(np.float32) if with_depth else None
    return overlay.Floor(mask, z)


@pytest.mark.parametrize("with_depth", [False, True])
def test_feet_on_the_floor_boxes_in_frame_deterministic(with_depth):
    floor = _floor(with_depth=with_depth)
    a = overlay.plan_floor_placements(30, 60, 64, 6, (0.35, 0.65), overlay.placement_rng(0, 1, 2, 0), floor)
    b = overlay.plan_floor_placements(30, 60, 64, 6, (0.35, 0.65), overlay.placement_rng(0, 1, 2, 0), floor)
    (boxes, feet), (boxes2, feet2) = a, b
    assert np.array_equal(boxes, boxes2) and np.array_equal(feet, feet2)
    assert len({tuple(r) for r in boxes.tolist()}) == 6
    for (x, y, w, h), (fx, fy) in zip(boxes.tolist(), feet.tolist()):
        assert floor.mask[fy, fx]
        assert (fx, fy) == (x + w // 2, y + h - 1)  # the foot point is the bottom centre
        assert x >= 0 and y >= 0 and x + w <= 64 and y + h <= 64


def test_height_follows_perspective():
    floor = _floor(size=128, horizon=30)
    boxes, feet = overlay.plan_floor_placements(20, 60, 128, 40, (0.35, 0.65), np.random.default_rng(3), floor)
    z = floor.depth[feet[:, 1], feet[:, 0]]
    z_ref = np.median(floor.depth[floor.mask])
    ratio = boxes[:, 3] / 128 / (0.5 * z_ref / z)  # measured height over the perspective height
    assert ratio.min() > overlay.PERSPECTIVE_SPREAD[0] - 0.05 and ratio.max() < overlay.PERSPECTIVE_SPREAD[1] + 0.05
    assert np.corrcoef(z, boxes[:, 3])[0, 1] < -0.8  # further away -> smaller


def test_nothing_nearer_stands_in_front_of_the_body():
    floor = _floor(size=96, horizon=20)
    floor.depth[30:70, 30:66] = 0.5  # a sofa back, nearer than any floor point
    floor.mask[30:70, 30:66] = False
    boxes, feet = overlay.plan_floor_placements(20, 50, 96, 12, (0.35, 0.65), np.random.default_rng(0), floor)
    for (x, y, w, h) in boxes.tolist():
        body = floor.depth[y:y + h, x + w // 4:x + w - w // 4]
        assert body.min() >= 0.97 * floor.depth[y + h - 1, x + w // 2]


def test_no_floor_means_no_floor_plan():
    floor = overlay.Floor(np.zeros((64, 64), bool))
    assert not floor.usable
    assert overlay.plan_floor_placements(30, 60, 64, 3, (0.35, 0.65), np.random.default_rng(0), floor) is None


def test_sample_world_is_placed_on_its_floor_and_recorded(world, built):
    info = json.loads((built / "dataset.json").read_text())
    assert info["placement"]["mode"] == "floor" and info["placement"]["on_floor"] > 0
    m = pd.read_csv(built / "manifest.csv")
    assert set(m.placement) <= {"floor", "uniform"}
    assert (m.placement == "floor").sum() == info["placement"]["on_floor"]
    assert set(m.bg[m.placement == "uniform"]) == set(info["placement"]["uniform_bg"])
    floors = overlay.find_floors(world / "bg", sorted(p.name for p in (world / "bg").iterdir()), 64)
    for r in m[m.placement == "floor"].itertuples():
        assert floors[r.bg].mask[r.foot_y, r.foot_x]


def test_placement_choices_and_bad_floor_folders(world, tmp_path):
    bg_only = tmp_path / "photos" / "bg"
    shutil.copytree(world / "bg", bg_only)  # no bg_floor beside it: like a folder of ordinary photos
    r = overlay.generate(bg_only, world / "fg", tmp_path / "u", size=48, placements=2, workers=1, progress=False)
    assert json.loads((r.out / "dataset.json").read_text())["placement"]["mode"] == "uniform"
    with pytest.raises(InputError, match="needs floor masks"):
        overlay.generate(bg_only, world / "fg", tmp_path / "f", size=48, placements=2, placement="floor", progress=False)
    with pytest.raises(InputError, match="floor mask folder not found"):
        overlay.generate(bg_only, world / "fg", tmp_path / "f", size=48, placements=2, floor_dir=tmp_path / "nope",
                         progress=False)
    partial = tmp_path / "floors"
    shutil.copytree(world / "bg_floor", partial)
    next(partial.iterdir()).unlink()
    with pytest.raises(InputError, match="no floor mask for 1 backgrounds"):
        overlay.generate(bg_only, world / "fg", tmp_path / "f", size=48, placements=2, floor_dir=partial, progress=False)
    with pytest.raises(ValueError, match="placement must be one of"):
        overlay.generate(bg_only, world / "fg", tmp_path / "f", size=48, placement="ceiling", progress=False)
    # Given explicitly, the same masks place people on the floor (no depth beside them: heights from scale).
    r = overlay.generate(bg_only, world / "fg", tmp_path / "g", size=48, placements=2, floor_dir=world / "bg_floor",
                         workers=1, progress=False)
    assert json.loads((r.out / "dataset.json").read_text())["placement"]["mode"] == "floor"


def test_person_contrast_sign():
    mask = np.zeros((40, 40), np.uint8)
    mask[10:35, 15:25] = 255
    label = np.full((40, 40), 60, np.uint8)
    label[mask > 0] = 200  # the person is nearer (brighter) than the wall behind
    assert depth.person_contrast(mask, label) == pytest.approx(140 / 255)
    assert depth.person_contrast(mask, np.full((40, 40), 60, np.uint8)) == 0.0  # vanished into the wall
    assert depth.person_contrast(np.zeros((40, 40), np.uint8), label) is None


def test_labels_record_how_often_the_person_shows(labelled):
    info = json.loads((labelled / "dataset.json").read_text())
    seen = info["depth"]["person_visible"]
    again = depth.person_visibility(labelled)
    assert seen["share"] == again["share"] and seen["checked"] == again["checked"] > 0
    assert seen["share"] >= 0.9  # floor placement; uniform placement gives about 0.8 on the sample world
