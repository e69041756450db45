"""Argument checks of the two iteration ops (gather_scale, gan_stats), shared by every
backend's entries (same messages everywhere); the C++ operators repeat them as TORCH_CHECKs for
direct ``torch.ops`` calls."""
from __future__ import annotations

import math

import torch

GATHER_SCALE_OUT = (torch.float32, torch.float64)
GAN_STATS_DTYPES = (torch.float32, torch.float64)


def gather_scale_args(images: torch.Tensor, idx: torch.Tensor, out: torch.Tensor) -> int:
    """Check gather_scale's arguments; return the number of elements per image."""
    if images.dtype != torch.uint8 or images.dim() < 1:
        raise TypeError(f"gather_scale: images must be a uint8 tensor [N, ...], got "
                        f"{images.dtype} of shape {tuple(images.shape)}")
    if idx.dtype != torch.int64 or idx.dim() != 1:
        raise TypeError(f"gather_scale: idx must be a 1-D int64 tensor, got {idx.dtype} of "
                        f"shape {tuple(idx.shape)}")
    if out.dtype not in GATHER_SCALE_OUT:
        raise TypeError(f"gather_scale: out must be float32 or float64, got {out.dtype}")
    if not (images.device == idx.device == out.device):
        raise ValueError(f"gather_scale: images ({images.device}), idx ({idx.device}) and out "
                         f"({out.device}) must be on one device")
    px = math.prod(images.shape[1:])
    if not out.is_contiguous() or out.numel() != idx.numel() * px:
        raise ValueError(f"gather_scale: out must be contiguous with {idx.numel()} x {px} "
                         f"elements, got shape {tuple(out.shape)}")
    return px


def gan_stats_args(stats: torch.Tensor, loss_d: torch.Tensor, loss_g: torch.Tensor,
                   real_logits: torch.Tensor, fake_logits: torch.Tensor) -> None:
    """stats: a contiguous float32/float64 accumulator of 5 elements; the losses one element
    each; everything floating point and on one device."""
    if stats.dim() != 1 or stats.numel() != 5 or stats.dtype not in GAN_STATS_DTYPES or \
            not stats.is_contiguous():
        raise ValueError(f"gan_stats: stats must be a contiguous 1-D float32 or float64 tensor "
                         f"of 5 elements, got {stats.dtype} of shape {tuple(stats.shape)}")
    for name, t in (("loss_d", loss_d), ("loss_g", loss_g), ("real_logits", real_logits),
                    ("fake_logits", fake_logits)):
        if not t.is_floating_point():
            raise TypeError(f"gan_stats: {name} must be floating point, got {t.dtype}")
        if t.device != stats.device:
            raise ValueError(f"gan_stats: {name} is on {t.device}, stats on {stats.device}")
        if name.startswith("loss") and t.numel() != 1:
            raise ValueError(f"gan_stats: {name} must have one element, got shape "
                             f"{tuple(t.shape)}")
