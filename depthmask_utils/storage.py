"""Storage: atomic files, zip shards, the manifest and dataset.json.

A dataset is a folder (see ``book/dataset_format.md``). The rules that make it safe to kill a run
at any moment live here:

* every file is written under a temporary name in the same folder and renamed when complete, so a
  file with its final name is always whole;
* shard members get a fixed timestamp, so the same inputs give byte-identical shards;
* ``dataset.json`` is written last: a dataset without it is unfinished.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import struct
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image

from .errors import DatasetError

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: reproducible bytes
MANIFEST_FIELDS = ["id", "bg", "fg", "flip", "k", "x", "y", "w", "h", "shard"]
PLACEMENT_FIELDS = ["placement", "foot_x", "foot_y"]  # floor or uniform; the foot point (bottom-centre pixel)


def shard_name(bg: int) -> str:
    """File name of background ``bg``'s shard, e.g. ``bg_007.zip``."""
    return f"bg_{bg:03d}.zip"


def composite_id(fg: int, bg: int, flip: int, k: int) -> str:
    """Id of the composite of ``fg`` on ``bg``, ``flip`` and placement ``k``, e.g. ``fg_bg_012_007_1_03``."""
    return f"fg_bg_{fg:03d}_{bg:03d}_{flip}_{k:02d}"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A full disk (ENOSPC) becomes a :class:`DatasetError` naming the file; the temporary file is
    removed either way, so nothing half-written carries the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DatasetError(f"{path}: disk full while writing ({exc.strerror}); nothing was left "
                               "half-written - free some space and re-run, finished files are kept") from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_stale_temporaries(folder: str | Path) -> int:
    """Delete temporary files a killed run left in ``folder`` (their names never look finished)."""
    n = 0
    for p in Path(folder).glob(".*.tmp-*"):
        p.unlink(missing_ok=True)
        n += 1
    return n


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary name in the same folder, then a rename, so
    ``path`` holds either its old content or all of ``data``, never part.
    """
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | Path, obj) -> None:
    """Write ``obj`` as indented JSON with a final newline, atomically like :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: str | Path) -> dict:
    """Parse the JSON file ``path``; a missing file or invalid JSON becomes a DatasetError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None


def encode_jpeg_bgr(bgr: np.ndarray, quality: int) -> bytes:
    """uint8 (H, W, 3) in BGR order -> JPEG bytes via OpenCV (libjpeg-turbo, ~1.5x PIL's speed)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise DatasetError("OpenCV could not encode a JPEG")
    return buf.tobytes()


def encode_png(img: np.ndarray) -> bytes:
    """uint8 (H, W) or (H, W, 3|4) RGB(A) -> lossless PNG bytes.

    Single-channel images (masks, depth) - millions of them - go through OpenCV with no row
    filter and zlib level 1 with run-length strategy: ~5x faster than PIL's adaptive filtering and
    smaller for masks, which are long runs of 0 and 255. Colour images (a few hundred prepared
    inputs) use PIL.
    """
    if img.ndim == 2:
        import cv2

        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER,
                                             cv2.IMWRITE_PNG_FILTER_NONE, cv2.IMWRITE_PNG_STRATEGY,
                                             cv2.IMWRITE_PNG_STRATEGY_RLE])
        if not ok:
            raise DatasetError("OpenCV could not encode a PNG")
        return buf.tobytes()
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


try:  # Intel's ISA-L inflates ~1.6x faster than zlib; same format, so zlib is the fallback
    from isal.isal_zlib import decompress as _inflate
    from isal.isal_zlib import error as _isal_error
except ImportError:  # pragma: no cover - isal is in requirements.txt
    _inflate, _isal_error = zlib.decompress, zlib.error


def decode_png_gray(data: bytes) -> np.ndarray | None:
    """Fast path for the greyscale PNGs :func:`encode_png` writes: uint8 (H, W), or None.

    Those files use no row filter, so the pixels are the zlib-inflated IDAT stream minus one
    filter byte per row - one ``zlib.decompress``, ~4x faster than a general decoder. Anything
    else (another colour type, bit depth, interlacing or row filter) returns None: use PIL.
    """
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if depth != 8 or colour != 0 or interlace != 0:
        return None
    pos, idat = 8, []
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat.append(data[pos + 8:pos + 8 + length])
        elif kind == b"IEND":
            break
        pos += 12 + length
    try:
        raw = np.frombuffer(_inflate(b"".join(idat)), np.uint8)
    except (zlib.error, _isal_error):
        return None
    if raw.size != h * (w + 1):
        return None
    rows = raw.reshape(h, w + 1)
    if rows[:, 0].any():  # some row uses a filter: not ours
        return None
    return rows[:, 1:]


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode image bytes to a uint8 array; a problem becomes a DatasetError naming ``name``."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return np.asarray(im)
    except Exception as exc:  # PIL raises several unrelated types for bad data
        raise DatasetError(f"{name}: cannot decode ({exc})") from None


def write_shard(path: str | Path, members: Iterable[tuple[str, bytes]]) -> int:
    """Write a zip shard atomically from an iterable of (member name, bytes); returns the count.

    Members are stored, not deflated (JPEG and PNG are already compressed), with fixed timestamps
    so that the same members give the same bytes. ``members`` is consumed lazily: memory stays flat
    however large the shard.
    """
    count = 0
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
            count += 1
    return count


def open_shard(path: str | Path) -> zipfile.ZipFile:
    """Open a shard for reading; a missing or corrupt shard becomes a DatasetError naming it."""
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise DatasetError(f"{path}: shard missing") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{path}: not a readable zip ({exc})") from None


class ShardReader:
    """Random access to the stored members of a shard with one ``os.pread`` per member.

    The offsets come from the zip's central directory, read once. ``pread`` takes an explicit
    offset, so a handle shared by forked DataLoader workers is still safe, and there is none of
    ``ZipFile.read``'s per-call header parsing: ~10 us per member instead of ~25. Deflated members
    (not written by this package) fall back to :mod:`zipfile`.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with open_shard(self.path) as zf:
            self._index = {i.filename: (i.header_offset, i.compress_size, len(i.filename.encode()),
                                        i.compress_type == zipfile.ZIP_STORED) for i in zf.infolist()}
        self._fd = os.open(self.path, os.O_RDONLY)
        self._zf = None

    def namelist(self) -> list[str]:
        """Member names, in the order of the zip's central directory."""
        return list(self._index)

    def read(self, name: str) -> bytes:
        """The bytes of member ``name``; KeyError if the shard has no such member."""
        offset, size, n_name, stored = self._index[name]
        if not stored:
            self._zf = self._zf or zipfile.ZipFile(self.path)
            return self._zf.read(name)
        buf = os.pread(self._fd, 30 + n_name + size, offset)
        if buf[:4] != b"PK\x03\x04":
            raise DatasetError(f"{self.path}: member {name}: bad local header (corrupt shard?)")
        n_extra = struct.unpack("<H", buf[28:30])[0]
        if n_extra:
            return os.pread(self._fd, size, offset + 30 + n_name + n_extra)
        data = buf[30 + n_name:]
        if len(data) != size:
            raise DatasetError(f"{self.path}: member {name} is truncated")
        return data

    def close(self) -> None:
        """Close the file descriptor (and the zipfile fallback, if one was opened)."""
        os.close(self._fd)
        if self._zf is not None:
            self._zf.close()

    def __enter__(self) -> "ShardReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_manifest(path: str | Path, rows: list[dict], fields: list[str] | None = None) -> None:
    """Write ``rows`` as CSV with columns ``fields`` (default MANIFEST_FIELDS; other keys are dropped),
    atomically: a temporary name, then a rename.
    """
    fields = fields or MANIFEST_FIELDS
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def rows_by_shard(rows: list[dict]) -> dict[str, list[dict]]:
    """Manifest rows grouped by their ``shard`` column, in manifest order."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["shard"], []).append(r)
    return groups


def read_manifest(path: str | Path) -> list[dict]:
    """Rows of ``manifest.csv`` as dicts of strings (use pandas in notebooks for analysis)."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing - was the dataset generated (python -m depthmask_utils generate)?") from None
    missing = [f for f in MANIFEST_FIELDS if rows and f not in rows[0]]
    if missing:
        raise DatasetError(f"{path}: columns missing: {', '.join(missing)}")
    return rows
