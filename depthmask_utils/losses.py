"""Chapter 09: losses for the two heads, and how to weigh them.

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


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per image, averaged; ``eps`` keeps an empty mask from dividing by zero."""
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    inter = (p * t).sum(1)
    return (1 - (2 * inter + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def mask_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + Dice on the mask logits."""
    return F.binary_cross_entropy_with_logits(logits, target) + dice_loss(logits, target)


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


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, window: int = 7) -> torch.Tensor:
    """(1 - SSIM) / 2 with an 11-tap Gaussian (kornia), in 0-1."""
    import kornia

    return kornia.losses.ssim_loss(pred, target, window, max_val=1.0)


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
    """

    def __init__(self, depth: str = "dense-depth", weighting: str = "fixed", w_mask: float = 1.0,
                 w_depth: float = 1.0):
        super().__init__()
        if depth not in DEPTH_LOSSES:
            raise ValueError(f"depth loss must be one of {', '.join(DEPTH_LOSSES)}")
        if weighting not in ("fixed", "uncertainty"):
            raise ValueError("weighting must be 'fixed' or 'uncertainty'")
        self.depth_fn, self.weighting = DEPTH_LOSSES[depth], weighting
        self.w = (w_mask, w_depth)
        self.log_vars = nn.Parameter(torch.zeros(2)) if weighting == "uncertainty" else None

    def forward(self, out: dict[str, torch.Tensor], mask: torch.Tensor,
                depth: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """out: the model's dict, ``mask`` logits and ``depth`` (N, 1, H, W); mask, depth: targets
        (N, 1, H, W) in 0..1. Returns (total, {"mask": float, "depth": float}): the scalar loss to
        backpropagate and the unweighted parts as Python floats.
        """
        lm = mask_loss(out["mask"].float(), mask)
        ld = self.depth_fn(out["depth"].float(), depth)
        if self.log_vars is None:
            total = self.w[0] * lm + self.w[1] * ld
        else:
            s = self.log_vars
            total = torch.exp(-s[0]) * lm + s[0] + torch.exp(-s[1]) * ld + s[1]
        return total, {"mask": float(lm.detach()), "depth": float(ld.detach())}
