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
    small = M.receptive_field(M.SmallUNet(base=4, levels=2), 96)
    deep = M.receptive_field(M.SmallUNet(base=4, levels=4), 96)
    assert 10 < small < deep <= 96


def test_a_tiny_model_overfits_four_samples():
    from depthmask_utils.losses import MultiTaskLoss
    from depthmask_utils.metrics import iou

    torch.manual_seed(0)
    bg = torch.rand(4, 3, 32, 32)
    mask = torch.zeros(4, 1, 32, 32)
    for i in range(4):
        mask[i, :, 4 + i:20 + i, 8:16 + i] = 1
    fg_bg = bg * (1 - mask) + mask * torch.tensor([0.9, 0.2, 0.2]).view(1, 3, 1, 1)
    depth = torch.linspace(0, 1, 32).view(1, 1, 32, 1).expand(4, 1, 32, 32) * (1 - mask) + 0.7 * mask
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
