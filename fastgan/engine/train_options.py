"""The training options of issue 22 inside the engine's iteration, and their checks: DiffAugment
before D (real and fake, from the engine's generator: captured in a CUDA graph, resumed with its
state), lazy R1 on a host-counted schedule, and the one-line errors of combinations that do not
make sense (validate.py calls ``check``). EMA and the loss override live in ema.py and
nn/losses.py; spectral norm is applied to D by the validation before the optimizers exist."""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, Optional

import torch

from fastgan.nn.diffaugment import DiffAugment, parse_policy
from fastgan.nn.losses import LOSSES
from fastgan.variants import Batch
from fastgan.variants.base import cat_rows

from .ema import EMA, decay_from_half_life
from .r1 import check_r1, r1_penalty


def attach(engine) -> None:
    """The engine's EMA of G (None: off), its DiffAugment (None: off) and its D-step count."""
    o = engine.opts
    engine.ema = None if o.ema_decay is None else EMA(engine.nets["G"], o.ema_decay)
    engine.augment = DiffAugment(o.augment) if o.augment else None
    engine.d_count = 0


def state_tensors(engine) -> list:
    """The EMA's tensors, which training changes in place (a capture's warm-up restores them)."""
    m = engine.ema.module if engine.ema is not None else None
    return [] if m is None else list(m.parameters()) + list(m.buffers())


def _local_rows(engine, counts) -> Optional[torch.Tensor]:
    """Data-parallel: this rank's rows of the global batch whose groups have ``counts`` rows
    (None in one process). The draws are made for the global batch, so the generator advances
    alike whatever the world size (as the engine's other draws do)."""
    o = engine.opts
    if o.world <= 1:
        return None
    key = ("_aug_rows",) + tuple(counts)
    rows = engine.__dict__.get(key)
    if rows is None:
        parts, start = [], 0
        for n in counts:
            k = n // o.world
            parts.append(torch.arange(start + o.rank * k, start + (o.rank + 1) * k))
            start += n
        rows = engine.__dict__[key] = torch.cat(parts).to(engine.device)
    return rows


def augment(engine, x: torch.Tensor, counts=None) -> torch.Tensor:
    """DiffAugment of images in the variant's layout (flat for the MLP variants); ``counts``:
    the global batch's groups (data-parallel), else ``x`` is the whole batch."""
    h = engine.variant.hyper
    img = x.reshape(x.shape[0], h.channels, h.image_size, h.image_size)
    rows = _local_rows(engine, counts or (x.shape[0],))
    if rows is None:
        return engine.augment(img, engine.gen).reshape(x.shape)
    like = img[:1].expand((sum(counts),) + tuple(img.shape[1:]))   # a view: shape only
    draws = engine.augment.draw(like, engine.gen)
    draws = type(draws)(*(d.index_select(0, rows) for d in draws))
    return engine.augment.apply(img, draws).reshape(x.shape)


def augment_d(engine, batch: Batch, gen: Dict[str, torch.Tensor]):
    """The D step's real and fake images augmented in one call (a draw per image); the two
    halves stay adjacent rows of one tensor, so D still reads [real; fake] as a view."""
    if engine.augment is None:
        return batch, gen
    n = batch.real.shape[0]
    counts = engine.variant.batch_sizes(engine.opts.batch_size)
    x = augment(engine, cat_rows(batch.real, gen["fake"]), counts)
    return dataclasses.replace(batch, real=x[:n]), {**gen, "fake": x[n:]}


def augment_g(engine, gen: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The G step's fakes augmented (with grad) before D scores them."""
    if engine.augment is None:
        return gen
    v, b = engine.variant, engine.opts.batch_size
    n = v.batch_sizes(b)[1] if v.g_reuses_fake else v.g_batch_size(b)
    return {**gen, "fake": augment(engine, gen["fake"], (n,))}


def r1_due(engine) -> bool:
    """Whether this D step carries R1 (every ``r1_every``-th, from the first); counted on the
    host, so a captured unroll of a multiple of ``r1_every`` D steps repeats the pattern."""
    o = engine.opts
    due = o.r1_gamma > 0 and engine.d_count % o.r1_every == 0
    engine.d_count += 1
    return due


def r1_term(engine, batch: Batch) -> torch.Tensor:
    """Lazy R1 (StyleGAN2): K * gamma / 2 * E||grad_x D(x)||^2 on the (augmented) real images D
    saw, on every K-th D step."""
    o = engine.opts
    return r1_penalty(lambda x: engine.variant.real_logits(engine.nets, batch, x), batch.real,
                      o.r1_gamma * o.r1_every)


def ema_decay(ema: Optional[float], batch_size: int) -> Optional[float]:
    """--ema X: a half-life in images when X >= 1, a per-step decay when 0 < X < 1."""
    if ema is None:
        return None
    if not (math.isfinite(ema) and ema > 0):
        raise ValueError(f"--ema must be a half-life in images (>= 1) or a decay in (0, 1), "
                         f"not {ema}")
    return float(ema) if ema < 1 else decay_from_half_life(ema, batch_size)


def graph_unroll(unroll: int, d_steps: int, r1_every: int) -> int:
    """The smallest multiple of ``unroll`` whose D steps are a multiple of ``r1_every``: the
    captured unroll then holds whole R1 periods and each replay repeats the same pattern."""
    period = r1_every // math.gcd(r1_every, d_steps)
    return unroll * period // math.gcd(unroll, period)


def r1_backend(cfg, nets, backend: str, available) -> str:
    """--backend auto with --r1: the first of the auto choice, cuda, reference that can
    differentiate D twice (auto picks triton for a CUDA graph, which cannot)."""
    if not cfg.r1 or cfg.backend != "auto":
        return backend
    for b in (backend, "cuda", "reference"):
        if b not in available and b != "reference":
            continue
        try:
            check_r1(nets["D"], b)
            return b
        except ValueError:
            pass
    return "reference"


def engine_fields(cfg, variant, nets, backend: str) -> Dict[str, object]:
    """EngineOptions' fields of the training options, after their checks: ValueError (one
    line) for a bad option or combination."""
    if cfg.loss not in LOSSES:
        raise ValueError(f"unknown --loss {cfg.loss!r}; use {' or '.join(LOSSES)}")
    policy = parse_policy(cfg.augment or "")
    if policy and variant.hyper.image_size < 8:
        raise ValueError("--augment needs images of at least 8x8 pixels")
    if not (math.isfinite(cfg.r1) and cfg.r1 >= 0):
        raise ValueError(f"--r1 must be a gamma >= 0 (0: off), not {cfg.r1}")
    if cfg.r1_every < 1:
        raise ValueError(f"--r1-every must be at least 1 (D steps), not {cfg.r1_every}")
    if cfg.r1:
        if not variant.supports_r1():
            raise ValueError(f"--r1: variant {variant.name!r} scores (image, label or code) "
                             "pairs, and R1 here is on images alone; drop --r1")
        check_r1(nets["D"], backend)
    return dict(ema_decay=ema_decay(cfg.ema, variant.hyper.batch_size),
                augment=",".join(policy), r1_gamma=float(cfg.r1), r1_every=int(cfg.r1_every),
                loss=cfg.loss)


def spectral_norm_nets(variant, nets, seed: int, device) -> None:
    """--spectral-norm: D's weights spectral-normalised (before its optimizer exists and before
    a checkpoint is loaded: the parametrization's tensors are part of D's state)."""
    from fastgan.nn.spectral_norm import apply_spectral_norm
    gen = torch.Generator(device=device)
    gen.manual_seed(seed + 5)
    for role in variant.param_roles()["D"]:
        apply_spectral_norm(nets[role], generator=gen)
