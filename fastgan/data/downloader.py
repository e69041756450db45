"""Download MNIST / Fashion-MNIST IDX files into the cache, for users with a network.

Each file is fetched into a temporary file in the target folder, checked (the MD5 its
publishers give, then the IDX structure and the expected counts) and only then moved into
place with os.replace, so an interrupted or bad download never leaves a file that looks valid.

Checksums: MD5 of the .gz files as published (MNIST: the values torchvision ships for its
mirrors; Fashion-MNIST: the values in Zalando Research's README, also in torchvision). These are
the checksums that are published for these files, so MD5 (not SHA-256) is what is pinned.
Copies recompressed by someone else (Debian's Fashion-MNIST package, some mirrors) hold the same
data in different gzip bytes: they are not downloaded here, and local copies are checked by
structure, not by checksum.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO, Dict, Optional, Sequence, Tuple

from .base import DataError
from .idx import read_idx_images, read_idx_labels

# name -> mirrors, tried in order
MIRRORS: Dict[str, Tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
}

# name -> {file: (hash algorithm, published digest)}
FILES: Dict[str, Dict[str, Tuple[str, str]]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": ("md5", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        "train-labels-idx1-ubyte.gz": ("md5", "d53e105ee54ea40749a09fcbcd1e9432"),
        "t10k-images-idx3-ubyte.gz": ("md5", "9fb629c4189551a2d022fa330f9573f3"),
        "t10k-labels-idx1-ubyte.gz": ("md5", "ec29112dd5afa0611ce80d1b7f02629c"),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": ("md5", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train-labels-idx1-ubyte.gz": ("md5", "25c81989df183df01b3e8a0aad5dffbe"),
        "t10k-images-idx3-ubyte.gz": ("md5", "bef4ecab320f06d8554ea6380940ec79"),
        "t10k-labels-idx1-ubyte.gz": ("md5", "bb300cfdad3c16e7a12a480ee83cd310"),
    },
}

# Structure every downloaded file must have: split prefix -> number of items; images 28x28.
EXPECTED_COUNTS: Dict[str, int] = {"train": 60000, "t10k": 10000}
EXPECTED_IMAGE_SHAPE = (28, 28)

TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}

_TIMEOUT_S = 60
_BLOCK = 1 << 20


def fetch(url: str, dest: BinaryIO, timeout: float = _TIMEOUT_S) -> None:
    """Copy the content at ``url`` (http, https or file) into the open file ``dest``.
    Tests replace this function to keep everything local."""
    req = urllib.request.Request(url, headers={"User-Agent": "fastgan-data/1"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        shutil.copyfileobj(resp, dest, _BLOCK)


def file_digest(path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def check_idx_file(path, fname: str, fix: Optional[str] = None) -> None:
    """Check an IDX file has the structure its standard name implies (counts, 28x28)."""
    prefix = fname.split("-", 1)[0]
    count = EXPECTED_COUNTS.get(prefix)
    if "-images-" in fname:
        arr = read_idx_images(path, fix)
        if arr.shape[1:] != EXPECTED_IMAGE_SHAPE:
            raise DataError(f"{path} holds {arr.shape[1]}x{arr.shape[2]} images, expected 28x28:"
                            f" {fix or 'delete it and download it again'}")
    else:
        arr = read_idx_labels(path, 10, fix)
    if count is not None and arr.shape[0] != count:
        raise DataError(f"{path} holds {arr.shape[0]} items, expected {count}: "
                        f"{fix or 'delete it and download it again'}")


def _check_name(name: str) -> str:
    key = name.lower().replace("_", "-")
    if key == "fashion":
        key = "fashion-mnist"
    if key not in FILES:
        raise DataError(f"cannot download {name!r}: downloadable data sets are "
                        f"{', '.join(FILES)}")
    return key


def download(name: str, data_dir=None, *, mirrors: Optional[Sequence[str]] = None,
             force: bool = False, quiet: bool = False) -> Path:
    """Fetch the 4 IDX files of ``name`` ("mnist" or "fashion-mnist") into
    ``<root>/<name>/`` where root is data_dir, else $FASTGAN_DATA, else the user cache.
    Files already there that pass the structure check are kept (unless ``force``).
    Returns the folder."""
    from .sources import download_target  # late import: sources imports this module

    key = _check_name(name)
    title = TITLES[key]
    target = download_target(key, data_dir)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {target} ({e.strerror or e}): pass a writable "
                        "--data-dir or set FASTGAN_DATA") from None
    mirrors = tuple(mirrors) if mirrors is not None else MIRRORS[key]
    for fname, (algo, digest) in FILES[key].items():
        dest = target / fname
        if dest.exists() and not force:
            try:
                check_idx_file(dest, fname)
                if not quiet:
                    print(f"fastgan: {dest} already present", file=sys.stderr)
                continue
            except DataError:
                pass  # broken: fetch it again
        errors = []
        for base in mirrors:
            url = base if base.endswith(fname) else base.rstrip("/") + "/" + fname
            if not quiet:
                print(f"fastgan: downloading {url}", file=sys.stderr)
            fd, tmp = tempfile.mkstemp(prefix=f".{fname}.", suffix=".part", dir=target)
            try:
                with os.fdopen(fd, "wb") as f:
                    fetch(url, f)
                    f.flush()
                    os.fsync(f.fileno())
                got = file_digest(tmp, algo)
                if got != digest:
                    errors.append(f"{url}: {algo} {got} is not the published {digest}")
                    continue
                check_idx_file(tmp, fname)
                os.replace(tmp, dest)
                break
            except DataError as e:
                errors.append(f"{url}: {e}")
            except (OSError, urllib.error.URLError, ValueError) as e:
                reason = getattr(e, "reason", None) or e
                errors.append(f"{url}: {reason}")
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            raise DataError(f"could not download {title} file {fname} ({'; '.join(errors)}): "
                            f"check the network, or put the 4 IDX files into {target} by hand")
    return target
