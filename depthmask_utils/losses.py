"""Chapter 10: losses for the two heads, and how to weigh them.

Mask: binary cross-entropy (per pixel, well-behaved gradients) + Dice (the overlap, insensitive
to how small the person is). Depth: the DenseDepth recipe - L1, structural similarity (SSIM) and
an image-gradient term that rewards sharp depth edges - or MiDaS' scale-and-shift-invariant loss,
which forgives a global scale and offset (a teacher's relative depth has neither fixed).

All take (N, 1, H, W) tensors; targets in 0-1 (the soft mask is used as a soft target).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import DICE_TARGETS, check_choice


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per image, averaged; ``eps`` keeps an empty mask from dividing by zero."""
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    inter = (p * t).sum(1)
    return (1 - (2 * inter + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def edge_band(target: torch.Tensor, reach: int = 1) -> torch.Tensor:
    """1 where a pixel of the (N, 1, H, W) soft mask lies within ``reach`` pixels of its soft edge
    (0 < target < 1), else 0; same shape, the target's dtype."""
    soft = ((target > 0) & (target < 1)).to(target.dtype)
    return F.max_pool2d(soft, 2 * reach + 1, 1, reach) if reach else soft


def mask_loss(logits: torch.Tensor, target: torch.Tensor, edge_weight: float = 1.0,
              dice_target: str = "soft") -> torch.Tensor:
    """BCE + Dice on the mask logits.

    ``edge_weight`` > 1 counts BCE that many times within a pixel of the soft edge (:func:`edge_band`):
    a small person's IoU is decided there, and those pixels are a few percent of the image.

    ``dice_target``: what Dice compares the prediction with. ``"soft"``, the stored alpha; ``"binary"``,
    alpha >= 0.5, the mask the IoU metric counts. Soft Dice pushes a pixel's probability up wherever
    its alpha exceeds half the current Dice score (about 0.47), so outline pixels of alpha 0.45-0.5
    end above 0.5 and are counted as person; against the binary mask the push changes side at 0.5.
    BCE always takes the soft alpha, whose best prediction is the alpha itself.
    """
    check_choice("dice_target", dice_target, DICE_TARGETS)
    weight = None if edge_weight == 1 else 1 + (edge_weight - 1) * edge_band(target)
    dice_t = target if dice_target == "soft" else (target >= 0.5).to(target.dtype)
    return F.binary_cross_entropy_with_logits(logits, target, weight=weight) + dice_loss(logits, dice_t)


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences (dy, dx), zero-padded to the input's size (as ``kornia.filters.spatial_gradient``
    would give with a [-1, 1] kernel)."""
    dy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    dx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1, 0, 0))
    return dy, dx


def gradient_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean |d pred - d target| over both directions: penalises blurred or misplaced depth edges."""
    (py, px), (ty, tx) = image_gradients(pred), image_gradients(target)
    return (py - ty).abs().mean() + (px - tx).abs().mean()


def _gaussian_band(n: int, window: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(n + window - 1, n) matrix whose column j holds the Gaussian taps at rows j..j+window-1:
    ``padded @ band`` filters the rows of a reflect-padded image (a 1-D 'valid' convolution)."""
    x = torch.arange(window, dtype=dtype, device=device) - (window - 1) / 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    band = torch.zeros(n + window - 1, n, dtype=dtype, device=device)
    cols = torch.arange(n, device=device)
    band[cols[None, :] + torch.arange(window, device=device)[:, None], cols[None, :].expand(window, n)] = \
        (g / g.sum())[:, None].expand(window, n)
    return band


def ssim_map(pred: torch.Tensor, target: torch.Tensor, window: int = 7, sigma: float = 1.5,
             c1: float = 0.01 ** 2, c2: float = 0.03 ** 2) -> torch.Tensor:
    """SSIM per pixel of (N, C, H, W) maps in 0-1: (N, C, H, W), 1 where the local structure agrees.

    The same map as ``kornia.metrics.ssim(pred, target, window)`` (Gaussian of sigma 1.5, reflect
    padding; a test checks them equal), faster on a CPU: the five local moments are filtered by
    the separable Gaussian as two matrix products with banded matrices, which BLAS runs far faster
    than small depthwise convolutions (``benchmarks/README.md``). Computed in float32.
    """
    if window % 2 == 0:
        raise ValueError(f"window must be odd, got {window}")
    c = pred.shape[1]
    device = pred.device.type if pred.device.type in ("cpu", "cuda") else "cpu"
    with torch.autocast(device, enabled=False):  # the moments cancel badly in half precision
        pred, target = pred.float(), target.float()
        x = torch.cat([pred, target, pred * pred, target * target, pred * target], 1)
        x = F.pad(x, (window // 2,) * 4, mode="reflect")
        h, w = pred.shape[-2:]
        rows, cols = (_gaussian_band(n, window, sigma, x.dtype, x.device) for n in (h, w))
        x = rows.T @ (x @ cols)
        mp, mt, pp, tt, pt = x.split(c, 1)
        vp, vt, cov = pp - mp * mp, tt - mt * mt, pt - mp * mt
        return ((2 * mp * mt + c1) * (2 * cov + c2)) / ((mp * mp + mt * mt + c1) * (vp + vt + c2))


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, window: int = 7) -> torch.Tensor:
    """(1 - SSIM) / 2 averaged over pixels, in 0-1: ``kornia.losses.ssim_loss(pred, target, window)``
    (7-tap Gaussian), computed by :func:`ssim_map`."""
    return ((1 - ssim_map(pred, target, window)) / 2).clamp(0, 1).mean()


def dense_depth_loss(pred: torch.Tensor, target: torch.Tensor, w_l1: float = 0.1, w_ssim: float = 1.0,
                     w_grad: float = 1.0) -> torch.Tensor:
    """DenseDepth (Alhashim & Wonka 2018): 0.1 L1 + SSIM + gradient."""
    return w_l1 * (pred - target).abs().mean() + w_ssim * ssim_loss(pred, target) + w_grad * gradient_loss(pred, target)


def align_scale_shift(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """``s * pred + t`` with (s, t) per image from least squares against ``target`` (MiDaS)."""
    n = pred.shape[0]
    p, t = pred.reshape(n, -1), target.reshape(n, -1)
    w = torch.ones_like(p) if valid is None else valid.reshape(n, -1).to(p.dtype)
    a00, a01, a11 = (w * p * p).sum(1), (w * p).sum(1), w.sum(1)
    b0, b1 = (w * p * t).sum(1), (w * t).sum(1)
    det = (a00 * a11 - a01 * a01).clamp_min(1e-12)
    s = (a11 * b0 - a01 * b1) / det
    sh = (a00 * b1 - a01 * b0) / det
    return pred * s.view(-1, 1, 1, 1) + sh.view(-1, 1, 1, 1)


def ssi_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Scale-and-shift-invariant MAE: the error left after the best per-image scale and offset."""
    return (align_scale_shift(pred, target) - target).abs().mean()


DEPTH_LOSSES = {"dense-depth": dense_depth_loss, "ssi": ssi_loss, "l1": lambda p, t: (p - t).abs().mean()}


class MultiTaskLoss(nn.Module):
    """mask loss + depth loss, weighted ``fixed`` (``w_mask``, ``w_depth``) or ``uncertainty``.

    ``uncertainty`` is Kendall, Gal & Cipolla (2018): each task i gets a learned log-variance s_i
    and the total is sum(exp(-s_i) L_i + s_i), so a task whose loss stays large is down-weighted
    instead of hand-tuned. Returns (total, {"mask": ..., "depth": ...}) with the parts detached.

    ``depth_scale`` < 1 scores depth on both maps area-shrunk by that factor. With ``unshuffle=2``
    the depth head works at half size and is upsampled; at full size the SSIM and gradient terms
    chase edges that an upsampled map cannot draw, and cost more (``benchmarks/README.md``).
    """

    def __init__(self, depth: str = "dense-depth", weighting: str = "fixed", w_mask: float = 1.0,
                 w_depth: float = 1.0, depth_scale: float = 1.0, edge_weight: float = 1.0,
                 dice_target: str = "soft"):
        super().__init__()
        self.dice_target = check_choice("dice_target", dice_target, DICE_TARGETS)  # here, not at the first batch
        if edge_weight < 1:
            raise ValueError("edge_weight must be >= 1")
        self.edge_weight = float(edge_weight)
        if not 0 < depth_scale <= 1:
            raise ValueError("depth_scale must be in (0, 1]")
        self.depth_scale = float(depth_scale)
        if depth not in DEPTH_LOSSES:
            raise ValueError(f"depth loss must be one of {', '.join(DEPTH_LOSSES)}")
        if weighting not in ("fixed", "uncertainty"):
            raise ValueError("weighting must be 'fixed' or 'uncertainty'")
        self.depth_fn, self.weighting = DEPTH_LOSSES[depth], weighting
        self.w = (w_mask, w_depth)
        self.log_vars = nn.Parameter(torch.zeros(2)) if weighting == "uncertainty" else None

    def forward(self, out: dict[str, torch.Tensor], mask: torch.Tensor,
                depth: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """out: the model's dict, ``mask`` logits and ``depth`` (N, 1, H, W); mask, depth: targets
        (N, 1, H, W) in 0..1. Returns (total, {"mask": ..., "depth": ...}): the scalar loss to
        backpropagate and the unweighted parts, detached 0-dim tensors on the loss's device (reading
        one as a number, ``float(part)``, waits for the GPU: training does it once per log line).
        """
        lm = mask_loss(out["mask"].float(), mask, self.edge_weight, self.dice_target)
        pred = out["depth"].float()
        if self.depth_scale != 1:  # compare area averages: the depth head's own resolution under unshuffle
            pred = F.interpolate(pred, scale_factor=self.depth_scale, mode="area")
            depth = F.interpolate(depth, scale_factor=self.depth_scale, mode="area")
        ld = self.depth_fn(pred, depth)
        if self.log_vars is None:
            total = self.w[0] * lm + self.w[1] * ld
        else:
            s = self.log_vars
            total = torch.exp(-s[0]) * lm + s[0] + torch.exp(-s[1]) * ld + s[1]
        return total, {"mask": lm.detach(), "depth": ld.detach()}
