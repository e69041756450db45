"""Checkpoints while training: a save only of finite parameters, and the last good step that a
divergence message names."""
from __future__ import annotations

from typing import Optional

import torch

from .. import checkpoint as ckpt
from ..config import Diverged, UserError


def finite_state(run) -> bool:
    with torch.no_grad():
        flags = [torch.isfinite(p).all() for net in run.nets.values() for p in net.parameters()]
        return bool(torch.stack(flags).all())


def save(run) -> Optional[str]:
    path = None
    if run.main:    # data-parallel: rank 0 writes, the state is the same on every rank
        try:
            path = ckpt.save_checkpoint(run.out, run.engine, run.step, run.cfg.to_dict())
        except ckpt.SaveError as e:
            raise UserError(f"{e} (training stopped at step {run.step})", e.detail) from None
    run.last_saved = run.step
    return path


class Checkpoints:
    def __init__(self, run):
        self.run = run
        self.last_good: Optional[int] = run.step if run.cfg.resume else None

    def save(self) -> None:
        run = self.run
        if not finite_state(run):
            raise Diverged(f"parameters became NaN/inf by step {run.step}; the last good "
                           f"checkpoint (step {self.last_good}) is kept in {run.out}")
        run.save()
        self.last_good = run.step
