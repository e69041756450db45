"""Reader (and a small writer) for the IDX format of MNIST and Fashion-MNIST.

Files may be gzip-compressed or raw; compression is detected from the content, not the name.
Every problem is a DataError naming the file, what is wrong with it and how to fix it.

    magic 0x00000803: images, uint8, dims (N, rows, cols)
    magic 0x00000801: labels, uint8, dims (N,)
"""
from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from .base import DataError

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
_UINT8 = 0x08
_GZIP_MAGIC = b"\x1f\x8b"

DEFAULT_FIX = "delete it and download it again"


def read_bytes(path, fix: Optional[str] = None) -> bytes:
    """The (decompressed) content of ``path``."""
    fix = fix or DEFAULT_FIX
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path} does not exist: check the path, or {fix}") from None
    except OSError as e:
        raise DataError(f"cannot read {path} ({e.strerror or e}): check its permissions, "
                        f"or {fix}") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        reason = "the gzip stream is truncated"
    except (OSError, zlib.error) as e:
        reason = f"bad gzip data: {e}"
    raise DataError(f"{path} is corrupt ({reason}): {fix}")


def parse_idx(data: bytes, path, expect_magic: Optional[int] = None,
              fix: Optional[str] = None) -> np.ndarray:
    """Parse uint8 IDX content into an array of the dims the header gives (read-only view)."""
    fix = fix or DEFAULT_FIX
    kind = {IMAGES_MAGIC: "an IDX images file", LABELS_MAGIC: "an IDX labels file"}.get(
        expect_magic, "an IDX file")
    if len(data) < 4:
        raise DataError(f"{path} is corrupt (only {len(data)} bytes, too short to be {kind}): "
                        f"{fix}")
    magic = int.from_bytes(data[:4], "big")
    if data[:2] != b"\x00\x00":
        raise DataError(f"{path} is not {kind} (magic number 0x{magic:08X}, should start "
                        f"with two zero bytes): check that it is the right file, or {fix}")
    if data[2] != _UINT8:
        raise DataError(f"{path} holds IDX data of type 0x{data[2]:02X}, not unsigned bytes "
                        f"(0x08): use the MNIST-format uint8 files, or {fix}")
    if expect_magic is not None and magic != expect_magic:
        raise DataError(f"{path} is not {kind} (magic number 0x{magic:08X}, expected "
                        f"0x{expect_magic:08X}): check that it is the right file, or {fix}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{path} is corrupt (header cut short: {ndim} dims need {header} "
                        f"bytes, the file has {len(data)}): {fix}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = math.prod(dims)
    actual = len(data) - header
    if actual != expected:
        shape = "x".join(str(d) for d in dims)
        what = "truncated" if actual < expected else "has trailing bytes"
        raise DataError(f"{path} is corrupt ({what}: header says {shape} = {expected} bytes "
                        f"of data, the file has {actual}): {fix}")
    return np.frombuffer(data, dtype=np.uint8, count=expected, offset=header).reshape(dims)


def read_idx(path, expect_magic: Optional[int] = None, fix: Optional[str] = None) -> np.ndarray:
    """Read an IDX file (gz or raw) into a writable uint8 array."""
    return parse_idx(read_bytes(path, fix), path, expect_magic, fix).copy()


def read_idx_images(path, fix: Optional[str] = None) -> np.ndarray:
    """uint8 [N, rows, cols] from an IDX images file."""
    arr = read_idx(path, IMAGES_MAGIC, fix)
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise DataError(f"{path} is corrupt (an images file must have dims N x rows x cols, "
                        f"all non-zero; it has {'x'.join(map(str, arr.shape))}): "
                        f"{fix or DEFAULT_FIX}")
    return arr


def read_idx_labels(path, num_classes: Optional[int] = 10,
                    fix: Optional[str] = None) -> np.ndarray:
    """uint8 [N] from an IDX labels file; values checked to lie in 0..num_classes-1."""
    arr = read_idx(path, LABELS_MAGIC, fix)
    if arr.ndim != 1 or arr.shape[0] == 0:
        raise DataError(f"{path} is corrupt (a labels file must have one non-zero dim; it has "
                        f"{'x'.join(map(str, arr.shape)) or 'none'}): {fix or DEFAULT_FIX}")
    if num_classes is not None:
        bad = np.flatnonzero(arr >= num_classes)
        if bad.size:
            raise DataError(f"{path} is corrupt (label {int(arr[bad[0]])} at index {int(bad[0])}"
                            f" is outside 0..{num_classes - 1}; {bad.size} such labels): "
                            f"{fix or DEFAULT_FIX}")
    return arr


def read_idx_pair(images_path, labels_path, num_classes: Optional[int] = 10,
                  fix: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Images and labels that belong together (same count)."""
    images = read_idx_images(images_path, fix)
    labels = read_idx_labels(labels_path, num_classes, fix)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{images_path} has {images.shape[0]} images but {labels_path} has "
                        f"{labels.shape[0]} labels: the two files do not belong together; "
                        f"{fix or DEFAULT_FIX}")
    return images, labels


def write_idx(path, array, compress: Optional[bool] = None) -> Path:
    """Write a uint8 array as IDX (gzip when ``compress`` or when the name ends in .gz).
    Images are [N, rows, cols] (magic 0x803), labels [N] (magic 0x801)."""
    arr = np.ascontiguousarray(np.asarray(array, dtype=np.uint8))
    path = Path(path)
    if compress is None:
        compress = path.suffix == ".gz"
    payload = (bytes([0, 0, _UINT8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
               + arr.tobytes())
    if compress:
        payload = gzip.compress(payload, mtime=0)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_bytes(payload)
    os.replace(tmp, path)
    return path
