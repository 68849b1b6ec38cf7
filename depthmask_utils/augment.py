"""Chapter 08: joint augmentation - the same geometry on composite, background, mask and depth.

A batch is a dict of (B, C, H, W) tensors (uint8 0-255 images, float masks and depth); every
function here keeps the four aligned and runs on whatever device the batch is on (the GPU, in
training), after loading. Random draws come from the ``generator`` given, so a step's
augmentation depends only on the seed, the epoch and the step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import GEOMETRIES, check_choice

def affine_params(n: int, generator: torch.Generator | None = None, flip_p: float = 0.5, shift: float = 0.08,
                  scale: tuple[float, float] = (0.9, 1.15), rotate_deg: float = 8.0) -> torch.Tensor:
    """(n, 2, 3) matrices for ``F.affine_grid``: random h-flip, shift-scale-rotate per sample.

    Shifts are fractions of the image side; a scale > 1 zooms in.
    """
    u = torch.rand(n, 5, generator=generator)
    flip = torch.where(u[:, 0] < flip_p, -1.0, 1.0)
    angle = (u[:, 1] * 2 - 1) * rotate_deg * torch.pi / 180
    s = scale[0] + u[:, 2] * (scale[1] - scale[0])
    tx, ty = (u[:, 3] * 2 - 1) * shift * 2, (u[:, 4] * 2 - 1) * shift * 2  # grid units span 2 per side
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    return torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)


NEAREST = ("depth",)  # resampled without mixing neighbours (see warp)


def warp(batch: dict[str, torch.Tensor], theta: torch.Tensor) -> dict[str, torch.Tensor]:
    """Apply the same (B, 2, 3) affine ``theta`` to every tensor of ``batch`` (border padding).

    Images and the mask are resampled bilinearly: a blended colour or a soft alpha is what a camera
    would see. Depth is resampled with ``nearest``: at the person's outline a bilinear weight would
    mix the person's depth with the wall's behind, a depth that exists nowhere in the scene.
    """
    first = next(iter(batch.values()))
    grid = F.affine_grid(theta.to(first.device, torch.float32), list(first.shape[:1]) + [1] + list(first.shape[2:]),
                         align_corners=False)
    out = {}
    for k, v in batch.items():
        mode = "nearest" if k in NEAREST else "bilinear"
        w = F.grid_sample(v.float(), grid, mode=mode, padding_mode="border", align_corners=False)
        out[k] = w.round().clamp(0, 255).to(v.dtype) if v.dtype == torch.uint8 else w
    return out


def color_jitter(fg_bg: torch.Tensor, bg: torch.Tensor, generator: torch.Generator | None = None,
                 strength: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random brightness, contrast and saturation change on a composite and its background.

    Same for both because the pair was taken by one camera: jittering them apart would make every
    background pixel look changed, which is what the model uses to find the person. So the
    contrast pivots on the background's mean for both images: a pivot of each image's own mean
    (the composite's includes the person) would shift every background pixel of the composite
    and leave a flat offset in the difference image.
    """
    n = fg_bg.shape[0]
    u = (torch.rand(n, 3, 1, 1, 1, generator=generator) * 2 - 1) * strength + 1
    u = u.to(fg_bg.device)
    pivot = bg.float().mean(dim=(1, 2, 3), keepdim=True) * u[:, 0]
    out = []
    for img in (fg_bg, bg):
        x = img.float()
        x = x * u[:, 0]
        x = (x - pivot) * u[:, 1] + pivot
        grey = x.mean(dim=1, keepdim=True)
        x = (x - grey) * u[:, 2] + grey
        out.append(x.round().clamp(0, 255).to(img.dtype) if img.dtype == torch.uint8 else x.clamp(0, 255))
    return out[0], out[1]


def augment_batch(batch: dict[str, torch.Tensor], generator: torch.Generator | None = None,
                  jitter: float = 0.2, geometry: str = "affine", **affine) -> dict[str, torch.Tensor]:
    """Joint augmentation of a batch, on whatever device it lives.

    Geometry is identical for fg_bg, bg, mask and depth, so the four stay aligned; colour jitter
    touches only the RGB inputs. Values stay in 0-255, dtype is kept.

    ``geometry``: ``"affine"`` mirrors, shifts, scales and rotates (``affine`` passes ranges to
    :func:`affine_params`), resampling bilinearly; ``"flip"`` only mirrors half the samples, which
    moves whole pixels and keeps every edge as sharp as in the test images. On small people the
    resampling blur costs mask accuracy (``benchmarks/README.md``).
    """
    check_choice("geometry", geometry, GEOMETRIES)
    if geometry == "flip":
        flip = (torch.rand(batch["fg_bg"].shape[0], generator=generator) < 0.5).to(batch["fg_bg"].device)
        out = {k: torch.where(flip.view(-1, 1, 1, 1), v.flip(-1), v) for k, v in batch.items()}
    else:
        out = warp(batch, affine_params(batch["fg_bg"].shape[0], generator, **affine))
    if jitter > 0:
        out["fg_bg"], out["bg"] = color_jitter(out["fg_bg"], out["bg"], generator, jitter)
    return out
