"""Opening image files safely: every failure becomes an InputError naming the file."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name. Raises InputError if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.name.startswith("."))
    if not files:
        raise InputError(f"{folder}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image, applying its EXIF orientation.

    Truncated files, non-images with an image extension and decoder errors all raise InputError
    with the path and the problem.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
            im.load()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image (the file's contents are not in any image format)") from None
    except OSError as exc:
        raise InputError(f"{path}: corrupt or truncated image ({exc})") from None
    except Exception as exc:  # decoders raise assorted types (SyntaxError, ValueError, ...)
        raise InputError(f"{path}: cannot decode ({type(exc).__name__}: {exc})") from None
    try:
        return ImageOps.exif_transpose(im)
    except Exception as exc:
        raise InputError(f"{path}: bad EXIF orientation ({exc})") from None
