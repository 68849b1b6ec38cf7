"""Chapter 10: metrics - mask overlap and boundaries, depth error - on (N, 1, H, W) tensors in 0-1.

Every function returns one value **per image** (a (N,) tensor): average them over a test set, and
keep them per image to find the worst cases. Masks are binarised at ``threshold`` (the stored mask
is soft at the edge). Depth is the dataset's relative inverse depth in 0-1 (1 = nearest); ratio
metrics (AbsRel, delta) use pixels with target > ``min_depth`` only, because per-image
normalisation maps the farthest point to 0 and any ratio to it explodes.

``iou`` and ``dice`` agree with torchmetrics' ``binary_jaccard_index`` and ``dice`` per image,
``rmse`` with ``mean_squared_error(squared=False)``, ``ssim`` is torchmetrics' (tests check).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .losses import align_scale_shift

MIN_DEPTH = 0.05


def _binary(x: torch.Tensor, threshold: float) -> torch.Tensor:
    return (x >= threshold).flatten(1).float()


def iou(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Intersection over union of the binarised masks; 1 when both are empty."""
    p, t = _binary(pred, threshold), _binary(target, threshold)
    inter, union = (p * t).sum(1), ((p + t) > 0).float().sum(1)
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def dice(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """2 |P ∩ T| / (|P| + |T|) of the binarised masks (the F1 score of the foreground pixels)."""
    p, t = _binary(pred, threshold), _binary(target, threshold)
    total = p.sum(1) + t.sum(1)
    return torch.where(total > 0, 2 * (p * t).sum(1) / total.clamp_min(1), torch.ones_like(total))


def boundary(mask: torch.Tensor) -> torch.Tensor:
    """The 1-pixel inner boundary of a binary (N, 1, H, W) mask: mask minus its 3x3 erosion."""
    eroded = -F.max_pool2d(-mask, 3, 1, 1)
    return mask - eroded


BOUNDARY_FRACTION = 0.008  # DAVIS's boundary tolerance, a fraction of the image diagonal


def boundary_tolerance(height: int, width: int) -> int:
    """Pixels of tolerance for :func:`boundary_f`: DAVIS's 0.008 x the image diagonal, rounded (at
    least 1): 1 px at 128 x 128, 3 px at 224 x 224.

    DAVIS rounds up, which at 128 px gives 2 px: on people this small every model's outline then
    lies within reach of the true one, and the measure reads 1.000 for all of them. Rounding to
    the nearest pixel keeps the same fraction of the image and tells outlines apart."""
    return max(1, round(BOUNDARY_FRACTION * (height ** 2 + width ** 2) ** 0.5))


def boundary_f(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5,
               tolerance: int | None = None) -> torch.Tensor:
    """Boundary F-measure (the DAVIS "F"), per image: precision and recall of boundary pixels, each
    counted as matched when the other boundary lies within ``tolerance`` pixels (None:
    :func:`boundary_tolerance` of the image size). Sensitive to ragged edges, which IoU hardly
    notices on a large person. ``pred``, ``target``: (N, 1, H, W) in 0-1; returns (N,) in 0-1."""
    if tolerance is None:
        tolerance = boundary_tolerance(*pred.shape[-2:])
    bp = boundary((pred >= threshold).float())
    bt = boundary((target >= threshold).float())
    k = 2 * tolerance + 1
    near_t = F.max_pool2d(bt, k, 1, tolerance)
    near_p = F.max_pool2d(bp, k, 1, tolerance)
    n_p, n_t = bp.flatten(1).sum(1), bt.flatten(1).sum(1)
    precision = (bp * near_t).flatten(1).sum(1) / n_p.clamp_min(1)
    recall = (bt * near_p).flatten(1).sum(1) / n_t.clamp_min(1)
    f = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    both_empty = (n_p == 0) & (n_t == 0)
    return torch.where(both_empty, torch.ones_like(f), f)


OUTLINE_BINS = 20  # alpha bins of 0.05 over the soft outline


def outline_counts(prob: torch.Tensor, target: torch.Tensor, bins: int = OUTLINE_BINS) -> torch.Tensor:
    """Sums over the soft outline's pixels (0 < target < 1) per alpha bin of width 1 / ``bins``:
    a (3, bins) float64 tensor on the CPU - pixels, their summed predicted probability, and those
    counted as person (prob >= 0.5). Add it up over batches; :func:`outline_calibration` turns the
    total into means. ``prob``, ``target``: (N, 1, H, W) in 0-1.

    "Outline" here is every pixel that is partly person (0 < alpha < 1). On the sample world's small,
    resized people that band is wide (chapter 10's edge band); pixels of alpha near 0 or 1 fill the
    outer bins, and the bins next to 0.5 hold the pixels whose side decides the IoU. IoU counts a
    pixel as person when its alpha is at least 0.5: a model that draws its line where IoU does
    counts less than half the pixels of a bin below 0.5 and more than half of a bin above."""
    soft = (target > 0) & (target < 1)
    alpha, p = target[soft].double(), prob[soft].double()
    idx = (alpha * bins).long().clamp_max(bins - 1)
    out = torch.zeros(3, bins, dtype=torch.float64, device=prob.device)
    for row, values in enumerate((torch.ones_like(p), p, (p >= 0.5).double())):
        out[row].index_add_(0, idx, values)
    return out.cpu()


def outline_calibration(counts: torch.Tensor) -> dict[str, list]:
    """Means per alpha bin from :func:`outline_counts`' (3, bins) sums: ``alpha`` (bin centres),
    ``pixels``, ``mean_prob`` and ``counted_as_person`` (the share with prob >= 0.5); None for an empty bin."""
    bins = counts.shape[1]
    n = counts[0]

    def per_pixel(row: torch.Tensor) -> list:
        return [round(float(v / c), 4) if c else None for v, c in zip(row, n)]

    return {"alpha": [round((i + 0.5) / bins, 4) for i in range(bins)], "pixels": [int(c) for c in n],
            "mean_prob": per_pixel(counts[1]), "counted_as_person": per_pixel(counts[2])}


def rmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Root mean squared error per image, in the 0-1 units of the depth maps."""
    return ((pred - target) ** 2).flatten(1).mean(1).sqrt()


def _valid(target: torch.Tensor, min_depth: float) -> torch.Tensor:
    return (target > min_depth).flatten(1).float()


def abs_rel(pred: torch.Tensor, target: torch.Tensor, min_depth: float = MIN_DEPTH) -> torch.Tensor:
    """Mean |pred - target| / target over pixels with target > ``min_depth``."""
    v = _valid(target, min_depth)
    p, t = pred.flatten(1), target.flatten(1).clamp_min(min_depth)
    return ((p - t).abs() / t * v).sum(1) / v.sum(1).clamp_min(1)


def delta_accuracy(pred: torch.Tensor, target: torch.Tensor, k: int = 1, min_depth: float = MIN_DEPTH) -> torch.Tensor:
    """Fraction of valid pixels with max(pred/target, target/pred) < 1.25**k (delta_k)."""
    v = _valid(target, min_depth)
    p, t = pred.flatten(1).clamp_min(1e-6), target.flatten(1).clamp_min(min_depth)
    ok = (torch.maximum(p / t, t / p) < 1.25 ** k).float()
    return (ok * v).sum(1) / v.sum(1).clamp_min(1)


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Structural similarity per image (torchmetrics, 11-tap Gaussian, data range 1)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(pred.float(), target.float(), data_range=1.0, reduction="none")


def aligned(fn, pred: torch.Tensor, target: torch.Tensor, **kw) -> torch.Tensor:
    """``fn`` after the best per-image scale and shift of ``pred`` (what a relative-depth teacher
    or student can be fairly asked for)."""
    return fn(align_scale_shift(pred, target).clamp(0, 1), target, **kw)


def mask_metrics(prob: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image mask metrics from probabilities: iou, dice, boundary_f."""
    return {"mask_iou": iou(prob, target), "mask_dice": dice(prob, target), "mask_boundary_f": boundary_f(prob, target)}


def depth_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image depth metrics: rmse, abs_rel, delta1, ssim, and the scale-and-shift-aligned rmse."""
    return {"depth_rmse": rmse(pred, target), "depth_abs_rel": abs_rel(pred, target),
            "depth_delta1": delta_accuracy(pred, target, 1), "depth_ssim": ssim(pred, target),
            "depth_rmse_aligned": aligned(rmse, pred, target)}


def all_metrics(mask_prob: torch.Tensor, mask: torch.Tensor, depth_pred: torch.Tensor,
                depth: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every metric the evaluation chapter reports, per image."""
    return {**mask_metrics(mask_prob, mask), **depth_metrics(depth_pred, depth)}
