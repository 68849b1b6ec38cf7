"""The student's path: their own folders (no exact depth, no floor masks), a network teacher, and the
rules that keep random teacher weights out of a real dataset."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from depthmask_utils import config, pipeline
from depthmask_utils.depth import label_depth, room_depth
from depthmask_utils.errors import DatasetError, InputError, TeacherUnavailable
from depthmask_utils.floor import estimate_floor, fit_plane_ransac, floor_iou
from depthmask_utils.mini_teacher import WEIGHTS, MiniDepthNet, load_mini_teacher, teacher_error
from depthmask_utils.overlay import generate
from depthmask_utils.placement import dataset_floors, load_floor
from depthmask_utils.storage import read_json
from depthmask_utils.train import RunError, TrainConfig, train


@pytest.fixture(scope="module")
def own_photos(world, tmp_path_factory):
    """The tiny world's room JPEGs and people copied into bare folders: no bg_depth/, no bg_floor/."""
    root = tmp_path_factory.mktemp("own")
    shutil.copytree(world / "bg", root / "bg")
    shutil.copytree(world / "fg", root / "fg")
    return root


@pytest.fixture(scope="module")
def own_dataset(own_photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("own_ds") / "ds"
    lines = []
    generate(own_photos / "bg", own_photos / "fg", out, size=64, placements=2, workers=1, progress=False,
             log=lines.append)
    label_depth(out, "mini", mode="per-composite", progress=False, device="cpu")
    return out, lines


def test_plane_fit_finds_a_floor_among_outliers():
    rng = np.random.default_rng(0)
    x, y = rng.random(400), rng.random(400)
    d = 0.1 * x + 0.8 * y + 0.05
    d[:120] = rng.random(120)  # 30 % clutter
    coef, share = fit_plane_ransac(x, y, d, tol=0.01)
    np.testing.assert_allclose(coef, [0.1, 0.8, 0.05], atol=1e-3)  # clutter within tol nudges the refit
    assert 0.69 <= share <= 0.75


def test_floor_estimate_from_exact_depth_matches_the_sample_worlds_floor_masks(world):
    ious = []
    for path in sorted((world / "bg_floor").glob("*.png")):
        floor = load_floor(path, world / "bg_depth" / path.name, 64)
        ious.append(floor_iou(estimate_floor(1 / floor.depth), floor.mask))
    assert np.mean(ious) > 0.85, ious


def test_no_floor_where_the_bottom_of_the_frame_does_not_come_nearer():
    wall = np.tile(np.linspace(1.0, 0.2, 64)[None], (64, 1))  # nearer to the left, constant down each column
    ceiling = np.tile(np.linspace(1.0, 0.0, 64)[:, None], (1, 64))  # farther downwards
    assert not estimate_floor(wall).any() and not estimate_floor(ceiling).any()


def test_generate_on_own_photos_estimates_floors_and_says_how_many_stand_on_one(own_dataset):
    out, lines = own_dataset
    info = read_json(out / "dataset.json")
    placed = info["placement"]
    assert placed["floors"] == "estimated by mini" and placed["mode"] == "floor"
    assert placed["on_floor"] + placed["uniform"] == info["counts"]["composites"]
    assert any(line.startswith(f"placements on a floor: {placed['on_floor']} of ") for line in lines)
    assert lines[0].startswith("inputs: 3 backgrounds, 4 foregrounds")
    assert len(list((out / "floor_estimate").glob("*.png"))) == 3
    assert len(dataset_floors(out)) == 3


def test_mini_teacher_labels_own_photos_and_stores_each_rooms_depth(own_dataset):
    out, _ = own_dataset
    depth = read_json(out / "dataset.json")["depth"]
    assert (depth["teacher"], depth["mode"], depth["weights"]) == ("mini", "per-composite", "pretrained")
    room = room_depth(out, 0, 64)
    assert room.shape == (64, 64) and room.min() == 0 and room.max() == 1


def test_on_the_fly_composites_work_with_a_network_teachers_room_depth(own_dataset, tmp_path):
    from depthmask_utils import data
    from depthmask_utils.dataset import read_composites

    out, _ = own_dataset
    items = read_composites(out)
    ds = data.OnTheFlyDataset(out, items)
    a, b = ds[(0, [0, 1])], ds[(1, [0, 1])]
    assert a["depth"].dtype == torch.uint8 and not torch.equal(a["mask"], b["mask"])
    from depthmask_utils.depth import foot_point

    floors = dataset_floors(out)
    for i, c in enumerate(ds.items[:2]):  # the feet stand on the estimated floor, as in chapter 03
        fx, fy = foot_point(a["mask"][i, 0].numpy())
        assert floors[c.bg].mask[fy, fx] or not floors[c.bg].usable
    broken = tmp_path / "ds"
    shutil.copytree(out, broken)
    shutil.rmtree(broken / "room_depth")
    with pytest.raises(DatasetError, match="no room depth stored"):
        data.OnTheFlyDataset(broken, read_composites(broken))


def test_a_foreground_without_alpha_stops_generate_naming_it_and_chapter_01(own_photos, tmp_path):
    fg = tmp_path / "fg"
    shutil.copytree(own_photos / "fg", fg)
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 30, 3), np.uint8)).save(fg / "holiday.jpg")
    with pytest.raises(InputError, match=r"holiday\.jpg.*chapter 01"):
        generate(own_photos / "bg", fg, tmp_path / "ds", size=64, placements=1, progress=False, log=lambda s: None)
    assert not (tmp_path / "ds" / "dataset.json").exists()


def test_small_backgrounds_and_alphas_that_cut_nothing_out_are_warned_about(own_photos, tmp_path):
    bg, fg = tmp_path / "bg", tmp_path / "fg"
    shutil.copytree(own_photos / "bg", bg)
    shutil.copytree(own_photos / "fg", fg)
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(bg / "tiny.png")
    box = np.full((50, 30, 4), 200, np.uint8)
    box[0, 0, 3] = 0  # alpha present but hiding one pixel: a rectangle, not a cut-out
    Image.fromarray(box, "RGBA").save(fg / "box.png")
    lines = []
    r = generate(bg, fg, tmp_path / "ds", size=64, placements=1, progress=False, placement="uniform",
                 log=lines.append)
    assert any("tiny.png: background is 40x40, smaller than the 64x64" in w for w in r.warnings)
    assert any("box.png: its alpha hides only" in w for w in r.warnings)
    assert sum(line.startswith("warning: ") for line in lines) == len(r.warnings) == 2
    assert read_json(tmp_path / "ds" / "dataset.json")["warnings"] == r.warnings


def test_random_teacher_weights_are_refused_on_full_and_their_labels_refused_by_train(dataset, tmp_path):
    with pytest.raises(TeacherUnavailable, match="refused on the full profile"):
        label_depth(dataset, "mini", weights="random", profile="full", progress=False)
    label_depth(dataset, "mini", weights="random", profile="sample", progress=False, device="cpu")
    from depthmask_utils.stats import dataset_stats

    dataset_stats(dataset, workers=1, progress=False)
    cfg = TrainConfig(epochs=1, sizes=(32,), batch_size=4, workers=0, model_options={"base": 4, "levels": 2})
    with pytest.raises(RunError, match="RANDOM weights"):
        train(dataset, tmp_path / "run", cfg, progress=False)
    out = subprocess.run([sys.executable, "-m", "depthmask_utils", "train", str(dataset), "--out", str(tmp_path / "r2")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "RANDOM weights" in out.stderr and "Traceback" not in out.stderr


def test_the_shipped_mini_teacher_loads_and_its_random_twin_has_the_same_architecture():
    assert WEIGHTS.exists() and WEIGHTS.stat().st_size < 10e6
    trained, random = load_mini_teacher(), load_mini_teacher("random")
    assert trained.model.state_dict().keys() == random.model.state_dict().keys() == MiniDepthNet().state_dict().keys()
    images = np.random.default_rng(0).integers(0, 255, (2, 48, 80, 3), np.uint8)
    out = trained.predict(images)
    assert out.shape == (2, 48, 80) and out.dtype == np.float32 and 0 <= out.min() <= out.max() <= 1
    assert trained.calls == 2


def test_teacher_error_scores_the_exact_teacher_as_perfect(labelled):
    class Exact:  # the stored exact labels, served back as a teacher would
        def __init__(self):
            from depthmask_utils.dataset import member
            from depthmask_utils.storage import decode_image, open_shard, read_manifest

            self.by_image = {}
            for r in read_manifest(labelled / "manifest.csv"):
                with open_shard(labelled / r["shard"]) as zf:
                    img = decode_image(zf.read(member("fg_bg", r["id"])))
                    self.by_image[img.tobytes()] = decode_image(zf.read(member("depth", r["id"]))).astype(np.float32)

        def predict(self, images):
            return np.stack([self.by_image[i.tobytes()] for i in images])

    err = teacher_error(labelled, Exact(), n=40)
    assert err["rmse_aligned"] < 1e-6 and err["delta1"] == 1.0 and err["n"] == 40


def test_own_folders_never_reuse_the_sample_worlds_dataset(own_photos, tmp_path):
    smoke = config.get_profile("smoke")
    root = tmp_path / "data"
    built = pipeline.ensure_dataset(smoke, root, log=lambda s: None)
    with pytest.raises(DatasetError, match="use a fresh data_root"):
        pipeline.ensure_dataset(smoke, root, bg_dir=own_photos / "bg", fg_dir=own_photos / "fg")
    assert pipeline.labelling_teacher(config.get_profile("sample"), built)[0] == "scene"  # the sample world: exact


def test_the_sample_profile_labels_own_photos_with_its_network_teacher(own_dataset):
    teacher, why = pipeline.labelling_teacher(config.get_profile("sample"), own_dataset[0])
    assert teacher == "mini" and "no exact depth" in why


def test_a_resumed_labelling_keeps_the_weights_its_shards_were_labelled_with(dataset):
    from depthmask_utils.stats import dataset_stats

    label_depth(dataset, "mini", weights="random", progress=False, device="cpu")
    info = read_json(dataset / "dataset.json")
    del info["depth"]  # killed after the shards were written, before dataset.json
    from depthmask_utils.storage import atomic_write_json

    atomic_write_json(dataset / "dataset.json", info)
    # Resumed with pretrained weights asked for and nothing left to label: the shards hold noise, so it
    # stops instead of recording "pretrained"; resumed as it was made, it records what the shards hold.
    with pytest.raises(DatasetError, match=r"weights: random\); pass --overwrite to relabel with mini"):
        label_depth(dataset, "mini", progress=False, device="cpu")
    label_depth(dataset, "mini", weights="random", progress=False, device="cpu")
    assert read_json(dataset / "dataset.json")["depth"]["weights"] == "random"
    assert read_json(dataset / "room_depth" / "teacher.json") == {"teacher": "mini", "weights": "random"}
    dataset_stats(dataset, workers=1, progress=False)
    with pytest.raises(RunError, match="RANDOM weights"):
        train(dataset, dataset.parent / "run", TrainConfig(epochs=1, sizes=(32,), batch_size=4, workers=0),
              progress=False)
    # A shard left unlabelled beside shards labelled with random weights: resuming with pretrained ones
    # would mix noise and depth, so it stops and names both.
    from depthmask_utils.storage import open_shard, write_shard

    shard = sorted((dataset / "shards").iterdir())[0]
    with open_shard(shard) as zf:
        keep = [(n, zf.read(n)) for n in zf.namelist() if not n.startswith("depth/")]
    write_shard(shard, keep)
    with pytest.raises(DatasetError, match=r"weights: random\); pass --overwrite to relabel with mini"):
        label_depth(dataset, "mini", progress=False, device="cpu")
    label_depth(dataset, "mini", progress=False, device="cpu", overwrite=True)
    assert read_json(dataset / "dataset.json")["depth"]["weights"] == "pretrained"
    assert read_json(dataset / "room_depth" / "teacher.json")["weights"] == "pretrained"  # stale rooms replaced


def test_pack_refuses_an_unfinished_folder_and_zips_a_finished_one(built, tmp_path):
    from depthmask_utils.storage import pack_folder

    with pytest.raises(DatasetError):
        pack_folder(tmp_path / "no_such_dataset", tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()
    r = pack_folder(built, tmp_path / "ds.zip")
    import zipfile

    with zipfile.ZipFile(r["path"]) as zf:
        assert f"{built.name}/dataset.json" in zf.namelist() and len(zf.namelist()) == r["files"]


def test_few_photos_get_more_placements_up_to_the_profiles_minimum():
    sample = config.get_profile("sample")
    assert sample.placements_for(400, 32) == 1  # the sample world already holds 6,400: 8 of its 32 people a room
    assert sample.expected_composites == 400 * 8 * 2 == 6400
    assert sample.placements_for(10, 20) == 40  # each of 10 rooms takes 8 of 20 people: 160 a placement
    assert sample.placements_for(10, 5) == 64  # 10 rooms x 5 dogs x 2 flips: 100 a placement
    assert sample.placements_for(1, 1) == config.MAX_PLACEMENTS  # capped: more photos are the answer
    assert config.get_profile("full").placements_for(100, 100) == 20  # the assignment, as it stands
    assert config.get_profile("smoke").placements_for(3, 2) == 2


def test_generate_raises_placements_for_few_photos_and_says_so(own_photos, tmp_path):
    lines = []
    r = generate(own_photos / "bg", own_photos / "fg", tmp_path / "ds", size=48, placements=1, workers=1,
                 progress=False, min_composites=100, log=lines.append)
    per_placement = 2 * r.n_bg * r.n_fg
    assert r.placements == -(-100 // per_placement) > 1 and r.composites == per_placement * r.placements >= 100
    assert any(line.startswith(f"placements: {r.placements} per (background, foreground, flip), not 1") for line in lines)
    assert read_json(tmp_path / "ds" / "dataset.json")["counts"]["placements"] == r.placements
    profile = config.replace(config.get_profile("sample"), size=48, placements=1, min_composites=100, seed=0)
    pipeline.check_dataset_matches(profile, tmp_path / "ds")  # the profile's rule gives the same number
    with pytest.raises(DatasetError, match="placements"):
        pipeline.check_dataset_matches(config.replace(profile, min_composites=0), tmp_path / "ds")
