"""Shared pieces of the data layer: the error type, the ImageSet container and the uint8
transforms (square resize, gray<->RGB) applied after a data set is read.

Everything here stays uint8 on the CPU: the trainer converts to float ([-1, 1] or [0, 1]) on
the device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F


class DataError(Exception):
    """A data problem the user can fix. ``str(err)`` is one line: the problem, then the fix."""


@dataclass
class ImageSet:
    """A whole data set in memory.

    images: uint8 [N, C, H, W], contiguous, CPU.  labels: int64 [N] or None.
    source: the file(s) or folder it was read from (for logs), with any note about it.
    """

    images: torch.Tensor
    labels: Optional[torch.Tensor]
    name: str
    source: str
    num_classes: Optional[int]
    class_names: Optional[Sequence[str]] = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def describe(self) -> str:
        n, c, h, w = self.images.shape
        labels = f", {self.num_classes} classes" if self.num_classes else ", no labels"
        return f"{self.name}: {n} images {c}x{h}x{w}{labels} (from {self.source})"


# Work in chunks of about this many float32 elements, so that resizing 60,000 MNIST digits
# to 64x64 never needs a gigabyte of float scratch memory.
_CHUNK_ELEMS = 1 << 24


def check_image_size(image_size) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image size {image_size!r} is not a positive integer: "
                        "pass a size such as --image-size 64")
    return image_size


def check_channels(channels) -> int:
    if channels not in (1, 3):
        raise DataError(f"channels={channels!r} is not supported: use 1 (gray) or 3 (RGB)")
    return channels


def _chunks(n: int, per_image: int):
    step = max(1, _CHUNK_ELEMS // max(1, per_image))
    for start in range(0, n, step):
        yield start, min(n, start + step)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round_().clamp_(0, 255).to(torch.uint8)


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 [N, C, H, W] to [N, C, size, size].

    Square inputs are resized directly; other shapes get their shorter side resized to ``size``
    and are then center-cropped. Bilinear with antialiasing, computed in float32 and rounded
    back to uint8.
    """
    size = check_image_size(size)
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise TypeError("resize_images expects a uint8 [N, C, H, W] tensor")
    n, c, h, w = images.shape
    if h == size and w == size:
        return images.contiguous()
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    top, left = (nh - size) // 2, (nw - size) // 2
    out = torch.empty((n, c, size, size), dtype=torch.uint8)
    for a, b in _chunks(n, c * max(h * w, nh * nw)):
        x = images[a:b].float()
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False,
                          antialias=True)
        out[a:b] = _to_uint8(x[:, :, top:top + size, left:left + size])
    return out


# ITU-R BT.601 luma weights (the ones Pillow's "L" conversion uses).
_LUMA = (0.299, 0.587, 0.114)


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Gray -> RGB repeats the channel; RGB -> gray uses ITU-R 601 weights."""
    channels = check_channels(channels)
    c = images.shape[1]
    if c == channels:
        return images.contiguous()
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        n, _, h, w = images.shape
        out = torch.empty((n, 1, h, w), dtype=torch.uint8)
        wts = torch.tensor(_LUMA, dtype=torch.float32).view(1, 3, 1, 1)
        for a, b in _chunks(n, 3 * h * w):
            out[a:b] = _to_uint8((images[a:b].float() * wts).sum(dim=1, keepdim=True))
        return out
    raise DataError(f"cannot convert images with {c} channels to {channels}: "
                    "use gray (1) or RGB (3) images")


def finish(ds: ImageSet, image_size=None, channels=None, max_images=None) -> ImageSet:
    """Apply the common options (max_images, channels, image_size) to a loaded set."""
    if channels is not None:
        check_channels(channels)
    if image_size is not None:
        check_image_size(image_size)
    if max_images is not None:
        if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
            raise DataError(f"max_images={max_images!r} is not a positive integer")
        if max_images < len(ds):
            ds.images = ds.images[:max_images]
            if ds.labels is not None:
                ds.labels = ds.labels[:max_images]
    if channels is not None and channels < ds.channels:
        ds.images = convert_channels(ds.images, channels)      # shrink first: less to resize
    if image_size is not None:
        ds.images = resize_images(ds.images, image_size)
    if channels is not None and channels != ds.channels:
        ds.images = convert_channels(ds.images, channels)      # grow last: less to resize
    ds.images = ds.images.contiguous()
    if ds.labels is not None:
        ds.labels = ds.labels.to(torch.int64).contiguous()
    return ds
