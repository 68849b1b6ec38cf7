"""The ``mini`` depth teacher's network: a small monocular depth U-Net and its shipped weights.

Shapes: :class:`MiniDepthNet` takes float (N, 3, H, W) RGB in 0-1, H and W multiples of 32, and returns
(N, 1, H, W) relative inverse depth in 0-1 (1 = nearest). :class:`MiniTeacher` wraps it behind the
teacher interface of :mod:`depthmask_utils.depth` (uint8 images in, float32 maps out).
:mod:`mini_teacher` trains and checks it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import TeacherUnavailable
from .models import IMAGENET_MEAN, IMAGENET_STD, Up, conv_block, coordinates, unet

WEIGHTS = Path(__file__).resolve().parent / "weights" / "mini_teacher.pt"
INPUT_SIZE = 128  # the side it was trained at; any multiple of 32 runs
ARCH = {"base": 16, "levels": 4, "unshuffle": 2}


class MiniDepthNet(nn.Module):
    """A small U-Net for monocular relative inverse depth.

    The image (normalised with ImageNet's statistics) and two coordinate channels - a floor is near
    at the bottom of the frame and far higher up - are folded 2 x 2 into channels (``unshuffle``), run
    through ``levels`` poolings, and the depth is upsampled bilinearly back to the input's size.
    """

    def __init__(self, base: int = 24, levels: int = 4, unshuffle: int = 2):
        super().__init__()
        self.unshuffle = int(unshuffle)
        chans = [base * 2 ** i for i in range(levels + 1)]
        self.down = nn.ModuleList([conv_block(5 * self.unshuffle ** 2, chans[0])] +
                                  [conv_block(chans[i], chans[i + 1]) for i in range(levels)])
        self.up = nn.ModuleList([Up(chans[i + 1], chans[i], chans[i], "nearest") for i in reversed(range(levels))])
        self.head = nn.Sequential(nn.Conv2d(chans[0], chans[0], 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(chans[0], 1, 1))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb: float (N, 3, H, W) in 0-1; returns (N, 1, H, W) inverse depth in 0-1 (1 = nearest)."""
        x = torch.cat([(rgb - self.mean) / self.std, coordinates(rgb)], 1)
        x = unet(self.down, self.up, F.pixel_unshuffle(x, self.unshuffle))
        depth = F.interpolate(self.head(x), size=rgb.shape[-2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(depth)


class MiniTeacher:
    """:class:`MiniDepthNet` behind the teacher interface of :mod:`depthmask_utils.depth`.

    ``predict`` takes uint8 (N, H, W, 3) RGB and returns float32 (N, H, W) relative inverse depth in
    0-1 (larger = nearer), resized back to (H, W).
    """

    exact = False
    parallel = False
    name = "mini"

    def __init__(self, model: MiniDepthNet, input_size: int = INPUT_SIZE, device: str = "cpu",
                 weights: str = "pretrained"):
        self.weights = weights
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.input_size = max(32, int(round(input_size / 32)) * 32)
        self.calls = 0

    def background(self, dataset: str | Path, bg: int, size: int) -> np.ndarray:
        """The teacher's inverse depth of prepared background ``bg``: float32 (size, size)."""
        from .dataset import load_prepared

        return self.predict(load_prepared(dataset, "bg", bg)[None])[0]

    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) RGB -> float32 (N, H, W) relative inverse depth in 0-1; adds N to ``calls``."""
        h, w = images.shape[1:3]
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        with torch.inference_mode():
            if (h, w) != (self.input_size, self.input_size):
                x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                                  antialias=True)
            out = self.model(x)
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        self.calls += len(images)
        return out.float().cpu().numpy()


def load_mini_teacher(weights: str = "pretrained", path: str | Path | None = None, device: str = "cpu",
                      input_size: int = INPUT_SIZE) -> MiniTeacher:
    """The ``mini`` teacher with its shipped weights (``weights="pretrained"``, from ``path`` if given),
    or the same network with random weights (``"random"``: for tests of the code path only)."""
    model = MiniDepthNet(**ARCH)
    if weights == "pretrained":
        source = Path(path) if path else WEIGHTS
        if source.is_dir():
            source = source / WEIGHTS.name
        if not source.exists():
            raise TeacherUnavailable(f"{source}: the mini teacher's weights are missing; they ship with the "
                                     "package (reinstall it) or are made by `python -m depthmask_utils.mini_teacher train`")
        try:
            state = torch.load(source, map_location="cpu", weights_only=True)
            model.load_state_dict({k: v.float() for k, v in state["model"].items()})
        except Exception as exc:  # truncated, another architecture, not a checkpoint at all
            raise TeacherUnavailable(f"{source}: not the mini teacher's weights ({type(exc).__name__}: "
                                     f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    elif weights == "random":
        torch.manual_seed(0)
    else:
        raise ValueError("weights must be 'pretrained' or 'random'")
    return MiniTeacher(model, input_size, device, weights)
