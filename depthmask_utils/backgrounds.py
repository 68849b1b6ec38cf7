"""Chapter 02: backgrounds - any image file in, a square RGB array of a fixed size out.

Photos arrive in every mode PIL knows (RGB, L, LA, P, CMYK, 16-bit I;16 / I, ...), sideways
with an EXIF orientation tag, in any aspect ratio and sometimes twice. :func:`to_rgb` converts any
mode to 8-bit RGB, :func:`center_crop_box` / :func:`square_resize` make it square, and
:func:`load_backgrounds` does it for a folder, dropping exact duplicates and reporting every file
it could not use.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import InputError
from .images import list_images, open_image


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    16-bit and 32-bit integer greyscale are rescaled from their full range (PIL's own ``convert``
    would clip them to 255); alpha is dropped (backgrounds are opaque); CMYK, P and L use PIL's
    conversions.
    """
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        gray = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        gray = ((a - lo) / (hi - lo or 1.0) * 255 + 0.5).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return im.convert("RGB")


def center_crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The largest centred square: (left, top, right, bottom)."""
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def square_resize(im: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square and resize to ``size`` x ``size`` (Lanczos, anti-aliased)."""
    box = center_crop_box(*im.size)
    return im.resize((size, size), Image.LANCZOS, box=box)


def pixel_digest(im: Image.Image) -> str:
    """SHA-1 of the decoded pixels and size: equal for exact duplicates whatever the file name."""
    h = hashlib.sha1(f"{im.mode}{im.size}".encode())
    h.update(im.tobytes())
    return h.hexdigest()


@dataclass
class BackgroundSet:
    """Prepared backgrounds (uint8 (size, size, 3)) and what happened to each file."""

    images: list[np.ndarray] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    original_sizes: list[tuple[int, int]] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"file", "reason"}


def prepare_background(path: str | Path, size: int) -> tuple[np.ndarray, Image.Image]:
    """One file -> (uint8 (size, size, 3), the RGB image before cropping). Raises InputError."""
    im = to_rgb(open_image(path))
    if min(im.size) < 8:
        raise InputError(f"{path}: too small ({im.size[0]}x{im.size[1]})")
    return np.asarray(square_resize(im, size)), im


def load_backgrounds(folder: str | Path, size: int) -> BackgroundSet:
    """Prepare every image in ``folder``; unusable files and exact duplicates are reported."""
    out, seen = BackgroundSet(), {}
    for path in list_images(folder):
        try:
            arr, rgb = prepare_background(path, size)
        except InputError as exc:
            out.skipped.append({"file": path.name, "reason": str(exc).split(": ", 1)[-1]})
            continue
        digest = pixel_digest(rgb)
        if digest in seen:
            out.skipped.append({"file": path.name, "reason": f"exact duplicate of {seen[digest]}"})
            continue
        seen[digest] = path.name
        out.images.append(arr)
        out.sources.append(path.name)
        out.original_sizes.append(rgb.size)
    return out
