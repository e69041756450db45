"""Image-folder data set (PNG/JPEG), e.g. a folder of faces for DCGAN.

The folder is walked recursively, files sorted by relative path, each image decoded with Pillow
(EXIF orientation applied), converted to RGB or gray, its shorter side resized to
``image_size`` (bilinear, antialiased) and center-cropped to a square. All images are loaded
into one uint8 tensor, which suits tutorial-size data sets (50,000 RGB images at 64x64 take
600 MB).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from .base import DataError, ImageSet, check_channels, check_image_size

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def list_images(root) -> List[Path]:
    """All .png/.jpg/.jpeg files (any case) under ``root``, sorted by relative path.
    Hidden files and folders (starting with '.') are skipped."""
    root = Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(Path(dirpath) / name)
    found.sort(key=lambda p: p.relative_to(root).as_posix())
    return found


def _decode_error(path, err) -> DataError:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return DataError(f"cannot decode image {path} ({reason}): remove or replace that file")


def _open(path):
    from PIL import Image, ImageOps

    try:
        im = Image.open(path)
        im.load()
        return ImageOps.exif_transpose(im)
    except Exception as e:  # Pillow raises many types for bad files (OSError, SyntaxError, ...)
        raise _decode_error(path, e) from None


def _mode_of(path) -> str:
    from PIL import Image

    try:
        with Image.open(path) as im:  # lazy: reads the header only
            return im.mode
    except Exception as e:
        raise _decode_error(path, e) from None


def _to_square(im, size: int):
    from PIL import Image

    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    if (nw, nh) != (size, size):
        im = im.crop((left, top, left + size, top + size))
    return im


def load_image_folder(path, image_size: Optional[int] = None, channels: Optional[int] = None,
                      max_images: Optional[int] = None) -> ImageSet:
    """Load every PNG/JPEG under ``path`` into an ImageSet (labels None).

    channels: 3 (RGB), 1 (gray), or None = gray when every image is gray, else RGB.
    image_size: square output size; None keeps the images' own size, which must then be the
    same for all of them.
    """
    root = Path(os.path.expanduser(str(path)))
    if image_size is not None:
        check_image_size(image_size)
    if channels is not None:
        check_channels(channels)
    if not root.exists():
        raise DataError(f"image folder {root} does not exist: pass an existing folder as "
                        "folder:PATH")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder: pass a folder of .png/.jpg images as "
                        "folder:PATH")
    files = list_images(root)
    if not files:
        raise DataError(f"no .png/.jpg/.jpeg images found under {root} (searched recursively): "
                        "put images there or pass another folder:PATH")
    if max_images is not None:
        if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
            raise DataError(f"max_images={max_images!r} is not a positive integer")
        files = files[:max_images]
    if channels is None:
        channels = 1 if all(_mode_of(f) in _GRAY_MODES for f in files) else 3
    mode = "L" if channels == 1 else "RGB"

    out = None
    first = None
    for i, f in enumerate(files):
        im = _open(f)
        try:
            if im.mode != mode:
                if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F") and mode == "L":
                    # 16-bit / float gray: scale to 0..255 instead of clipping
                    a = np.asarray(im, dtype=np.float64)
                    peak = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
                    from PIL import Image
                    im = Image.fromarray(np.clip(a * (255.0 / peak), 0, 255).round()
                                         .astype(np.uint8), "L")
                else:
                    im = im.convert(mode)
            if image_size is not None:
                im = _to_square(im, image_size)
            arr = np.asarray(im, dtype=np.uint8)
        except DataError:
            raise
        except Exception as e:
            raise _decode_error(f, e) from None
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if out is None:
            first = f
            out = np.empty((len(files),) + arr.shape, dtype=np.uint8)
        elif arr.shape != out.shape[1:]:
            raise DataError(f"images differ in size ({first} is {out.shape[2]}x{out.shape[1]}, "
                            f"{f} is {arr.shape[1]}x{arr.shape[0]}): pass an image size "
                            "(--image-size N) to resize and center-crop them all")
        out[i] = arr
    images = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
    return ImageSet(images=images, labels=None, name=f"folder:{root}",
                    source=f"{root} ({len(files)} images)", num_classes=None)
