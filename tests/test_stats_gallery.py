import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from depthmask_utils.depth import label_depth
from depthmask_utils import gallery
from depthmask_utils.gallery import make_galleries
from depthmask_utils.stats import (batch_averaged, batched_std, dataset_stats, image_histograms, load_stats,
                                   moments_from_hist)
from depthmask_utils.storage import read_manifest


def test_moments_from_hist_exact():
    vals = np.random.default_rng(0).integers(0, 256, 10_000)
    hist = np.bincount(vals, minlength=256)[None]
    m, s, n = moments_from_hist(hist)
    assert n == 10_000
    assert abs(m[0] - vals.mean() / 255) < 1e-12 and abs(s[0] - vals.std() / 255) < 1e-12


def test_image_hist_matches_pil_for_every_kind_of_member():
    import pytest

    from depthmask_utils.errors import DatasetError
    from depthmask_utils.stats import gray_hist, image_hist
    from depthmask_utils.storage import encode_png

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 30, 3), np.uint8)
    for arr, mode in ((rgb, "RGB"), (rgb[..., 0], "L")):
        buf = io.BytesIO()
        Image.fromarray(arr, mode).save(buf, format="JPEG", quality=90)
        pil = np.asarray(Image.open(io.BytesIO(buf.getvalue())).histogram()).reshape(-1, 256)
        assert np.array_equal(image_hist(buf.getvalue(), "x.jpg"), pil)
    sparse = np.zeros((50, 60), np.uint8)
    sparse[10:20, 30:33] = rng.integers(0, 256, (10, 3))
    for img in (sparse, np.zeros((5, 5), np.uint8), rgb[..., 1]):
        assert np.array_equal(gray_hist(img), np.bincount(img.ravel(), minlength=256))
        assert np.array_equal(image_hist(encode_png(img), "x.png")[0], np.bincount(img.ravel(), minlength=256))
    with pytest.raises(DatasetError, match="broken.jpg"):
        image_hist(b"\xff\xd8\xff" + b"0" * 100, "broken.jpg")


def test_dataset_stats_against_brute_force(dataset):
    label_depth(dataset, "scene", progress=False)
    st = dataset_stats(dataset, workers=2, batch=8, progress=False)
    rows = read_manifest(dataset / "manifest.csv")
    pix = {"fg_bg": [], "mask": [], "depth": []}
    for r in rows:
        with zipfile.ZipFile(dataset / r["shard"]) as zf:
            for cat, ext in (("fg_bg", "jpg"), ("mask", "png"), ("depth", "png")):
                pix[cat].append(np.asarray(Image.open(io.BytesIO(zf.read(f"{cat}/{r['id']}.{ext}")))))
    for cat, arrs in pix.items():
        a = np.stack(arrs).astype(np.float64) / 255
        a = a.reshape(-1, a.shape[-1] if a.ndim == 4 else 1)
        assert np.allclose(st.exact[cat]["mean"], a.mean(0), atol=1e-12)
        assert np.allclose(st.exact[cat]["std"], a.std(0), atol=1e-12)
    fg = np.concatenate([np.asarray(Image.open(p))[np.asarray(Image.open(p))[..., 3] >= 128][:, :3]
                         for p in sorted((dataset / "fg").glob("*.png"))]).astype(np.float64) / 255
    assert np.allclose(st.exact["fg"]["mean"], fg.mean(0), atol=1e-12)
    saved = load_stats(dataset)
    assert set(saved) == {"bg", "fg", "fg_bg", "mask", "depth"}
    assert set(saved["fg_bg"]) == {"mean", "std", "count"} and len(saved["fg_bg"]["std"]) == 3
    assert saved["mask"]["count"] == len(rows) * 64 * 64
    # the reference approximation misses the between-batch variance (one room per batch here): smaller
    assert all(a < e for a, e in zip(st.batch_averaged["fg_bg"]["std"], st.exact["fg_bg"]["std"]))


def test_batch_averaged_is_the_mean_of_batch_stds():
    got = batch_averaged([([0.1], [0.2]), ([0.3], [0.4])])
    assert np.allclose(got["mean"], [0.2]) and np.allclose(got["std"], [0.3])


def test_galleries_are_written(dataset):
    label_depth(dataset, "scene", progress=False)
    paths = make_galleries(dataset, n=8, strips=2)
    assert {p.name for p in paths} == {"bg.png", "fg.png", "fg_mask.png", "fg_bg.png", "mask.png", "depth.png",
                                       "strips.png"}
    for p in paths:
        im = Image.open(p)
        assert im.size[0] > 300 and np.asarray(im.convert("L")).std() > 10  # not blank


@pytest.mark.slow
def test_cli_stats_and_gallery(dataset):
    out = subprocess.run([sys.executable, "-m", "depthmask_utils", "stats", str(dataset), "--workers", "1"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "fg_bg" in out.stdout and json.loads((dataset / "stats.json").read_text())["bg"]["count"] == 3 * 64 * 64
    out = subprocess.run([sys.executable, "-m", "depthmask_utils", "gallery", str(dataset), "--n", "4"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and (dataset / "gallery" / "strips.png").exists()
    out = subprocess.run([sys.executable, "-m", "depthmask_utils", "stats", str(dataset / "nope")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "dataset.json: missing" in out.stderr and "Traceback" not in out.stderr


# --------------------------------------------------------------------------- batched std (chapter 06)

def _grouped_hists(seed: int = 0, groups: int = 6, per: int = 8) -> np.ndarray:
    """Per-image histograms (N, 1, 256) of groups with different means, like rooms."""
    rng = np.random.default_rng(seed)
    out = []
    for g in range(groups):
        centre = 40 + 30 * g
        for _ in range(per):
            vals = np.clip(rng.normal(centre, 20, 500), 0, 255).astype(int)
            out.append(np.bincount(vals, minlength=256)[None])
    return np.stack(out).astype(np.int64)


def test_batched_std_one_batch_is_exact_and_equal_batches_never_larger():
    h = _grouped_hists()
    exact = np.array(moments_from_hist(h.sum(0))[1])
    assert np.allclose(batched_std(h, len(h)), exact, rtol=1e-12)  # one batch: the exact std
    assert np.allclose(batched_std(h, 10 * len(h)), exact, rtol=1e-12)
    for b in (1, 2, 4, 8, 16, 24):  # equal-sized batches (48 images): never larger
        assert np.all(batched_std(h, b) <= exact + 1e-12)
    # one group per batch misses the between-group variance: clearly smaller
    assert batched_std(h, 8)[0] < 0.8 * exact[0]


def test_batched_std_shuffled_batches_are_closer_and_order_is_applied():
    h = _grouped_hists()
    exact = moments_from_hist(h.sum(0))[1][0]
    order = np.random.default_rng(0).permutation(len(h))
    by_group, shuffled = batched_std(h, 8)[0], batched_std(h, 8, order)[0]
    assert abs(shuffled - exact) < abs(by_group - exact) / 3
    assert np.allclose(batched_std(h[order], 8), batched_std(h, 8, order))


def test_batched_std_matches_dataset_stats_per_batch_average(labelled):
    st = dataset_stats(labelled, workers=1, batch=8, progress=False, write=False)
    for cat in ("fg_bg", "mask", "depth"):
        h, rooms = image_histograms(labelled, cat, workers=1)
        assert h.shape[1:] == ((3, 256) if cat == "fg_bg" else (1, 256)) and len(rooms) == len(h)
        m, s, n = moments_from_hist(h.sum(0))
        assert np.allclose(s, st.exact[cat]["std"], rtol=1e-12) and n == st.exact[cat]["count"]
        # shards hold one room each and 8 divides the composites per room: the same batches
        assert np.allclose(batched_std(h, 8), st.batch_averaged[cat]["std"], rtol=1e-12)
        assert np.all(np.diff(rooms) >= 0)  # manifest order: rooms grouped


def test_image_histograms_rejects_prepared_categories(built):
    import pytest

    with pytest.raises(ValueError, match="fg_bg, mask or depth"):
        image_histograms(built, "bg")


# --------------------------------------------------------------------------- galleries (chapter 07)

def test_mask_overlay_tints_only_the_mask():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 1] = 90  # green: grey value 30
    mask = np.zeros((4, 4), np.uint8)
    mask[1, 1] = 255
    out = gallery.mask_overlay(rgb, mask)
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    assert (out[0, 0] == 30).all()  # outside the mask: the composite in grey, no colour
    assert out[1, 1, 0] > 120 and out[1, 1, 0] > out[1, 1, 1] + 80  # inside: red


def test_mask_agreement_catches_a_mirrored_mask():
    bg = np.full((32, 32, 3), 100, np.uint8)
    person = np.zeros((32, 32), bool)
    person[4:28, 10:14] = True  # body
    person[6:9, 14:24] = True  # one arm, to the right only
    fg_bg = bg.copy()
    fg_bg[person] = (200, 50, 50)
    mask = person.astype(np.uint8) * 255
    assert gallery.mask_agreement(fg_bg, bg, mask) == 1.0
    box = mask[4:28, 10:24]
    mirrored = mask.copy()
    mirrored[4:28, 10:24] = box[:, ::-1]  # the unflipped mask in the same box
    assert gallery.mask_agreement(fg_bg, bg, mirrored) < 0.5
    assert gallery.mask_agreement(bg, bg, np.zeros((32, 32), np.uint8)) == 1.0  # nothing, and nothing said


def test_load_sample_shows_the_person_as_pasted(labelled):
    rows = read_manifest(labelled / "manifest.csv")
    flipped = next(r for r in rows if r["flip"] == "1")
    s = gallery.load_sample(labelled, flipped)
    assert set(s) == {"bg", "fg", "fg_bg", "mask", "depth"}
    plain = gallery.load_item(labelled, "fg", flipped)
    assert np.array_equal(s["fg"], plain[:, ::-1])  # mirrored like the composite
    assert s["mask"].ndim == 2 and s["fg_bg"].shape == s["bg"].shape
    assert gallery.mask_agreement(s["fg_bg"], s["bg"], s["mask"]) > 0.5


def _texts(fig):
    """Every drawn, non-empty text of a figure (titles, captions, colour bar labels) with its extent."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    texts = list(fig.texts) + [ax.title for ax in fig.axes]
    for ax in fig.axes:
        if ax.axison:  # image axes are off: their tick labels are not drawn
            texts += [ax.xaxis.label, ax.yaxis.label] + ax.get_xticklabels() + ax.get_yticklabels()
    return [(t, t.get_window_extent(r)) for t in texts if t.get_visible() and t.get_text().strip()]


def _image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


def test_grids_are_readable(labelled):
    import matplotlib.pyplot as plt

    for cat, n in (("fg_bg", 16), ("mask", 6), ("depth", 8), ("fg", 4)):
        fig = gallery.category_grid(labelled, cat, n=n)
        axes = _image_axes(fig)
        assert len(axes) == n and len({round(a.get_position().x0, 4) for a in axes}) <= gallery.MAX_COLS
        for ax in axes:  # the longer side: a person (fg) is taller than wide
            pos = ax.get_position()
            side_px = max(pos.width * fig.get_figwidth(), pos.height * fig.get_figheight()) * gallery.DPI
            assert 110 <= side_px <= 160  # thumbnails readable on the page
        texts = _texts(fig)
        assert all(t.get_fontsize() >= 8 for t, _ in texts)
        boxes = [b for _, b in texts]
        for i, a in enumerate(boxes):  # no title on another title or on an image
            assert not any(a.overlaps(b) for b in boxes[i + 1:])
            assert not any(a.overlaps(ax.get_window_extent()) for ax in axes)
        labels = [ax.get_ylabel() for ax in fig.axes]
        if cat == "depth":
            assert any("near = bright" in lab for lab in labels)  # the colour bar says what colours mean
        if cat == "mask":
            im = axes[0].images[0]
            assert im.get_cmap().name == "gray" and im.get_clim() == (0, 255)
        plt.close(fig)


def test_strips_captions_fit_and_do_not_overlap(labelled):
    import matplotlib.pyplot as plt

    fig = gallery.sample_strips(labelled, n=3)
    axes = _image_axes(fig)
    assert len(axes) == 3 * 6  # bg, fg, fg_bg, mask, overlay, depth
    texts = _texts(fig)
    assert all(t.get_fontsize() >= 8 for t, _ in texts)
    fig_box = fig.bbox
    for i, (t, a) in enumerate(texts):
        assert a.x0 >= fig_box.x0 - 1 and a.x1 <= fig_box.x1 + 1 and a.y1 <= fig_box.y1 + 1, t.get_text()
        assert not any(a.overlaps(b) for _, b in texts[i + 1:]), t.get_text()
        assert not any(a.overlaps(ax.get_window_extent()) for ax in axes), t.get_text()
    plt.close(fig)
    rows = read_manifest(labelled / "manifest.csv")
    fig = gallery.show_strips([gallery.load_sample(labelled, rows[0])], ["x"], columns=["fg_bg", "overlay"])
    assert len(_image_axes(fig)) == 2
    plt.close(fig)


def test_show_row_colorbar_is_optional():
    import matplotlib.pyplot as plt

    from depthmask_utils import figures

    img = np.arange(64, dtype=np.uint8).reshape(8, 8)
    fig = figures.show_row([img, img], ["a", "b"])
    assert len(fig.axes) == 2
    plt.close(fig)
    fig = figures.show_row([img, img], ["a", "b"], cmap="magma", colorbar=figures.DEPTH_LABEL)
    assert len(fig.axes) == 3 and figures.DEPTH_LABEL in [ax.get_ylabel() for ax in fig.axes]
    plt.close(fig)


def test_saved_galleries_are_readable_size(labelled, tmp_path):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(labelled, ds)
    paths = make_galleries(ds, n=12, strips=2)
    for p in paths:
        w, h = Image.open(p).size
        assert w >= 500 and h >= 170, p.name  # at least one row of 128 px thumbnails (not 70 px)


def test_plot_batch_std_draws_both_panels(labelled):
    import matplotlib.pyplot as plt
    from depthmask_utils.stats import plot_batch_std

    st = dataset_stats(labelled, workers=1, progress=False, write=False)
    h, rooms = image_histograms(labelled, "fg_bg", workers=1)
    per_room = [moments_from_hist(h[rooms == b].sum(0)) for b in np.unique(rooms)]
    room_mean = np.array([m for m, s, n in per_room])
    room_std = np.array([s for m, s, n in per_room])
    fig = plot_batch_std(st, room_mean, room_std, channel=2)
    left, right = fig.axes
    assert len(left.lines) >= 2 and "blue" in left.get_title()  # the two red dashes, titled by channel
    labels = [t.get_text() for t in right.texts]
    assert len(labels) == len(st.exact) and all(t.endswith("%") for t in labels)  # one error label per category
    assert fig.legends and not left.get_legend() and not right.get_legend()  # legend below, not over data
    plt.close(fig)


def test_every_colour_map_in_a_grid_gets_its_colour_bar():
    import matplotlib

    matplotlib.use("Agg")
    from depthmask_utils import figures

    img = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    fig = figures.show_grid([[img, img, img]], ["mask", "depth", "error"])
    bars = [ax.get_ylabel() for ax in fig.axes[3:]]  # the axes after the three images are colour bars
    assert bars == ["inverse depth (1 = near)", "error (0-1 units)"]
    assert all(ax.images[0].get_interpolation() == "nearest" for ax in fig.axes[:3])
