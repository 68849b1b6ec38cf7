import zipfile

import numpy as np
import pytest
from PIL import Image

from depthmask_utils import depth as D
from depthmask_utils.errors import DatasetError, TeacherUnavailable
from depthmask_utils.dataset import verify
from depthmask_utils.storage import read_json, read_manifest, write_shard


def test_foot_point_and_paste():
    mask = np.zeros((20, 20), np.uint8)
    mask[3:15, 8:11] = 255
    mask[15, 9] = 100  # soft, below threshold
    assert D.foot_point(mask) == (9, 14)
    bg = np.tile(np.linspace(0.1, 1.0, 20, dtype=np.float32)[:, None], (1, 20))  # nearer towards the bottom
    out = D.paste_person_depth(bg, mask)
    assert np.allclose(out[3:15, 8:11], bg[14, 9])  # the whole person at their feet's depth
    assert np.array_equal(out[mask == 0], bg[mask == 0])
    assert D.foot_point(np.zeros((4, 4), np.uint8)) is None


def test_normalise_round_trip():
    raw = np.random.default_rng(0).uniform(0.2, 3.0, (16, 16)).astype(np.float32)
    png, lo, hi = D.normalise(raw)
    assert png.dtype == np.uint8 and png.min() == 0 and png.max() == 255
    assert np.abs(D.denormalise(png, lo, hi) - raw).max() <= (hi - lo) / 255 / 2 + 1e-6
    flat, lo, hi = D.normalise(np.ones((4, 4), np.float32))
    assert flat.max() == 0 and lo == hi == 1.0


def test_preprocessing_matches_transformers_processor():
    """Our batched resize + normalise against the library's image processor for square inputs."""
    from transformers import DPTImageProcessor

    teacher = D.load_teacher("depth-anything-v2-small", "random", input_size=70, tiny=True)
    img = np.asarray(Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), np.uint8)).resize((56, 56), Image.BILINEAR))
    proc = DPTImageProcessor(do_resize=True, size={"height": 70, "width": 70}, keep_aspect_ratio=True,
                             ensure_multiple_of=14, resample=Image.BICUBIC, do_rescale=True, do_normalize=True,
                             image_mean=list(D.TEACHERS["depth-anything-v2-small"].mean),
                             image_std=list(D.TEACHERS["depth-anything-v2-small"].std))
    ref = proc(images=img, return_tensors="np")["pixel_values"][0]
    ours = teacher.preprocess(img[None]).numpy()[0]
    assert ref.shape == ours.shape == (3, 70, 70)
    assert np.abs(ref - ours).mean() < 0.02 and np.abs(ref - ours).max() < 0.25


@pytest.mark.parametrize("name", ["depth-anything-v2-small", "dpt-hybrid-midas"])
def test_network_teachers_run_with_random_weights(name):
    teacher = D.load_teacher(name, "random", input_size=56, tiny=True)
    out = teacher.predict(np.zeros((2, 40, 48, 3), np.uint8))
    assert out.shape == (2, 40, 48) and out.dtype == np.float32 and np.isfinite(out).all()
    assert teacher.calls == 2 and teacher.weights == "random"


def test_teacher_autocasts_in_the_devices_type_and_float32_when_asked(monkeypatch):
    import torch

    from depthmask_utils import precision

    seen = []
    monkeypatch.setattr(precision, "amp_dtype", lambda device: seen.append(device) or torch.float16)
    t = D.load_teacher("depth-anything-v2-small", "random", input_size=28, tiny=True, fp16=True)
    assert t.dtype == torch.float16 and seen == [torch.device("cpu")]  # the shared rule decides, per device
    assert D.load_teacher("depth-anything-v2-small", "random", input_size=28, tiny=True).dtype == torch.float32


def test_full_size_architecture_parameter_count():
    teacher = D.load_teacher("depth-anything-v2-small", "random", input_size=56)
    n = sum(p.numel() for p in teacher.model.parameters())
    assert 24.5e6 < n < 25.1e6  # Depth Anything V2 Small: 24.8M


def test_unavailable_teacher_says_how_to_provide_weights(tmp_path):
    with pytest.raises(TeacherUnavailable, match="huggingface-cli download depth-anything/Depth-Anything-V2-Small-hf"):
        D.load_teacher("depth-anything-v2-small", "pretrained")  # offline in tests
    with pytest.raises(TeacherUnavailable, match="not found"):
        D.load_teacher("dpt-hybrid-midas", "pretrained", path=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TeacherUnavailable, match="empty"):
        D.load_teacher("dpt-hybrid-midas", "pretrained", path=tmp_path / "empty")


def test_scene_labels_resume_and_verify(dataset):
    r = D.label_depth(dataset, "scene", progress=False)
    assert r.shards_labelled == 3 and r.weights == "exact"
    rows = read_manifest(dataset / "manifest.csv")
    assert all(float(x["depth_hi"]) > float(x["depth_lo"]) > 0 for x in rows)
    info = read_json(dataset / "dataset.json")
    assert info["depth"]["teacher"] == "scene"
    assert verify(dataset, workers=1).ok
    with zipfile.ZipFile(dataset / "shards" / "bg_000.zip") as zf:
        d = np.asarray(Image.open(zf.open(f"depth/{rows[0]['id']}.png")))
        m = np.asarray(Image.open(zf.open(f"mask/{rows[0]['id']}.png")))
    assert d.shape == (64, 64) and d.dtype == np.uint8 and d.max() == 255
    person = d[m == 255]
    assert person.max() - person.min() <= 1  # the person stands at one depth
    # the stored label is the exact inverse depth, up to 8-bit quantisation
    exact = D.paste_person_depth(D.scene_inverse_depth(dataset, 0, 64), m)
    raw = D.denormalise(d, float(rows[0]["depth_lo"]), float(rows[0]["depth_hi"]))
    assert np.abs(raw - exact).max() <= (exact.max() - exact.min()) / 255
    again = D.label_depth(dataset, "scene", progress=False)
    assert again.shards_labelled == 0
    with pytest.raises(DatasetError, match="already labelled by scene"):
        D.label_depth(dataset, "depth-anything-v2-small", mode="per-composite", progress=False)


def test_resume_after_a_partial_labelling(dataset):
    rows = read_manifest(dataset / "manifest.csv")
    shard0 = [r for r in rows if r["bg"] == "0"]
    members, records = D.label_shard(D.ShardJob(dataset, "shards/bg_000.zip", shard0, D.SceneTeacher(),
                                                  "bg-plus-foreground", 64, 8))
    with zipfile.ZipFile(dataset / "shards" / "bg_000.zip") as zf:
        keep = [(n, zf.read(n)) for n in zf.namelist()]
    csv_text = "id,depth_lo,depth_hi,teacher,mode,weights\n" + "".join(
        f"{r['id']},{r['depth_lo']},{r['depth_hi']},scene,bg-plus-foreground,exact\n" for r in records)
    write_shard(dataset / "shards" / "bg_000.zip", keep + members + [(D.LABELS_MEMBER, csv_text.encode())])
    (dataset / "shards" / ".bg_001.zip.tmp-999").write_bytes(b"half")  # a killed run's leftover
    r = D.label_depth(dataset, "scene", progress=False)
    assert r.shards_labelled == 2
    assert not list((dataset / "shards").glob(".*"))
    assert verify(dataset, workers=1).ok


def test_per_composite_with_a_network_teacher(dataset):
    teacher = D.load_teacher("depth-anything-v2-small", "random", input_size=56, tiny=True)
    r = D.label_depth(dataset, "depth-anything-v2-small", mode="per-composite", batch_size=16, progress=False,
                      teacher_model=teacher)
    assert r.teacher_images == 72 and read_json(dataset / "dataset.json")["depth"]["weights"] == "random"
    assert verify(dataset, workers=1).ok


def test_bg_plus_foreground_calls_the_teacher_once_per_background(dataset):
    teacher = D.load_teacher("depth-anything-v2-small", "random", input_size=56, tiny=True)
    r = D.label_depth(dataset, "depth-anything-v2-small", mode="bg-plus-foreground", progress=False,
                      teacher_model=teacher)
    assert r.teacher_images == 3


def test_compare_modes(dataset):
    teacher = D.load_teacher("depth-anything-v2-small", "random", input_size=56, tiny=True)
    out = D.compare_modes(dataset, teacher, n=5)
    assert out["per_composite"].shape == out["bg_plus_foreground"].shape == out["exact"].shape == (5, 64, 64)
    t = out["table"]
    assert t.loc["per-composite", "teacher images"] == 5 and t.loc["bg-plus-foreground", "teacher images"] <= 3
    assert "MAE vs exact, person" in t.columns


def test_verify_notices_missing_depth(dataset):
    D.label_depth(dataset, "scene", progress=False)
    path = dataset / "shards" / "bg_002.zip"
    with zipfile.ZipFile(path) as zf:
        keep = [(n, zf.read(n)) for n in zf.namelist() if not n.endswith("_01.png") or not n.startswith("depth/")]
    write_shard(path, keep)
    report = verify(dataset, workers=1)
    assert not report.ok and any("depth/" in p and "missing" in p for p in report.problems)


def test_scene_teacher_needs_sample_world_depth(dataset, tmp_path):
    info = read_json(dataset / "dataset.json")
    info["inputs"]["bg_dir"] = str(tmp_path / "elsewhere" / "bg")
    import json

    (dataset / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(TeacherUnavailable, match="exact depth not found"):
        D.label_depth(dataset, "scene", progress=False)


def test_regenerating_a_labelled_shard_withdraws_the_depth_claim(dataset, world):
    from depthmask_utils.overlay import generate

    D.label_depth(dataset, "scene", progress=False)
    (dataset / "shards" / "bg_001.zip").unlink()
    generate(world / "bg", world / "fg", dataset, size=64, placements=3, workers=1, progress=False)
    assert "depth" not in read_json(dataset / "dataset.json")
    assert verify(dataset, workers=1).ok  # consistent: no depth claimed, none required
    r = D.label_depth(dataset, "scene", progress=False)
    assert r.shards_labelled == 1 and verify(dataset, workers=1).ok


def test_teachers_share_one_interface(dataset):
    """The exact scene teacher and a network teacher answer the same questions."""
    scene = D.make_teacher("scene")
    net = D.load_teacher("depth-anything-v2-small", weights="random", tiny=True, input_size=28)
    for t in (scene, net):
        inv = t.background(dataset, 0, 64)
        assert inv.shape == (64, 64) and inv.dtype == np.float32 and np.isfinite(inv).all()
        assert {"name", "weights", "exact", "parallel", "input_size"} <= set(dir(t))
    assert scene.exact and scene.parallel and not net.exact and not net.parallel
    assert np.allclose(scene.background(dataset, 0, 64), D.scene_inverse_depth(dataset, 0, 64))


def test_uniform_vs_floor_measures_both_placements(dataset):
    D.label_depth(dataset, "scene", progress=False)
    out = D.uniform_vs_floor(dataset, n=10, seed=0)
    table, contrast, items = out["table"], out["contrast"], out["items"]
    assert list(table.index) == ["uniform", "this dataset (floor)"]  # the tiny world has floor masks
    assert table.loc["uniform", "composites"] == len(contrast["uniform"]) <= 10 == len(items)
    u = contrast["uniform"]
    assert out["worst"] == u.idxmin() and abs(u[out["vanished"]]) == u.abs().min()
    fg_bg, mask, label = items[out["worst"]]
    assert fg_bg.shape == (64, 64, 3) and mask.shape == label.shape == (64, 64) and label.dtype == np.uint8
    # the label is the foot-point rule applied to the room depth that was used
    bg = int(out["worst"].split("_")[3])  # ids are fg_bg_<fg>_<bg>_<flip>_<k>
    assert np.array_equal(label, D.normalise(D.paste_person_depth(out["rooms"][bg], mask))[0])
    # deterministic: the same seed draws the same composites and the same numbers
    again = D.uniform_vs_floor(dataset, n=10, seed=0, room_depth=lambda b: out["rooms"][b])
    assert again["table"].equals(table)
