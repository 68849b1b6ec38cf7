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
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image

from .errors import DatasetError

# GREY_PNG_DEFLATE names the deflate that writes the grey PNGs: another one writes other bytes for
# the same pixels, so generate records it with its parameters and refuses to resume a dataset begun
# by another (it would not be byte-identical).
try:  # Intel's ISA-L: deflate, inflate and CRC-32 several times faster than zlib, same formats
    from isal.isal_zlib import compress as _isal_compress
    from isal.isal_zlib import crc32 as _crc32
    from isal.isal_zlib import decompress as _inflate
    from isal.isal_zlib import error as _isal_error

    def _deflate(data) -> bytes:
        # Level 0 (ISA-L's fastest; still Huffman + matches, unlike zlib's 0) and not level 1: level 1's
        # output was seen to depend on where the process's memory lies (6 of 30 processes wrote other
        # bytes for the same pixels; none with address randomisation off), which breaks byte-identical
        # resume. Why is not established; level 0 needs none of the extra hash-table buffer levels 1-3
        # allocate, and 90 of 90 processes agreed on it. test_storage checks across fresh processes.
        return _isal_compress(data, 0)

    GREY_PNG_DEFLATE = "isal-0"
except ImportError:  # pragma: no cover - isal is in requirements.txt
    _crc32, _inflate, _isal_error = zlib.crc32, zlib.decompress, zlib.error

    def _deflate(data) -> bytes:
        return zlib.compress(data, 1)

    GREY_PNG_DEFLATE = "zlib-1"

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
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


JPEG_CHROMA = ("444", "420")  # full-resolution colour, or colour at half width and height (OpenCV's default)


def encode_jpeg_bgr(bgr: np.ndarray, quality: int, chroma: str = "444") -> bytes:
    """uint8 (H, W, 3) in BGR order -> JPEG bytes via OpenCV (libjpeg-turbo, ~1.5x PIL's speed).

    ``chroma="444"`` keeps colour at full resolution. OpenCV's default, ``"420"``, stores colour at
    half width and height, which smears a person's outline over the background by a pixel: on the
    sample composites that alone takes a per-pixel reading of the mask from 0.976 to 0.950 IoU
    (``benchmarks/mask_ceiling.py``). 4:4:4 files are about a sixth larger (5.8 against 4.9 KiB per
    sample composite).
    """
    import cv2

    if chroma not in JPEG_CHROMA:
        raise ValueError(f"chroma must be one of {', '.join(JPEG_CHROMA)}, got {chroma!r}")
    factor = cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444 if chroma == "444" else cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_SAMPLING_FACTOR, factor])
    if not ok:
        raise DatasetError("OpenCV could not encode a JPEG")
    return buf.tobytes()


def _png_chunk(kind: bytes, data) -> bytes:
    return struct.pack(">I", len(data)) + kind + bytes(data) + struct.pack(">I", _crc32(data, _crc32(kind)))


@lru_cache(maxsize=64)
def _png_gray_header(w: int, h: int) -> bytes:
    return PNG_SIGNATURE + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))


_PNG_END = _png_chunk(b"IEND", b"")


def encode_png(img: np.ndarray) -> bytes:
    """uint8 (H, W) or (H, W, 3|4) RGB(A) -> lossless PNG bytes.

    Single-channel images (masks, depth) - millions of them - are written here directly: no row
    filter, and the pixel rows deflated by ISA-L at its level 0 (~8x faster than zlib's level 1,
    about 25 % larger; zlib's level 1 where ISA-L is missing, see ``GREY_PNG_DEFLATE``), which
    :func:`decode_png_gray` reads back with one inflate. Colour images (a few hundred prepared
    inputs) use PIL.
    """
    if img.ndim == 2:
        h, w = img.shape
        rows = np.empty((h, w + 1), np.uint8)
        rows[:, 0] = 0  # filter type 0 (none) for every row
        rows[:, 1:] = img
        return encode_png_rows(rows)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)  # level 6: 2.5x the time, 20 % smaller
    return buf.getvalue()


def encode_png_rows(rows: np.ndarray) -> bytes:
    """Greyscale PNG bytes from uint8 (H, W + 1) ``rows``: each row a 0 (the "none" filter) and then
    its W pixels, the layout PNG deflates. :func:`encode_png` of ``rows[:, 1:]``, without its copy.

    For writers that keep one such buffer and paste each mask into it (the generator).
    """
    h, w = rows.shape[0], rows.shape[1] - 1
    return _png_gray_header(w, h) + _png_chunk(b"IDAT", _deflate(rows)) + _PNG_END


def decode_png_gray(data: bytes) -> np.ndarray | None:
    """Fast path for the greyscale PNGs :func:`encode_png` writes: uint8 (H, W), or None.

    Those files use no row filter, so the pixels are the zlib-inflated IDAT stream minus one
    filter byte per row - one ``zlib.decompress``, ~4x faster than a general decoder. Anything
    else (another colour type, bit depth, interlacing or row filter) returns None: use PIL.
    """
    if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
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


# The zip records write_shard writes, laid out as zipfile lays them out for a stored member it
# writes itself (version 2.0, made on Unix, no flags, no extra fields), so the bytes are the same.
_ZIP_LOCAL = struct.Struct("<4s2B4HL2L2H")
_ZIP_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_ZIP_END = struct.Struct("<4s4H2LH")
_DOS_TIME = 0
_DOS_DATE = (ZIP_EPOCH[0] - 1980) << 9 | ZIP_EPOCH[1] << 5 | ZIP_EPOCH[2]
_ZIP_MODE = 0o644 << 16  # rw-r--r--, as shards have always been written


def write_shard(path: str | Path, members: Iterable[tuple[str, bytes]]) -> int:
    """Write a zip shard atomically from an iterable of (member name, bytes); returns the count.

    Members are stored, not deflated (JPEG and PNG are already compressed), with fixed timestamps
    so that the same members give the same bytes. ``members`` is consumed lazily: memory stays flat
    however large the shard.

    The records are packed here rather than by :mod:`zipfile`, whose per-member bookkeeping
    (``ZipInfo``, a write handle, a seek back to patch the header) costs ~45 us - as much as
    encoding a mask. The bytes are identical to ``zipfile.ZipFile.writestr``'s (tested); shards
    stay below 4 GiB and 65,535 members, the limits of a zip without ZIP64 (checked).
    """
    central, offset = [], 0
    with atomic_path(path) as tmp, open(tmp, "wb", buffering=1 << 20) as f:
        for name, data in members:
            if offset + len(data) >= 1 << 32 or len(central) >= 0xFFFF - 1:
                raise DatasetError(f"{path}: over {len(central)} members, {offset} bytes: too large for one shard "
                                   "(4 GiB, 65,535 members, the limits of a zip without ZIP64); use fewer "
                                   "placements per background")
            raw = name.encode("ascii")  # member names are ours: ASCII, so no UTF-8 flag
            crc = _crc32(data)
            f.write(_ZIP_LOCAL.pack(b"PK\x03\x04", 20, 0, 0, 0, _DOS_TIME, _DOS_DATE, crc, len(data),
                                    len(data), len(raw), 0) + raw)
            f.write(data)
            central.append(_ZIP_CENTRAL.pack(b"PK\x01\x02", 20, 3, 20, 0, 0, 0, _DOS_TIME, _DOS_DATE, crc,
                                             len(data), len(data), len(raw), 0, 0, 0, 0, _ZIP_MODE, offset) + raw)
            offset += _ZIP_LOCAL.size + len(raw) + len(data)
        directory = b"".join(central)
        if offset + len(directory) >= 1 << 32:
            raise DatasetError(f"{path}: {offset + len(directory)} bytes: too large for one shard (4 GiB, "
                               "the limit of a zip without ZIP64); use fewer placements per background")
        f.write(directory)
        f.write(_ZIP_END.pack(b"PK\x05\x06", 0, 0, len(central), len(central), len(directory), offset, 0))
    return len(central)


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


def pack_folder(folder: str | Path, out: str | Path) -> dict:
    """One zip of everything in ``folder`` (for handing a dataset in), written atomically.

    Members are stored, not deflated: the composites are JPEG and the shards already zips, so
    compression would cost minutes and save almost nothing. Returns ``{"path", "files", "bytes"}``.
    """
    folder, out = Path(folder), Path(out)
    read_json(folder / "dataset.json")  # a finished dataset only: a typo or an unfinished folder stops here
    files = [f for f in sorted(folder.rglob("*")) if f.is_file() and ".tmp-" not in f.name  # no half-written file
             and f.resolve() != out.resolve()]
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for f in files:
            zf.write(f, f"{folder.name}/{f.relative_to(folder)}")
    return {"path": out, "files": len(files), "bytes": out.stat().st_size}
