"""Floor-aware placement (people stand on the floor, sized by perspective) and the depth-label check
that shows whether the person stands out from what is behind them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from depthmask_utils import compositing, depth, overlay, placement
from depthmask_utils.errors import InputError


def _floor(size=64, horizon=24, with_depth=True):
    """A level camera over a flat floor below ``horizon``: z proportional to 1 / (row - horizon)."""
    rows = np.arange(size, dtype=np.float32)[:, None].repeat(size, 1)
    mask = rows > horizon + 2
    z = np.where(mask, 40.0 / np.maximum(rows - horizon, 1), 20.0).astype(np.float32) if with_depth else None
    return placement.Floor(mask, z)


@pytest.mark.parametrize("with_depth", [False, True])
def test_feet_on_the_floor_boxes_in_frame_deterministic(with_depth):
    floor = _floor(with_depth=with_depth)
    a = placement.plan_floor_placements(30, 60, 64, 6, (0.35, 0.65), placement.placement_rng(0, 1, 2, 0), floor)
    b = placement.plan_floor_placements(30, 60, 64, 6, (0.35, 0.65), placement.placement_rng(0, 1, 2, 0), floor)
    (boxes, feet), (boxes2, feet2) = a, b
    assert np.array_equal(boxes, boxes2) and np.array_equal(feet, feet2)
    assert len({tuple(r) for r in boxes.tolist()}) == 6
    for (x, y, w, h), (fx, fy) in zip(boxes.tolist(), feet.tolist()):
        assert floor.mask[fy, fx]
        assert (fx, fy) == (x + w // 2, y + h - 1)  # the foot point is the bottom centre
        assert x >= 0 and y >= 0 and x + w <= 64 and y + h <= 64


def test_height_follows_perspective():
    floor = _floor(size=128, horizon=30)
    boxes, feet = placement.plan_floor_placements(20, 60, 128, 40, (0.35, 0.65), np.random.default_rng(3), floor)
    z = floor.depth[feet[:, 1], feet[:, 0]]
    z_ref = np.median(floor.depth[floor.mask])
    ratio = boxes[:, 3] / 128 / (0.5 * z_ref / z)  # measured height over the perspective height
    assert ratio.min() > compositing.PERSPECTIVE_SPREAD[0] - 0.05 and ratio.max() < compositing.PERSPECTIVE_SPREAD[1] + 0.05
    assert np.corrcoef(z, boxes[:, 3])[0, 1] < -0.8  # further away -> smaller


def test_nothing_nearer_stands_in_front_of_the_body():
    floor = _floor(size=96, horizon=20)
    floor.depth[30:70, 30:66] = 0.5  # a sofa back, nearer than any floor point
    floor.mask[30:70, 30:66] = False
    boxes, feet = placement.plan_floor_placements(20, 50, 96, 12, (0.35, 0.65), np.random.default_rng(0), floor)
    for (x, y, w, h) in boxes.tolist():
        body = floor.depth[y:y + h, x + w // 4:x + w - w // 4]
        assert body.min() >= 0.97 * floor.depth[y + h - 1, x + w // 2]


def test_box_min_is_numpys_min_over_every_box():
    rng = np.random.default_rng(0)
    for shape in ((1, 1), (37, 53), (224, 224)):
        a = rng.random(shape, dtype=np.float32)
        box_min = placement.BoxMin(a)
        x0, y0 = rng.integers(0, shape[1], 500), rng.integers(0, shape[0], 500)
        x1, y1 = x0 + 1 + rng.integers(0, shape[1] - x0), y0 + 1 + rng.integers(0, shape[0] - y0)
        want = [a[ya:yb, xa:xb].min() for xa, ya, xb, yb in zip(x0, y0, x1, y1)]
        assert np.array_equal(box_min(x0, y0, x1, y1), np.array(want, np.float32))


def _plan_one_by_one(fg_w, fg_h, size, n, scale, rng, floor):
    """The planner's definition, one candidate at a time: the first n candidates that fit in the frame,
    have no nearer surface over the body and are not a box already taken (the batched code must agree)."""
    ys, xs = floor.points
    lo, hi = scale
    boxes, feet = [], []
    for _ in range(50):
        i = rng.integers(ys.size, size=4 * n + 16)
        fx, fy = xs[i], ys[i]
        z_foot = np.maximum(floor.depth[fy, fx], 1e-6).astype(np.float64)
        frac = (lo + hi) / 2 * floor.z_ref / z_foot * rng.uniform(*compositing.PERSPECTIVE_SPREAD, size=i.size)
        w, h = placement.fit_boxes(fg_w, fg_h, size, frac)
        h_lo, h_hi = compositing.perspective_range(scale)
        for j in range(i.size):
            box = (int(fx[j] - w[j] // 2), int(fy[j] - h[j] + 1), int(w[j]), int(h[j]))
            x, y, bw, bh = box
            if not (h_lo <= frac[j] <= h_hi and x >= 0 and y >= 0 and x + bw <= size) or box in boxes:
                continue
            if floor.depth[y:y + bh, x + bw // 4:x + bw - bw // 4].min() < 0.97 * z_foot[j]:
                continue
            boxes.append(box)
            feet.append((int(fx[j]), int(fy[j])))
            if len(boxes) == n:
                return np.array(boxes), np.array(feet)
    return None


@pytest.mark.parametrize("seed", range(6))
def test_batched_floor_plan_is_the_one_by_one_plan(seed):
    floor = _floor(size=96, horizon=20)
    floor.depth[30:70, 30:66] = 0.5  # a sofa back: many candidates are redrawn
    floor.mask[30:70, 30:66] = False
    for fg_w, fg_h, n in ((20, 50, 12), (8, 60, 60), (40, 30, 5)):
        got = placement.plan_floor_placements(fg_w, fg_h, 96, n, (0.35, 0.65), np.random.default_rng(seed), floor)
        want = _plan_one_by_one(fg_w, fg_h, 96, n, (0.35, 0.65), np.random.default_rng(seed), floor)
        assert (got is None) == (want is None)
        if got is not None:
            assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


@pytest.mark.parametrize("with_depth", [False, True])
def test_many_streams_at_once_plan_as_each_alone(with_depth):
    # plan_background plans a room's (person, flip) streams together; each must get its own plan,
    # including streams that need several batches and ones the floor cannot hold (None).
    floor = _floor(size=96, horizon=20, with_depth=with_depth)
    if with_depth:
        floor.depth[30:70, 30:66] = 0.5
    floor.mask[30:70, 30:66] = False
    sizes = [(20, 50), (8, 60), (40, 30), (300, 20), (5, 90), (30, 30)]
    for n in (3, 20, 150):
        many = placement.plan_floor_placements_many(sizes, 96, n, (0.35, 0.65),
                                                  [np.random.default_rng(k) for k in range(len(sizes))], floor)
        alone = [placement.plan_floor_placements(w, h, 96, n, (0.35, 0.65), np.random.default_rng(k), floor)
                 for k, (w, h) in enumerate(sizes)]
        assert any(a is not None for a in alone)
        for m, a in zip(many, alone):
            assert (m is None) == (a is None)
            if a is not None:
                assert np.array_equal(m[0], a[0]) and np.array_equal(m[1], a[1])


def test_no_floor_means_no_floor_plan():
    floor = placement.Floor(np.zeros((64, 64), bool))
    assert not floor.usable
    assert placement.plan_floor_placements(30, 60, 64, 3, (0.35, 0.65), np.random.default_rng(0), floor) is None


def test_sample_world_is_placed_on_its_floor_and_recorded(world, built):
    info = json.loads((built / "dataset.json").read_text())
    assert info["placement"]["mode"] == "floor" and info["placement"]["on_floor"] > 0
    m = pd.read_csv(built / "manifest.csv")
    assert set(m.placement) <= {"floor", "uniform"}
    assert (m.placement == "floor").sum() == info["placement"]["on_floor"]
    assert set(m.bg[m.placement == "uniform"]) == set(info["placement"]["uniform_bg"])
    floors = placement.find_floors(world / "bg", sorted(p.name for p in (world / "bg").iterdir()), 64)
    for r in m[m.placement == "floor"].itertuples():
        assert floors[r.bg].mask[r.foot_y, r.foot_x]


def test_placement_choices_and_bad_floor_folders(world, tmp_path):
    bg_only = tmp_path / "photos" / "bg"
    shutil.copytree(world / "bg", bg_only)  # no bg_floor beside it: like a folder of ordinary photos
    r = overlay.generate(bg_only, world / "fg", tmp_path / "u", size=48, placements=2, workers=1, progress=False,
                         placement="uniform")
    placed = json.loads((r.out / "dataset.json").read_text())["placement"]
    assert (placed["mode"], placed["floors"], placed["on_floor"]) == ("uniform", "none", 0)
    # Without masks, floor placement (the default) stands people on floors estimated from a teacher's depth.
    r = overlay.generate(bg_only, world / "fg", tmp_path / "e", size=48, placements=2, workers=1, progress=False)
    placed = json.loads((r.out / "dataset.json").read_text())["placement"]
    assert (placed["mode"], placed["floors"]) == ("floor", "estimated by mini") and placed["on_floor"] == r.on_floor
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


@pytest.mark.parametrize("n_bg,n_fg,k", [(400, 32, 8), (10, 7, 3), (5, 5, 8), (3, 4, None)])
def test_each_room_takes_its_turn_of_the_people(n_bg, n_fg, k):
    rooms = [placement.foregrounds_for(bg, n_fg, k) for bg in range(n_bg)]
    per = n_fg if k is None else min(k, n_fg)
    assert all(len(r) == len(set(r)) == per and r == sorted(r) for r in rooms)
    seen = np.bincount([fg for r in rooms for fg in r], minlength=n_fg)
    assert seen.max() - seen.min() <= 1  # every person in as many rooms as every other, within one
    assert rooms == [placement.foregrounds_for(bg, n_fg, k) for bg in range(n_bg)]  # a rule, not a draw


def test_a_room_plans_only_its_people(world):
    sizes = [(20, 40), (22, 44), (18, 40), (20, 50)]
    rows = placement.build_plan(sizes, 3, 64, 2, (0.35, 0.65), 0, fg_per_bg=2)
    assert len(rows) == 3 * 2 * 2 * 2
    for bg in range(3):
        assert sorted({r["fg"] for r in rows if r["bg"] == bg}) == placement.foregrounds_for(bg, 4, 2)
    # A person's placements in a room are the same whichever other people share it: the streams are per (bg, fg, flip).
    every = {r["id"]: r for r in placement.build_plan(sizes, 3, 64, 2, (0.35, 0.65), 0)}
    assert all(every[r["id"]] == r for r in rows)
