"""Chapter 09: the model - (fg_bg, bg) in, (mask logits, depth) out.

Both models take two float tensors in 0-1, ``fg_bg`` and ``bg`` of shape (N, 3, H, W) (H and W
multiples of 32 for the ResNet encoder, of unshuffle * 2**levels for the small U-Net), normalise them with the
dataset's ``stats.json`` (kept as buffers, so a checkpoint carries its own normalisation), and
return a dict:

* ``mask``: (N, 1, H, W) logits - ``sigmoid`` gives the foreground probability;
* ``depth``: (N, 1, H, W) relative inverse depth in 0-1 (a sigmoid output, 1 = nearest).

``SmallUNet`` trains from scratch in minutes on a CPU; ``ResNetUNet`` uses a torchvision ResNet-18/34
encoder (ImageNet weights optional) with a 6-channel first convolution. ``MaskRefiner`` runs either
at a lower resolution and sharpens the mask at full resolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Normalise(nn.Module):
    """(x - mean) / std per channel for fg_bg and bg, from ``stats.json`` (ImageNet's if none)."""

    def __init__(self, stats: dict | None = None):
        super().__init__()
        for cat in ("fg_bg", "bg"):
            mean = stats[cat]["mean"] if stats else IMAGENET_MEAN
            std = stats[cat]["std"] if stats else IMAGENET_STD
            self.register_buffer(f"{cat}_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer(f"{cat}_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, fg_bg: torch.Tensor, bg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fg_bg, bg: float (N, 3, H, W) in 0..1; returns both normalised per channel, same shape."""
        return (fg_bg - self.fg_bg_mean) / self.fg_bg_std, (bg - self.bg_mean) / self.bg_std


def difference(fg_bg: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    """|fg_bg - bg| x 10, (N, 3, H, W): where the person is. The scale lifts a person (~0.3) well
    above JPEG noise (~0.01) next to normalised inputs of unit spread."""
    return (fg_bg - bg).abs() * 10


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 convolutions with batch norm and ReLU: the U-Net's unit."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


UPSAMPLE_MODES = ("bilinear", "nearest")


class Up(nn.Module):
    """Upsample x2, concatenate the skip connection, conv block.

    ``mode``: ``"bilinear"`` or ``"nearest"``. The conv block after it smooths either way; nearest
    is cheaper to train on a CPU, where bilinear's backward pass is a slow kernel (benchmarks/train.py).
    """

    def __init__(self, cin: int, cskip: int, cout: int, mode: str = "bilinear"):
        super().__init__()
        if mode not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {', '.join(UPSAMPLE_MODES)}, not {mode!r}")
        self.mode = mode
        self.block = conv_block(cin + cskip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """x: (N, cin, h, w), skip: (N, cskip, H, W); returns (N, cout, H, W).

        ``x`` is resized to the skip's (H, W) before the concatenation.
        """
        corners = {} if self.mode == "nearest" else {"align_corners": False}
        x = F.interpolate(x, size=skip.shape[-2:], mode=self.mode, **corners)
        return self.block(torch.cat([x, skip], 1))


def unet(down: nn.ModuleList, up: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    """The U-Net pass: ``down[0]`` on ``x``, then each further block after a 2x2 max-pool, keeping
    every level's output as a skip; then each ``up`` block (:class:`Up`) from the deepest level back
    to the first. Returns the features at ``x``'s resolution, (N, C of ``up[-1]``, H, W)."""
    skips = []
    for i, block in enumerate(down):
        x = block(x if i == 0 else F.max_pool2d(x, 2))
        skips.append(x)
    for block, skip in zip(up, reversed(skips[:-1])):
        x = block(x, skip)
    return x


def coordinates(like: torch.Tensor) -> torch.Tensor:
    """Two channels, y then x, running from -1 to 1 across the frame: (N, 2, H, W) in ``like``'s dtype
    and device, for a (N, C, H, W) ``like``. They tell a convolution where in the picture it is."""
    n, _, h, w = like.shape
    ys = torch.linspace(-1, 1, h, device=like.device, dtype=like.dtype).view(1, 1, h, 1).expand(n, 1, h, w)
    xs = torch.linspace(-1, 1, w, device=like.device, dtype=like.dtype).view(1, 1, 1, w).expand(n, 1, h, w)
    return torch.cat([ys, xs], 1)


class Heads(nn.Module):
    """Two small heads on shared decoder features: mask logits and sigmoid depth.

    ``unshuffle`` f > 1: the features are at 1/f of the output's resolution. The mask head then
    predicts f x f sub-pixels per feature pixel, put in place by ``pixel_shuffle`` (a sharp outline
    at full resolution); depth, smooth where it matters, is upsampled bilinearly.
    """

    def __init__(self, cin: int, unshuffle: int = 1):
        super().__init__()
        self.f = int(unshuffle)
        self.mask = nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(cin, self.f * self.f, 1))
        self.depth = nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(cin, 1, 1))
        # Start the mask at the prior - a person covers ~5 % of a composite - not at 50 %: otherwise the
        # first steps of BCE drive every logit far negative and some runs never climb back (RetinaNet's init).
        nn.init.constant_(self.mask[-1].bias, math.log(0.05 / 0.95))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: features (N, cin, h, w); returns dict with ``mask`` logits (N, 1, f h, f w) and ``depth``
        (N, 1, f h, f w) in 0..1 (sigmoid).
        """
        mask, depth = self.mask(x), self.depth(x)
        if self.f > 1:
            mask = F.pixel_shuffle(mask, self.f)
            depth = F.interpolate(depth, scale_factor=self.f, mode="bilinear", align_corners=False)
        return {"mask": mask, "depth": torch.sigmoid(depth)}


def refinement_head(cin: int, channels: int) -> nn.Sequential:
    """Two 3x3 conv-BN-ReLU layers of ``channels`` and a 1x1 convolution to one channel: a correction
    to mask logits at full resolution, from ``cin`` channels of full-resolution inputs and the logits.
    The last layer starts at zero, so an untrained head leaves the logits as they are."""
    head = nn.Sequential(
        nn.Conv2d(cin, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
        nn.Conv2d(channels, 1, 1))
    nn.init.zeros_(head[-1].weight)
    nn.init.zeros_(head[-1].bias)
    return head


class SmallUNet(nn.Module):
    """A from-scratch U-Net on fg_bg, bg and their absolute difference (9 channels after the stem).

    The difference image is computed inside the model - the inputs stay (fg_bg, bg) - because it
    is what makes the mask easy: wherever the composite differs from its background, there is the
    person. ``levels`` poolings of 2.

    ``unshuffle`` f > 1 runs the U-Net at 1/f of the input's resolution without throwing pixels
    away: ``pixel_unshuffle`` folds each f x f block of the stem input into f*f times the channels
    (space-to-depth), and the mask head unfolds its output back. It costs a little more than the
    same U-Net on the shrunk input (the first convolution sees four times the channels; the stem
    and the heads work at full size), yet it sees every input pixel and draws the outline at full
    resolution. On the sample data the true masks, shrunk to 64 px and enlarged back, score only
    IoU 0.92-0.94 (chapter 09): a small person's outline is a few pixels wide at 64 px.
    H and W must be multiples of ``f * 2**levels``. ``upsample``: the decoder's resize (:class:`Up`).

    ``refine`` > 0 adds a :func:`refinement_head` of that many channels at the input's resolution: it
    corrects the mask logits from the stem input (normalised images, difference, coordinates) and the
    logits themselves, pixel by pixel, where an unshuffled U-Net draws each 2 x 2 block from one
    feature vector.
    """

    def __init__(self, base: int = 24, levels: int = 4, stats: dict | None = None, difference: bool = True,
                 coords: bool = True, unshuffle: int = 1, upsample: str = "bilinear", refine: int = 0):
        super().__init__()
        self.norm, self.difference, self.coords, self.unshuffle = Normalise(stats), difference, coords, int(unshuffle)
        chans = [base * 2 ** i for i in range(levels + 1)]
        full = (9 if difference else 6) + (2 if coords else 0)  # stem_input's channels, before unshuffle
        self.down = nn.ModuleList([conv_block(full * self.unshuffle ** 2, chans[0])] +
                                  [conv_block(chans[i], chans[i + 1]) for i in range(levels)])
        self.up = nn.ModuleList([Up(chans[i + 1], chans[i], chans[i], upsample) for i in reversed(range(levels))])
        self.heads = Heads(chans[0], self.unshuffle)
        self.refine = refinement_head(full + 1, refine) if refine else None

    def stem_input(self, fg_bg: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
        """What the first convolution sees, before any unshuffle: normalised fg_bg and bg, the scaled
        difference, coordinates - (N, 11, H, W) with both options on."""
        a, b = self.norm(fg_bg, bg)
        parts = [a, b] + ([difference(fg_bg, bg)] if self.difference else [])
        if self.coords:  # where a pixel is in the frame: the floor is near at the bottom, far higher up
            parts.append(coordinates(a))
        return torch.cat(parts, 1)

    def forward(self, fg_bg: torch.Tensor, bg: torch.Tensor) -> dict[str, torch.Tensor]:
        """fg_bg, bg: float (N, 3, H, W) in 0..1, H and W multiples of ``unshuffle * 2**levels``;
        returns dict with ``mask`` logits (N, 1, H, W) and ``depth`` (N, 1, H, W) in 0..1 (1 = nearest).
        """
        full = self.stem_input(fg_bg, bg)
        x = F.pixel_unshuffle(full, self.unshuffle) if self.unshuffle > 1 else full
        out = self.heads(unet(self.down, self.up, x))
        if self.refine is not None:
            out["mask"] = out["mask"] + self.refine(torch.cat([full, out["mask"]], 1))
        return out


def six_channel_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """A copy of an RGB first convolution that takes fg_bg ‖ bg (6 channels).

    Both halves start from the RGB filters, each scaled by 1/2: on an image pair that agrees
    (fg_bg == bg, the background everywhere but the person) the output equals the pretrained
    one, so ImageNet features survive the change of input.
    """
    new = nn.Conv2d(6, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None)
    with torch.no_grad():
        new.weight.copy_(torch.cat([conv.weight, conv.weight], 1) / 2)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


class ResNetUNet(nn.Module):
    """A torchvision ResNet-18/34 encoder on fg_bg ‖ bg with a U-Net decoder and two heads.

    ``pretrained=True`` loads torchvision's ImageNet weights (a download: Colab, not tests);
    ``False`` builds the same architecture with random weights.
    """

    def __init__(self, encoder: str = "resnet18", pretrained: bool = False, stats: dict | None = None,
                 decoder: tuple[int, ...] = (256, 128, 64, 32, 16)):
        super().__init__()
        import torchvision

        weights = {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights"}
        if encoder not in weights:
            raise ValueError(f"encoder must be one of {', '.join(weights)}")
        w = getattr(torchvision.models, weights[encoder]).IMAGENET1K_V1 if pretrained else None
        try:
            net = getattr(torchvision.models, encoder)(weights=w)
        except Exception as exc:  # no network, a proxy, a truncated file: all end here, in one line
            from .errors import WeightsUnavailable

            raise WeightsUnavailable(
                f"{w.url}: cannot fetch the ImageNet weights of {encoder} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); train from random weights instead "
                "(pretrained = 'no' in chapter 11, or train --no-pretrained), or put that file into "
                f"{torch.hub.get_dir()}/checkpoints/") from None
        self.norm = Normalise(stats)
        self.stem = nn.Sequential(six_channel_conv(net.conv1), net.bn1, net.relu)  # /2, 64
        self.pool = net.maxpool
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])  # /4 64, /8 128, /16 256, /32 512
        skips = [512, 256, 128, 64, 64]
        self.up = nn.ModuleList()
        cin = skips[0]
        for cskip, cout in zip(skips[1:] + [6], decoder):
            self.up.append(Up(cin, cskip, cout))
            cin = cout
        self.heads = Heads(decoder[-1])

    def forward(self, fg_bg: torch.Tensor, bg: torch.Tensor) -> dict[str, torch.Tensor]:
        """fg_bg, bg: float (N, 3, H, W) in 0..1, H and W multiples of 32; returns dict with
        ``mask`` logits (N, 1, H, W) and ``depth`` (N, 1, H, W) in 0..1 (1 = nearest).
        """
        a, b = self.norm(fg_bg, bg)
        x0 = torch.cat([a, b], 1)
        x1 = self.stem(x0)
        feats = [x0, x1]
        x = self.pool(x1)
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        # feats: input, /2, /4, /8, /16, /32 -> decode from /32 using /16, /8, /4, /2, input as skips
        x = feats[-1]
        for up, skip in zip(self.up, reversed(feats[:-1])):
            x = up(x, skip)
        return self.heads(x)


class MaskRefiner(nn.Module):
    """Runs ``base`` at ``work`` x ``work`` px and refines its mask at the input's resolution.

    The base model sees both inputs shrunk to ``work`` px (an area average when the input is a
    multiple of it). Its mask logits are upsampled bilinearly and corrected by a small head at full
    resolution on the normalised fg_bg and bg, their scaled difference and the upsampled logits -
    the idea of Background Matting v2's refiner, which also takes an image and its background. At
    low resolution the outline of a small person is a few pixels wide; the difference image still
    has it sharp at full resolution. The correction starts at zero, so an untrained refiner equals
    the base model upsampled. Depth is upsampled bilinearly (it is smooth where it matters).

    Inputs and outputs as the base model's, at any H, W: ``mask`` logits and ``depth`` (N, 1, H, W).
    """

    def __init__(self, base: nn.Module, work: int = 64, channels: int = 8):
        super().__init__()
        self.base, self.work = base, int(work)
        self.refine = refinement_head(10, channels)

    def shrink(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, work, work); an exact box average when H = W = k * work."""
        h, w = x.shape[-2:]
        if h == w and h % self.work == 0:
            return x if h == self.work else F.avg_pool2d(x, h // self.work)
        return F.interpolate(x, size=(self.work, self.work), mode="bilinear", align_corners=False, antialias=True)

    def forward(self, fg_bg: torch.Tensor, bg: torch.Tensor) -> dict[str, torch.Tensor]:
        """fg_bg, bg: float (N, 3, H, W) in 0..1; returns ``mask`` logits and ``depth`` (N, 1, H, W)."""
        size = fg_bg.shape[-2:]
        out = self.base(self.shrink(fg_bg), self.shrink(bg))
        up = F.interpolate(out["mask"], size=size, mode="bilinear", align_corners=False)
        a, b = self.base.norm(fg_bg, bg)
        mask = up + self.refine(torch.cat([a, b, difference(fg_bg, bg), up], 1))
        return {"mask": mask, "depth": F.interpolate(out["depth"], size=size, mode="bilinear", align_corners=False)}


MODELS = ("small-unet", "resnet18", "resnet34")


def build_model(name: str = "small-unet", stats: dict | None = None, pretrained: bool = False,
                refine_from: int | None = None, **kwargs) -> nn.Module:
    """A model by name: ``small-unet`` (from scratch), ``resnet18`` or ``resnet34`` (U-Net decoder).

    ``refine_from``: run that model at this many pixels and refine its mask at the input's size
    (:class:`MaskRefiner`); None runs it at the input's size.
    """
    if name == "small-unet":
        model = SmallUNet(stats=stats, **kwargs)
    elif name in ("resnet18", "resnet34"):
        model = ResNetUNet(name, pretrained=pretrained, stats=stats, **kwargs)
    else:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MaskRefiner(model, refine_from) if refine_from else model


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def receptive_field(model: nn.Module, size: int = 128, output: str = "depth") -> int:
    """Side in pixels of the input region that can change the centre output pixel, measured.

    Backpropagates from the centre pixel of ``output`` and measures how far the non-zero input
    gradient reaches - the effective extent, not a formula (batch norm in eval mode).
    """
    was = model.training
    model.eval()
    x = torch.rand(1, 3, size, size, requires_grad=True)
    bg = torch.rand(1, 3, size, size, requires_grad=True)
    out = model(x, bg)[output]
    out[0, 0, size // 2, size // 2].backward()
    g = (x.grad.abs().sum((0, 1)) + bg.grad.abs().sum((0, 1))) > 0
    model.train(was)
    if not g.any():  # every ReLU path to the centre pixel is off for this input (a tiny random net can do that)
        raise ValueError(f"no input pixel changes the centre {output} pixel of this model on this input; "
                         "try another seed or a trained model")
    rows, cols = torch.nonzero(g.any(1)).flatten(), torch.nonzero(g.any(0)).flatten()
    return int(max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1))
