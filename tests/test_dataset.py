import json

import pytest

from depthmask_utils import dataset as D
from depthmask_utils.errors import DatasetError


def test_member_names_are_the_documented_ones(built):
    info = json.loads((built / D.DATASET_JSON).read_text())
    for cat, pattern in info["members"].items():
        assert D.member_pattern(cat) == pattern
    assert D.member("depth", "fg_bg_001_002_1_03") == "depth/fg_bg_001_002_1_03.png"
    assert D.prepared_path(built, "fg_mask", 3).relative_to(built).as_posix() == "fg_mask/003.png"


def test_typed_manifest(built):
    rows = D.read_composites(built)
    assert len(rows) == 3 * 4 * 2 * 3
    c = rows[0]
    assert isinstance(c.bg, int) and isinstance(c.x, int) and c.depth_lo is None
    assert c.id == f"fg_bg_{c.fg:03d}_{c.bg:03d}_{c.flip}_{c.k:02d}"


def test_read_info_checks_format_and_depth(dataset):
    with pytest.raises(DatasetError, match="no depth labels"):
        D.read_info(dataset, need_depth=True)
    info = json.loads((dataset / D.DATASET_JSON).read_text())
    info["format"] = "something-else/9"
    (dataset / D.DATASET_JSON).write_text(json.dumps(info))
    with pytest.raises(DatasetError, match="format 'something-else/9'"):
        D.read_info(dataset)
    with pytest.raises(DatasetError, match="no dataset.json"):
        D.read_info(dataset / "bg")


def test_split_is_deterministic_and_disjoint():
    a, b = D.make_split(20, 10, seed=3), D.make_split(20, 10, seed=3)
    assert a == b and D.make_split(20, 10, seed=4) != a
    assert set(a.train_bg) | set(a.val_bg) | set(a.test_bg) == set(range(20))
    assert not (set(a.train_bg) & set(a.test_bg)) and not (set(a.val_bg) & set(a.test_bg))
    assert set(a.seen_fg) | set(a.heldout_fg) == set(range(10)) and not set(a.seen_fg) & set(a.heldout_fg)
    assert len(a.test_bg) == 3 and len(a.val_bg) == 3 and len(a.heldout_fg) == 2
    assert D.Split.from_dict(json.loads(json.dumps(a.as_dict()))) == a
    with pytest.raises(ValueError, match="too few"):
        D.make_split(2, 5)


def test_no_test_background_or_heldout_foreground_reaches_training(labelled):
    rows = D.read_composites(labelled)
    split = D.dataset_split(labelled, seed=0)
    train = split.select(rows, "train")
    test = split.select(rows, "test")
    assert train and test
    assert not {c.bg for c in train} & set(split.test_bg + split.val_bg)
    assert not {c.fg for c in train} & set(split.heldout_fg)
    assert not {c.id for c in train} & {c.id for c in test}
    groups = {g: split.select(rows, g) for g in ("unseen_bg", "unseen_fg", "unseen_both")}
    assert sum(len(v) for v in groups.values()) == len(test)
    assert all(c.bg in split.test_bg and c.fg in split.seen_fg for c in groups["unseen_bg"])
    assert all(c.bg in split.train_bg and c.fg in split.heldout_fg for c in groups["unseen_fg"])
