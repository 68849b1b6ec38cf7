import pytest
import torch

from depthmask_utils import models as M


@pytest.mark.parametrize("name,size", [("small-unet", 64), ("resnet18", 64), ("resnet34", 96)])
def test_output_shapes_and_ranges(name, size):
    model = M.build_model(name, **({"base": 8} if name == "small-unet" else {})).eval()
    x = torch.rand(2, 3, size, size)
    out = model(x, torch.rand(2, 3, size, size))
    assert out["mask"].shape == out["depth"].shape == (2, 1, size, size)
    assert 0 <= out["depth"].min() and out["depth"].max() <= 1


def test_unshuffled_unet_runs_at_half_size_and_answers_at_full_size():
    torch.manual_seed(0)
    model = M.SmallUNet(base=4, levels=2, unshuffle=2).eval()
    fg_bg, bg = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    seen = []
    hook = model.down[0].register_forward_hook(lambda m, i, o: seen.append((i[0].shape, o.shape)))
    with torch.no_grad():
        out = model(fg_bg, bg)
    hook.remove()
    assert seen == [((2, 44, 16, 16), (2, 4, 16, 16))]  # 11 stem channels x 4 sub-pixels, at half size
    assert out["mask"].shape == out["depth"].shape == (2, 1, 32, 32)
    assert 0 <= out["depth"].min() and out["depth"].max() <= 1
    # the 2 x 2 sub-pixels of one feature pixel come from the 4 channels of the mask head, in pixel_shuffle order
    with torch.no_grad():
        feats = {}
        model.heads.mask.register_forward_hook(lambda m, i, o: feats.setdefault("mask", o))
        model(fg_bg, bg)
    assert torch.equal(out["mask"][:, 0, 0::2, 1::2], feats["mask"][:, 1])
    assert torch.equal(out["mask"][:, 0, 1::2, 0::2], feats["mask"][:, 2])


def test_nearest_upsampling_repeats_pixels_and_keeps_the_weights():
    torch.manual_seed(0)
    up = M.Up(4, 2, 3, mode="nearest").eval()
    x, skip = torch.rand(1, 4, 5, 5), torch.rand(1, 2, 10, 10)
    with torch.no_grad():
        want = up.block(torch.cat([x.repeat_interleave(2, -1).repeat_interleave(2, -2), skip], 1))
        assert torch.equal(up(x, skip), want)
    bilinear, nearest = M.SmallUNet(base=4, levels=2), M.SmallUNet(base=4, levels=2, upsample="nearest")
    assert bilinear.state_dict().keys() == nearest.state_dict().keys()  # the same parameters; only the resize differs
    with pytest.raises(ValueError, match="upsample must be one of bilinear, nearest"):
        M.SmallUNet(upsample="bicubic")


def test_parameter_counts_match_torchvision():
    import torchvision

    enc = torchvision.models.resnet18(weights=None)
    enc_params = sum(p.numel() for n, p in enc.named_parameters() if not n.startswith("fc."))
    model = M.build_model("resnet18")
    stem_extra = 3 * 64 * 7 * 7  # the first conv takes 6 channels instead of 3
    encoder = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("stem", "layers")))
    assert encoder == enc_params + stem_extra
    assert M.count_parameters(M.build_model("small-unet", base=16)) < 2.5e6


def test_six_channel_conv_keeps_pretrained_response():
    conv = torch.nn.Conv2d(3, 8, 7, 2, 3, bias=False)
    six = M.six_channel_conv(conv)
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(six(torch.cat([x, x], 1)), conv(x), atol=1e-6)


def test_normalisation_comes_from_stats():
    stats = {"fg_bg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
             "bg": {"mean": [0.1, 0.2, 0.3], "std": [1.0, 1.0, 1.0]}}
    norm = M.Normalise(stats)
    a, b = norm(torch.full((1, 3, 2, 2), 0.75), torch.zeros(1, 3, 2, 2))
    assert torch.allclose(a, torch.ones_like(a)) and torch.allclose(b[0, :, 0, 0], -torch.tensor([0.1, 0.2, 0.3]))


def test_receptive_field_grows_with_depth():
    torch.manual_seed(1)  # a tiny random net has its centre output dead for some seeds (ReLU): seed 0 is one
    small = M.receptive_field(M.SmallUNet(base=4, levels=2), 96)
    deep = M.receptive_field(M.SmallUNet(base=4, levels=4), 96)
    assert 10 < small < deep <= 96
    dead = M.SmallUNet(base=4, levels=2)
    torch.nn.init.zeros_(dead.heads.depth[0].weight)  # the depth head no longer sees its features
    with pytest.raises(ValueError, match="no input pixel changes"):
        M.receptive_field(dead, 96)


def test_a_tiny_model_overfits_four_samples(toy_scene):
    from depthmask_utils.losses import MultiTaskLoss
    from depthmask_utils.metrics import iou

    fg_bg, bg, mask, depth = (toy_scene[k] for k in ("fg_bg", "bg", "mask", "depth"))
    model, crit = M.SmallUNet(base=8, levels=2), MultiTaskLoss()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(250):
        loss, _ = crit(model(fg_bg, bg), mask, depth)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():  # batch statistics, as in training: this checks fitting, not BN's running averages
        out = model(fg_bg, bg)
    assert iou(torch.sigmoid(out["mask"]), mask).min() > 0.95
    assert (out["depth"] - depth).abs().mean() < 0.05


def test_mask_refiner_shapes_start_and_sizes():
    torch.manual_seed(0)
    model = M.build_model("small-unet", refine_from=16, base=4, levels=2).eval()
    assert isinstance(model, M.MaskRefiner)
    fg_bg, bg = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = model(fg_bg, bg)
        base = model.base(torch.nn.functional.avg_pool2d(fg_bg, 2), torch.nn.functional.avg_pool2d(bg, 2))
    assert out["mask"].shape == out["depth"].shape == (2, 1, 32, 32)
    # the correction starts at zero: an untrained refiner is the base model, upsampled
    up = torch.nn.functional.interpolate(base["mask"], size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.allclose(out["mask"], up, atol=1e-6)
    with torch.no_grad():  # any size: inputs that are not a multiple of the working size are resized
        odd = model(torch.rand(1, 3, 40, 40), torch.rand(1, 3, 40, 40))
    assert odd["mask"].shape == (1, 1, 40, 40) and 0 <= odd["depth"].min() and odd["depth"].max() <= 1
    extra = M.count_parameters(model) - M.count_parameters(M.build_model("small-unet", base=4, levels=2))
    assert extra == 10 * 8 * 9 + 2 * 8 + 8 * 8 * 9 + 2 * 8 + 8 + 1  # two 3x3 convs with BN, a 1x1 conv


def test_unet_refinement_starts_at_zero():
    torch.manual_seed(0)
    plain = M.SmallUNet(base=4, levels=2, unshuffle=2).eval()
    refined = M.SmallUNet(base=4, levels=2, unshuffle=2, refine=8).eval()
    missing = refined.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("refine.") for k in missing)
    fg_bg, bg = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a, b = plain(fg_bg, bg), refined(fg_bg, bg)
    assert torch.equal(a["depth"], b["depth"]) and torch.allclose(a["mask"], b["mask"], atol=1e-6)
    # 11 stem channels at full size (images, difference, coordinates) and the logits
    extra = M.count_parameters(refined) - M.count_parameters(plain)
    assert extra == 12 * 8 * 9 + 2 * 8 + 8 * 8 * 9 + 2 * 8 + 8 + 1


@pytest.mark.slow
def test_mask_refiner_sharpens_a_small_mask():
    """Detail finer than the working size (1-px stripes, like hair or gaps between fingers): the base
    model, shrunk to half size, sees only a blur there; the refiner sees the stripes in the difference."""
    from depthmask_utils.losses import mask_loss
    from depthmask_utils.metrics import iou

    torch.manual_seed(0)
    bg = torch.rand(4, 3, 64, 64)
    mask = torch.zeros(4, 1, 64, 64)
    for i in range(4):
        mask[i, :, 10 + i:50, 20 + 2 * i:44 + 2 * i:2] = 1  # every other column: a comb of 1-px teeth
    fg_bg = bg * (1 - mask) + mask * torch.tensor([0.9, 0.3, 0.2]).view(1, 3, 1, 1)
    scores = {}
    for refine in (None, 32, "unshuffle"):
        torch.manual_seed(0)
        if refine == "unshuffle":  # space-to-depth: the U-Net at half size, the mask at full size
            model = M.build_model("small-unet", base=8, levels=2, unshuffle=2)
        else:
            model = M.build_model("small-unet", refine_from=refine, base=8, levels=2)
        opt = torch.optim.Adam(model.parameters(), 3e-3)
        x = (fg_bg, bg) if refine else (torch.nn.functional.avg_pool2d(fg_bg, 2), torch.nn.functional.avg_pool2d(bg, 2))
        for _ in range(150):
            logits = model(*x)["mask"]
            if not refine:
                logits = torch.nn.functional.interpolate(logits, size=(64, 64), mode="bilinear", align_corners=False)
            loss = mask_loss(logits, mask)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            logits = model(*x)["mask"]
            if not refine:
                logits = torch.nn.functional.interpolate(logits, size=(64, 64), mode="bilinear", align_corners=False)
        scores[refine] = float(iou(torch.sigmoid(logits), mask).mean())
    # the base can at best cover the whole comb: IoU 0.5
    assert scores[32] > 0.9 and scores["unshuffle"] > 0.9 and scores[None] < 0.7, scores


def test_cli_refine_from_reaches_the_model_options():
    from depthmask_utils.cli import _train_config, build_parser

    args = build_parser().parse_args(["train", "ds", "--out", "run", "--size", "128", "--refine-from", "64"])
    cfg = _train_config(args)
    assert cfg.sizes[-1] == 128 and cfg.model_options["refine_from"] == 64
    model = M.build_model(cfg.model, **cfg.model_options)
    assert isinstance(model, M.MaskRefiner) and model.base.unshuffle == 1  # the refiner, not space-to-depth


def test_cli_defaults_are_the_profiles_and_another_model_drops_its_options():
    from depthmask_utils.cli import _train_config, build_parser

    cfg = _train_config(build_parser().parse_args(["train", "ds", "--out", "run"]))
    model = M.build_model(cfg.model, **cfg.model_options)
    assert cfg.sizes == (128,) and model.unshuffle == 2  # the sample profile: space-to-depth on 128-px batches
    cfg = _train_config(build_parser().parse_args(["train", "ds", "--out", "run", "--model", "resnet18"]))
    assert cfg.model_options == {} and cfg.depth_scale == 1.0 and isinstance(M.build_model(cfg.model, **cfg.model_options), M.ResNetUNet)
