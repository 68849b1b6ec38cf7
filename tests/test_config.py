"""One configuration: typed training values in the profiles, one override rule, defaults from a profile."""

import inspect
import json

import pytest

from depthmask_utils import cli, config
from depthmask_utils.config import TrainConfig, from_profile, get_profile, train_config
from depthmask_utils.depth import label_depth
from depthmask_utils.errors import ConfigError
from depthmask_utils.overlay import generate
from depthmask_utils.sample import make_sample_world


def test_one_override_rule_for_cli_notebooks_pipeline_and_benchmarks():
    sample = get_profile("sample")
    cfg = train_config(sample, ["edge_weight=5", "model_options.refine=4", "sizes=[64,128]", "geometry=affine"],
                       epochs=2, workers=None)
    assert cfg.edge_weight == 5.0 and cfg.sizes == (64, 128) and cfg.geometry == "affine" and cfg.epochs == 2
    assert cfg.model_options == {**sample.train.model_options, "refine": 4} and cfg.workers == sample.train.workers
    assert cfg.overrides == {"epochs": 2, "edge_weight": 5, "model_options.refine": 4, "sizes": [64, 128],
                             "geometry": "affine"} and cfg.profile == "sample"
    assert sample.train.edge_weight == 5.0 and sample.train.model_options["refine"] == 16  # the profile is left alone
    assert train_config(sample, ["workers=0"]).workers == 0  # zero means zero, as on the CLI
    assert train_config(sample, ["autocast_dtype=float16"]).autocast_dtype == "float16"  # bare text, as geometry
    assert train_config(sample, model="resnet18").model_options == {}  # another model: its own options
    for bad, message in ((["edge_wieght=1"], "edge_wieght: not a training value \\(did you mean edge_weight"),
                         (["epochs=two"], "epochs: expected int, got 'two'"), (["epochs"], "expected KEY=VALUE"),
                         (["geometry=warp"], "geometry must be one of"), (["profile_x=1"], "not a training value"),
                         (["dice_target=hard"], "dice_target must be one of soft, binary, not 'hard'"),
                         (["autocast_dtype=half"], "autocast_dtype must be one of auto, float16, bfloat16, not 'half'")):
        with pytest.raises(ConfigError, match=message):
            train_config(sample, bad)
    with pytest.raises(ConfigError, match="lr: expected float"):
        TrainConfig.from_dict({"lr": "fast"})
    assert all(isinstance(get_profile(n).train, TrainConfig) for n in ("sample", "full", "smoke"))
    # every profile's Dice takes the mask IoU counts; a run folder from before the key read its default, soft
    assert {get_profile(n).train.dice_target for n in ("sample", "full", "smoke")} == {"binary"}
    assert TrainConfig().dice_target == "soft"



def test_the_cli_shortcuts_and_set_are_the_same_rule():
    args = cli.build_parser().parse_args(["train", "ds", "--out", "run", "--epochs", "2", "--workers", "0",
                                          "--set", "lr=0.001", "--set", "model_options.base=8"])
    cfg = cli._train_config(args)
    assert cfg == train_config("sample", ["lr=0.001", "model_options.base=8"], epochs=2, workers=0)
    assert cfg.overrides == {"epochs": 2, "workers": 0, "lr": 0.001, "model_options.base": 8}
    assert cli.main(["train", "ds", "--out", "run", "--set", "lr_max=1"]) == 2  # one line, no traceback


def test_a_run_records_its_profile_and_overrides(labelled, tmp_path):
    from depthmask_utils.train import train

    cfg = train_config("sample", ["sizes=[32]", "batch_size=8", "model_options.base=4", "model_options.levels=2",
                                  "val_samples=8", "samples_per_epoch=16"], epochs=1, workers=0, device="cpu")
    train(labelled, tmp_path / "run", cfg, progress=False, log=lambda *a: None)
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded["profile"] == "sample" and recorded["overrides"]["model_options.base"] == 4
    assert "overrides" not in recorded["config"] and recorded["config"]["sizes"] == [32]


def test_function_defaults_come_from_the_profile():
    sample = get_profile("sample")
    assert from_profile(sample, size=None, placements=3, network_teacher=None) == (128, 3, "mini")
    for fn, names in ((generate, ("size", "placements", "scale", "seed", "jpeg_quality", "jpeg_chroma", "floor_teacher")),
                      (label_depth, ("teacher", "mode", "batch_size", "input_size")),
                      (make_sample_world, ("n_bg", "n_fg", "size", "seed"))):
        params = inspect.signature(fn).parameters
        assert all(params[n].default is None for n in names), fn  # None: the profile's value
        assert params["profile"].default in ("sample", None)


def test_make_sample_world_takes_the_profiles_values(tmp_path):
    smoke = get_profile("smoke")
    summary = make_sample_world(tmp_path / "w", n_bg=2, profile="smoke", workers=1)
    assert summary["params"] == {"n_bg": 2, "n_fg": smoke.n_fg, "size": smoke.world_size, "seed": smoke.seed,
                                 "n_plain": max(1, smoke.n_fg // 8), "layout": 2}


def test_one_option_applies_over_a_whole_options_dict_and_counts_must_be_positive():
    cfg = train_config("sample", ['model_options={"base": 32}', "model_options.refine=4"])
    assert cfg.model_options == {"base": 32, "refine": 4}  # the given dict, not the profile's, under the one option
    args = cli.build_parser().parse_args(["train", "ds", "--out", "run", "--refine-from", "64", "--set",
                                          "model_options.base=32"])
    assert "unshuffle" not in cli._train_config(args).model_options  # the refiner's options stay the refiner's
    for bad in ("log_every=0", "checkpoint_every=0", "epochs=0"):
        with pytest.raises(ConfigError, match="need at least 1"):
            train_config("sample", [bad])


def test_a_grid_with_an_empty_colour_column_draws_without_its_bar():
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np

    from depthmask_utils import figures

    fig = figures.show_grid([[np.zeros((4, 4, 3), np.uint8)]], ["rgb", "depth"])
    assert len(fig.axes) == 2  # two image axes, no colour bar for the empty depth column
