import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from depthmask_utils import augment as A
from depthmask_utils import data as Dt
from depthmask_utils.dataset import member, read_composites
from depthmask_utils.errors import DatasetError
from depthmask_utils.storage import ShardReader


def test_shard_reader_matches_zipfile(labelled):
    shard = next((labelled / "shards").glob("*.zip"))
    with zipfile.ZipFile(shard) as zf, ShardReader(shard) as sr:
        assert sr.namelist() == zf.namelist()
        for name in zf.namelist():
            assert sr.read(name) == zf.read(name)
        with pytest.raises(KeyError):
            sr.read("fg_bg/nope.jpg")


def test_item_is_the_stored_images(labelled):
    ds = Dt.CompositeDataset(labelled, "train")
    s = ds[0]
    c = ds.items[0]
    assert {k: (tuple(v.shape), v.dtype) for k, v in s.items()} == {
        "fg_bg": ((3, 64, 64), torch.uint8), "bg": ((3, 64, 64), torch.uint8),
        "mask": ((1, 64, 64), torch.uint8), "depth": ((1, 64, 64), torch.uint8)}
    with zipfile.ZipFile(labelled / c.shard) as zf:
        pil = {cat: np.asarray(Image.open(io.BytesIO(zf.read(member(cat, c.id))))) for cat in ("fg_bg", "mask", "depth")}
    assert np.array_equal(s["mask"][0].numpy(), pil["mask"])
    assert np.array_equal(s["depth"][0].numpy(), pil["depth"])
    assert np.abs(s["fg_bg"].permute(1, 2, 0).numpy().astype(int) - pil["fg_bg"]).max() <= 2  # two JPEG decoders
    bg = np.asarray(Image.open(labelled / "bg" / f"{c.bg:03d}.png"))
    assert np.array_equal(s["bg"].permute(1, 2, 0).numpy(), bg)


def test_batches_smaller_sizes_and_workers_agree(labelled):
    ds = Dt.CompositeDataset(labelled, "train", size=32)
    b = ds[[0, 1, 2]]
    assert b["fg_bg"].shape == (3, 3, 32, 32) and b["mask"].shape == (3, 1, 32, 32)
    assert torch.equal(b["depth"][1], ds[1]["depth"])
    one = [x for x in Dt.make_loader(ds, 8, shuffle=True, workers=0, seed=5)]
    two = [x for x in Dt.make_loader(ds, 8, shuffle=True, workers=2, seed=5)]  # forked workers, own handles
    assert len(one) == len(two) == -(-len(ds) // 8)
    for x, y in zip(one, two):
        assert all(torch.equal(x[k], y[k]) for k in Dt.CATEGORIES)


def test_epoch_sampler_resumes_and_shards():
    s = Dt.EpochBatchSampler(50, 8, shuffle=True, seed=1, drop_last=True)
    s.set_epoch(3)
    full = list(s)
    s.set_epoch(3, start_batch=2)
    assert list(s) == full[2:]
    s.set_epoch(4)
    assert list(s) != full
    ranks = [Dt.EpochBatchSampler(50, 5, seed=1, rank=r, world=2) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(3)
    seen = {i for r in ranks for _, b in r for i in b}
    assert seen == set(range(50)) and len(list(ranks[0])) == len(list(ranks[1]))


def test_joint_augmentation_keeps_the_four_images_aligned(labelled):
    ds = Dt.CompositeDataset(labelled, "train")
    b = ds[list(range(8))]
    gen = torch.Generator().manual_seed(0)
    out = A.augment_batch(b, gen, jitter=0.0)
    assert {k: v.dtype for k, v in out.items()} == {k: torch.uint8 for k in b}
    assert any(not torch.equal(out[k], b[k]) for k in b)
    # Where the warped mask is empty, the warped composite is the warped background (JPEG aside).
    outside = out["mask"][:, 0] == 0
    diff = (out["fg_bg"].float() - out["bg"].float()).abs().amax(1)
    assert diff[outside].mean() < 4
    # Identity parameters change nothing; a flip alone is torch.flip.
    ident = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(8, 2, 3)
    assert all(torch.equal(A.warp(b, ident)[k], b[k]) for k in b)
    flip = torch.tensor([[-1.0, 0, 0], [0, 1.0, 0]]).expand(8, 2, 3)
    assert all(torch.equal(A.warp(b, flip)[k], b[k].flip(-1)) for k in b)


def test_warped_depth_takes_only_values_that_exist_and_the_mask_stays_soft():
    depth = torch.zeros(1, 1, 16, 16, dtype=torch.uint8)
    depth[..., 4:12, 4:12] = 200  # a person at 200 in front of a wall at 0
    mask = (depth > 0).to(torch.uint8) * 255
    theta = torch.tensor([[[0.97, 0.05, 0.03], [-0.05, 0.97, 0.02]]])  # a small rotation and shift
    out = A.warp({"depth": depth, "mask": mask}, theta)
    assert set(out["depth"].unique().tolist()) <= {0, 200}  # nearest: no depth between person and wall
    assert len(set(out["mask"].unique().tolist()) - {0, 255}) > 0  # bilinear: the outline stays soft


def test_flip_geometry_moves_whole_pixels(labelled):
    b = Dt.CompositeDataset(labelled, "train")[list(range(8))]
    out = A.augment_batch(b, torch.Generator().manual_seed(0), jitter=0.0, geometry="flip")
    flipped = [all(torch.equal(out[k][i], b[k][i].flip(-1)) for k in b) for i in range(8)]
    kept = [all(torch.equal(out[k][i], b[k][i]) for k in b) for i in range(8)]
    # Each sample is mirrored whole or left alone (no resampling); both happen in a batch of 8.
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)
    with pytest.raises(ValueError, match="geometry must be one of affine, flip"):
        A.augment_batch(b, geometry="rotate")
    # The dataset's own augmentation takes the same option: each sample mirrored whole or left alone.
    aug = Dt.CompositeDataset(labelled, "train", augment=True, geometry="flip")[list(range(8))]
    assert all(torch.equal(aug["mask"][i], b["mask"][i]) or torch.equal(aug["mask"][i], b["mask"][i].flip(-1))
               for i in range(8))
    with pytest.raises(ValueError, match="geometry must be one of affine, flip"):
        Dt.CompositeDataset(labelled, "train", augment=True, geometry="rotate")


def test_color_jitter_is_the_same_on_both_inputs():
    x = torch.rand(4, 3, 16, 16) * 255
    a, b = A.color_jitter(x, x.clone(), torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.allclose(a, x)
    # With a person in the composite, its background pixels still match the jittered background
    # exactly, in float and in uint8: the difference image stays zero outside the person.
    for dtype in (torch.float32, torch.uint8):
        bg = (torch.rand(4, 3, 16, 16) * 200).to(dtype)
        fg_bg = bg.clone()
        fg_bg[:, :, 4:12, 6:10] = 250
        a, b = A.color_jitter(fg_bg, bg, torch.Generator().manual_seed(2))
        outside = torch.ones(16, 16, dtype=torch.bool)
        outside[4:12, 6:10] = False
        assert torch.equal(a[..., outside], b[..., outside])
        assert (a[..., ~outside].float() - b[..., ~outside].float()).abs().mean() > 10


def test_on_the_fly_draws_new_placements_each_epoch(labelled):
    ds = Dt.OnTheFlyDataset(labelled, "train")
    first = ds[(0, [0, 1])]
    again = ds[(0, [0, 1])]
    later = ds[(1, [0, 1])]
    assert torch.equal(first["mask"], again["mask"])
    assert not torch.equal(first["mask"], later["mask"])
    # The composite equals the background wherever the mask is empty, exactly (no JPEG here).
    out = first["mask"][:, 0] == 0
    assert torch.equal(first["fg_bg"].permute(0, 2, 3, 1)[out], first["bg"].permute(0, 2, 3, 1)[out])


def test_on_the_fly_placements_follow_the_seed(labelled):
    from depthmask_utils.dataset import dataset_split

    split = dataset_split(labelled, 0)  # the same items for both seeds: only the placements may differ
    a, b, c = (Dt.OnTheFlyDataset(labelled, "train", seed=s, split_spec=split)[(0, [0, 1, 2])] for s in (0, 1, 0))
    assert torch.equal(a["mask"], c["mask"]) and not torch.equal(a["mask"], b["mask"])


def test_missing_member_and_unlabelled_dataset_are_named(labelled, built, tmp_path):
    with pytest.raises(DatasetError, match="no depth labels"):
        Dt.CompositeDataset(built)
    ds = Dt.CompositeDataset(labelled, "train")
    c = ds.items[0]
    ds.items = [type(c)(**{**c.__dict__, "id": "fg_bg_999_000_0_00"})]
    with pytest.raises(DatasetError, match="member fg_bg/fg_bg_999_000_0_00.jpg missing"):
        ds[0]
    assert len(read_composites(labelled)) > len(Dt.CompositeDataset(labelled, "train"))


def test_samples_per_epoch_takes_a_fresh_subset_each_epoch():
    s = Dt.EpochBatchSampler(100, 10, shuffle=True, seed=0, drop_last=True, limit=30)
    assert len(s) == 3
    s.set_epoch(0)
    a = {i for _, b in s for i in b}
    s.set_epoch(1)
    b = {i for _, b in s for i in b}
    assert len(a) == len(b) == 30 and a != b


def test_a_dataset_closes_its_shards_and_reopens_them_on_the_next_read(labelled):
    import os

    with Dt.CompositeDataset(labelled, "train") as ds:
        first = ds[0]
        fds = [h._fd for h in ds._zips.values()]
        assert fds and all(os.fstat(fd) for fd in fds)  # open while in use
    assert ds._zips == {}
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)  # closed by the with block
    assert torch.equal(ds[0]["fg_bg"], first["fg_bg"])  # usable again after close
    ds.close()
