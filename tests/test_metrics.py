import numpy as np
import pytest
import torch
from torchmetrics.functional import mean_squared_error
from torchmetrics.functional.classification import binary_f1_score, binary_jaccard_index

from depthmask_utils import losses as L
from depthmask_utils import metrics as M


def _masks(seed=0, n=6, size=24):
    g = torch.Generator().manual_seed(seed)
    target = (torch.rand(n, 1, size, size, generator=g) > 0.6).float()
    pred = (target + 0.6 * torch.rand(n, 1, size, size, generator=g) - 0.3).clamp(0, 1)
    return pred, target


def test_iou_and_dice_match_torchmetrics_per_image():
    pred, target = _masks()
    for i in range(pred.shape[0]):
        assert M.iou(pred, target)[i] == pytest.approx(float(binary_jaccard_index(pred[i], target[i].long())), abs=1e-6)
        assert M.dice(pred, target)[i] == pytest.approx(float(binary_f1_score(pred[i], target[i].long())), abs=1e-6)
    empty = torch.zeros(1, 1, 8, 8)
    assert M.iou(empty, empty).item() == 1.0 and M.dice(empty, empty).item() == 1.0


def test_boundary_f():
    t = torch.zeros(1, 1, 32, 32)
    t[..., 8:24, 8:24] = 1
    assert M.boundary_f(t, t).item() == 1.0
    shifted = torch.roll(t, 1, -1)
    assert M.boundary_f(shifted, t).item() == 1.0  # within the 1-px tolerance of a 32-px image
    two = torch.roll(t, 2, -1)
    assert M.boundary_f(two, t).item() < 0.8 and M.boundary_f(two, t, tolerance=2).item() == 1.0
    assert [M.boundary_tolerance(s, s) for s in (64, 128, 224, 480)] == [1, 1, 3, 5]  # DAVIS's 0.008 x diagonal
    far = torch.roll(t, 6, -1)
    assert M.boundary_f(far, t).item() < 0.6
    assert M.boundary(t).sum() == 4 * 15  # the 1-px ring of a 16 x 16 square


def test_outline_calibration_counts_each_soft_pixel_in_its_alpha_bin():
    g = torch.Generator().manual_seed(3)
    target = torch.rand(4, 1, 12, 12, generator=g)
    target[target < 0.2] = 0  # room, and person: not on the outline
    target[target > 0.9] = 1
    prob = torch.rand(4, 1, 12, 12, generator=g)
    counts = M.outline_counts(prob[:2], target[:2]) + M.outline_counts(prob[2:], target[2:])  # added over batches
    soft = (target > 0) & (target < 1)
    a, p = target[soft].numpy(), prob[soft].numpy()
    idx = np.minimum((a * 20).astype(int), 19)
    for b in range(20):
        sel = idx == b
        assert counts[0, b] == sel.sum()
        assert float(counts[1, b]) == pytest.approx(float(p[sel].sum()), abs=1e-4)
        assert counts[2, b] == (p[sel] >= 0.5).sum()
    c = M.outline_calibration(counts)
    assert c["alpha"][9] == 0.475 and sum(c["pixels"]) == int(soft.sum())
    assert c["pixels"][:4] == [0, 0, 0, 0] and c["mean_prob"][0] is None  # nothing below 0.2: empty bins say so
    b = c["alpha"].index(0.525)
    assert c["counted_as_person"][b] == pytest.approx(float((p[idx == b] >= 0.5).mean()), abs=1e-4)


def test_depth_metrics_against_torchmetrics_and_by_hand():
    g = torch.Generator().manual_seed(1)
    t = torch.rand(3, 1, 16, 16, generator=g) * 0.9 + 0.1
    p = (t + 0.05 * torch.randn(3, 1, 16, 16, generator=g)).clamp(0, 1)
    for i in range(3):
        assert M.rmse(p, t)[i] == pytest.approx(float(mean_squared_error(p[i], t[i], squared=False)), rel=1e-5)
    assert M.abs_rel(p, t)[0] == pytest.approx(float(((p[0] - t[0]).abs() / t[0]).mean()), rel=1e-5)
    d = M.delta_accuracy(p, t, 1)
    assert d[0] == pytest.approx(float((torch.maximum(p[0] / t[0], t[0] / p[0]) < 1.25).float().mean()), rel=1e-6)
    assert torch.all(M.delta_accuracy(t, t) == 1) and torch.all(M.rmse(t, t) == 0)
    assert torch.allclose(M.ssim(t, t), torch.ones(3))


@pytest.mark.parametrize("shape,window", [((3, 1, 32, 40), 7), ((2, 3, 17, 23), 7), ((2, 1, 24, 24), 11)])
def test_our_ssim_equals_kornias_map_loss_and_gradient(shape, window):
    """The banded-matrix SSIM of the depth loss against kornia's: same map, loss and gradient."""
    import kornia

    g = torch.Generator().manual_seed(3)
    t = torch.rand(shape, generator=g)
    p = (t + 0.2 * torch.randn(shape, generator=g)).clamp(0, 1).requires_grad_()
    assert torch.allclose(L.ssim_map(p, t, window), kornia.metrics.ssim(p, t, window), atol=1e-6)
    ours = L.ssim_loss(p, t, window)
    (grad_ours,) = torch.autograd.grad(ours, p)
    theirs = kornia.losses.ssim_loss(p, t, window, max_val=1.0)
    (grad_theirs,) = torch.autograd.grad(theirs, p)
    ours, theirs = float(ours.detach()), float(theirs.detach())
    assert ours == pytest.approx(theirs, abs=1e-6) and 0.05 < ours < 0.5
    assert torch.allclose(grad_ours, grad_theirs, atol=1e-9, rtol=1e-4)
    assert L.ssim_loss(t, t, window) < 1e-6
    with torch.autocast("cpu", dtype=torch.bfloat16):  # computed in float32 whatever the caller's precision
        assert torch.allclose(L.ssim_map(p.detach().bfloat16(), t.bfloat16(), window),
                              L.ssim_map(p.detach().bfloat16().float(), t.bfloat16().float(), window), atol=1e-5)
    with pytest.raises(ValueError, match="odd"):
        L.ssim_map(p, t, 6)


def test_depth_scale_scores_the_area_averaged_maps():
    g = torch.Generator().manual_seed(4)
    out = {"mask": torch.randn(2, 1, 32, 32, generator=g), "depth": torch.rand(2, 1, 32, 32, generator=g)}
    mask, depth = (torch.rand(2, 1, 32, 32, generator=g) > 0.5).float(), torch.rand(2, 1, 32, 32, generator=g)
    total, parts = L.MultiTaskLoss(depth_scale=0.5)(out, mask, depth)
    pooled = torch.nn.functional.avg_pool2d
    assert float(parts["depth"]) == pytest.approx(float(L.dense_depth_loss(pooled(out["depth"], 2), pooled(depth, 2))), rel=1e-5)
    assert float(parts["mask"]) == pytest.approx(float(L.mask_loss(out["mask"], mask)), rel=1e-6)  # the mask stays at full size
    assert float(parts["depth"]) != pytest.approx(float(L.MultiTaskLoss()(out, mask, depth)[1]["depth"]), rel=1e-3)
    with pytest.raises(ValueError, match="depth_scale"):
        L.MultiTaskLoss(depth_scale=2)


def test_scale_shift_alignment_recovers_an_affine_copy():
    t = torch.rand(2, 1, 8, 8)
    p = (t - 0.3) / 2.5
    assert torch.allclose(L.align_scale_shift(p, t), t, atol=1e-5)
    assert M.aligned(M.rmse, p, t).max() < 1e-5 and M.rmse(p, t).min() > 0.1
    assert L.ssi_loss(p, t) < 1e-5 < L.dense_depth_loss(p, t)


def test_losses_penalise_what_they_should():
    t = torch.zeros(1, 1, 16, 16)
    t[..., :, 8:] = 1
    blurred = torch.nn.functional.avg_pool2d(t, 5, 1, 2, count_include_pad=False)
    assert L.gradient_loss(blurred, t) > L.gradient_loss(t, t) == 0
    logits = (t * 2 - 1) * 10
    assert L.mask_loss(logits, t) < 0.01 < L.mask_loss(-logits, t)


def test_edge_weight_counts_bce_more_on_the_soft_edge():
    t = torch.zeros(1, 1, 8, 8)
    t[..., 4:] = 1
    t[..., 3] = 0.5  # a soft column: the band is it and one pixel either side
    band = L.edge_band(t)
    assert band[0, 0, 0].tolist() == [0, 0, 1, 1, 1, 0, 0, 0]
    assert torch.equal(L.edge_band(t, reach=0)[0, 0, 0], (t[0, 0, 0] == 0.5).float())
    logits = torch.randn(1, 1, 8, 8)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, t, reduction="none")
    by_hand = (bce * (1 + 4 * band)).mean() + L.dice_loss(logits, t)
    assert torch.allclose(L.mask_loss(logits, t, edge_weight=5), by_hand)
    assert torch.allclose(L.mask_loss(logits, t, edge_weight=1), bce.mean() + L.dice_loss(logits, t))
    # the same error costs more on the edge than in the room
    good = (t * 2 - 1) * 8
    on_edge, away = good.clone(), good.clone()
    on_edge[..., 2] = 8
    away[..., 0] = 8
    assert L.mask_loss(on_edge, t, 5) > L.mask_loss(away, t, 5)
    assert torch.allclose(L.mask_loss(on_edge, t), L.mask_loss(away, t))
    crit = L.MultiTaskLoss(edge_weight=5)
    depth = torch.rand(1, 1, 8, 8)
    assert crit({"mask": logits, "depth": depth}, t, depth)[1]["mask"] == pytest.approx(float(by_hand))
    with pytest.raises(ValueError, match="edge_weight"):
        L.MultiTaskLoss(edge_weight=0.5)


def test_soft_dice_lifts_outline_pixels_below_half_over_it_and_binary_dice_does_not():
    # A small person in a 64-px frame, as in the sample world: an 8 x 8 body, a faint halo (alpha
    # 0.15) and an outline column of alpha 0.48, which IoU counts as background. Every logit but the
    # column's is held at its target's; the column's is learnt.
    t = torch.zeros(1, 1, 64, 64)
    t[..., 26:38, 26:39] = 0.15
    t[..., 28:36, 28:36] = 1
    t[..., 28:36, 36] = 0.48
    column = torch.zeros_like(t, dtype=torch.bool)
    column[..., 28:36, 36] = True
    fixed = torch.logit(t.clamp(1e-4, 1 - 1e-4))
    assert float((t * t).sum() / (2 * t.sum())) < 0.45  # where soft Dice's push changes side, for p = t
    ends = {}
    for target in ("soft", "binary"):
        z = torch.zeros(1, requires_grad=True)  # the column's logit, probability 0.5 at the start
        opt = torch.optim.Adam([z], lr=0.05)
        for _ in range(300):
            opt.zero_grad()
            L.mask_loss(torch.where(column, z, fixed), t, edge_weight=5, dice_target=target).backward()
            opt.step()
        ends[target] = float(torch.sigmoid(z.detach()))
    assert ends["soft"] > 0.55 and ends["binary"] < 0.2  # soft Dice carries it over the line; binary keeps it below
    assert L.mask_loss(fixed, t, dice_target="binary") == pytest.approx(
        float(torch.nn.functional.binary_cross_entropy_with_logits(fixed, t) + L.dice_loss(fixed, (t >= 0.5).float())))
    with pytest.raises(ValueError, match="dice_target"):
        L.mask_loss(fixed, t, dice_target="hard")
    with pytest.raises(ValueError, match="dice_target"):
        L.MultiTaskLoss(dice_target="hard")


def test_uncertainty_weighting_learns_log_variances():
    crit = L.MultiTaskLoss(weighting="uncertainty")
    out = {"mask": torch.zeros(1, 1, 8, 8, requires_grad=True), "depth": torch.full((1, 1, 8, 8), 0.5, requires_grad=True)}
    total, parts = crit(out, torch.ones(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
    total.backward()
    assert crit.log_vars.grad is not None and set(parts) == {"mask", "depth"}
    with pytest.raises(ValueError):
        L.MultiTaskLoss(weighting="magic")
