"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN
Training"): the policies ``color``, ``translation`` and ``cutout`` of the official
``DiffAugment_pytorch.py``, on images in [-1, 1], NCHW.

Made capturable: every random number of a call comes from ONE ``torch.rand`` of shape
``(batch, 7)`` on the images' device with the given ``torch.Generator`` (the integer shifts and
offsets are derived from it on the device), and the transforms are a fixed sequence of torch
ops whose shapes depend only on the images' shape: no host sync, no data-dependent shape.
Differentiable with respect to the images (a gather and masks; no gradient to the draws).

``draw`` and ``apply`` are separate so that one set of draws can be applied to several batches
(e.g. the same transform on two halves); ``__call__`` draws and applies.

Formulas (per sample, ``u`` in [0, 1) its draws), in the order of the policy string:
  color:       x + (u0 - 0.5);  (x - mean_c x) * 2 u1 + mean_c x;  (x - mean x) * (u2 + 0.5) + mean x
  translation: out[i, j] = x[i + tx, j + ty], 0 outside; tx, ty uniform integers in
               [-s, s], s = int(size * 0.125 + 0.5)
  cutout:      0 on the rectangle of side c = int(size * 0.5 + 0.5) whose rows are
               [ox - c // 2, ox - c // 2 + c), ox uniform in [0, size + (1 - c % 2)) (same for y)
On 1-channel images the saturation step is skipped: its formula is then the identity
(x - mean_c x = 0), so color is brightness and contrast; its draw is still made, so the
generator advances by the same amount whatever the channel count.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence, Tuple, Union

import torch

Tensor = torch.Tensor

POLICIES = ("color", "translation", "cutout")
N_DRAWS = 7   # brightness, saturation, contrast, tx, ty, cutout ox, cutout oy


def parse_policy(policy: Union[str, Sequence[str]]) -> Tuple[str, ...]:
    """'translation,cutout,color' -> a tuple; ValueError naming an unknown or repeated policy."""
    parts = [p.strip() for p in policy.split(",")] if isinstance(policy, str) else list(policy)
    parts = [p for p in parts if p]
    for p in parts:
        if p not in POLICIES:
            raise ValueError(f"DiffAugment: unknown policy {p!r} (use {', '.join(POLICIES)})")
    if len(set(parts)) != len(parts):
        raise ValueError(f"DiffAugment: a policy is repeated in {policy!r}")
    return tuple(parts)


class AugmentDraws(NamedTuple):
    """One batch's random draws: floats (B,) and integer shifts / offsets (B,) as int64."""
    brightness: Tensor    # added: u - 0.5
    saturation: Tensor    # factor: 2 u
    contrast: Tensor      # factor: u + 0.5
    tx: Tensor            # translation along H
    ty: Tensor            # translation along W
    ox: Tensor            # cutout centre row
    oy: Tensor            # cutout centre column


def _shift(size: int, ratio: float) -> int:
    return int(size * ratio + 0.5)


def _uniform_int(u: Tensor, low: int, count: int) -> Tensor:
    # an integer uniform in [low, low + count) from u in [0, 1); the clamp guards the rounding
    # of u * count up to count
    return (u * count).floor().clamp_(max=count - 1).long() + low


class DiffAugment:
    def __init__(self, policy: Union[str, Sequence[str]], translation_ratio: float = 0.125,
                 cutout_ratio: float = 0.5):
        self.policy = parse_policy(policy)
        self.translation_ratio = translation_ratio
        self.cutout_ratio = cutout_ratio

    def draw(self, x: Tensor, generator: torch.Generator) -> AugmentDraws:
        """The draws for a batch shaped like ``x`` (N, C, H, W), on x's device."""
        b, _, h, w = x.shape
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        u = torch.rand(b, N_DRAWS, generator=generator, device=x.device, dtype=dtype)
        sh, sw = _shift(h, self.translation_ratio), _shift(w, self.translation_ratio)
        ch, cw = _shift(h, self.cutout_ratio), _shift(w, self.cutout_ratio)
        return AugmentDraws(u[:, 0] - 0.5, u[:, 1] * 2, u[:, 2] + 0.5,
                            _uniform_int(u[:, 3], -sh, 2 * sh + 1),
                            _uniform_int(u[:, 4], -sw, 2 * sw + 1),
                            _uniform_int(u[:, 5], 0, h + 1 - ch % 2),
                            _uniform_int(u[:, 6], 0, w + 1 - cw % 2))

    def apply(self, x: Tensor, d: AugmentDraws) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"DiffAugment: images must be N, C, H, W, got shape {tuple(x.shape)}")
        for p in self.policy:
            if p == "color":
                x = _color(x, d)
            elif p == "translation":
                x = _translation(x, d.tx, d.ty)
            else:
                x = _cutout(x, d.ox, d.oy, self.cutout_ratio)
        return x

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return self.apply(x, self.draw(x, generator)) if self.policy else x


def _per_sample(v: Tensor, x: Tensor) -> Tensor:
    return v.to(x.dtype).view(-1, 1, 1, 1)


def _color(x: Tensor, d: AugmentDraws) -> Tensor:
    x = x + _per_sample(d.brightness, x)
    if x.shape[1] > 1:   # on one channel the saturation formula is the identity
        m = x.mean(dim=1, keepdim=True)
        x = (x - m) * _per_sample(d.saturation, x) + m
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - m) * _per_sample(d.contrast, x) + m


def _translation(x: Tensor, tx: Tensor, ty: Tensor) -> Tensor:
    b, c, h, w = x.shape
    rows = torch.arange(h, device=x.device).view(1, h, 1) + tx.view(b, 1, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w) + ty.view(b, 1, 1)
    valid = ((rows >= 0) & (rows < h)) & ((cols >= 0) & (cols < w))          # (B, H, W)
    src = rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)
    out = torch.gather(x.reshape(b, c, h * w), 2, src.view(b, 1, h * w).expand(b, c, h * w))
    # where, not a product: the clamped source of an invalid pixel is never read into it
    return torch.where(valid.view(b, 1, h * w), out, 0.0).view(b, c, h, w)


def _cutout(x: Tensor, ox: Tensor, oy: Tensor, ratio: float) -> Tensor:
    b, _, h, w = x.shape
    ch, cw = _shift(h, ratio), _shift(w, ratio)
    r = torch.arange(h, device=x.device).view(1, h, 1) - (ox.view(b, 1, 1) - ch // 2)
    q = torch.arange(w, device=x.device).view(1, 1, w) - (oy.view(b, 1, 1) - cw // 2)
    inside = ((r >= 0) & (r < ch)) & ((q >= 0) & (q < cw))
    return x * (~inside).to(x.dtype).unsqueeze(1)
