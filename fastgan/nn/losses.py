"""GAN losses on logits. A sigmoid followed by BCE is computed in logit space (no log(0));
LSGAN is on probabilities sigmoid(logit), as the seeds define it. hinge is on raw logits."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Optional, Union

import torch

from fastgan import ops

Target = Union[float, torch.Tensor]

# ``fastgan train --loss hinge``: the variants call bce / lsgan; inside ``override("hinge", g)``
# those calls compute the hinge loss (D's side, or G's with ``generator``) with the same targets
# and reductions, so every variant gets it without an edit. None: the variant's own loss.
_OVERRIDE: Optional[str] = None
LOSSES = ("default", "hinge")


@contextlib.contextmanager
def override(loss: str, generator: bool) -> Iterator[None]:
    """The loss of the bce / lsgan calls inside: "default" (theirs) or "hinge"."""
    global _OVERRIDE
    if loss not in LOSSES:
        raise ValueError(f"unknown --loss {loss!r}; use {' or '.join(LOSSES)}")
    old = _OVERRIDE
    _OVERRIDE = None if loss == "default" else ("linear" if generator else "hinge")
    try:
        yield
    finally:
        _OVERRIDE = old


@dataclass
class StatsSink:
    """The iteration's metrics, ``stats += [loss_d, loss_g, D(x), D(G(z)), 1]``, added by the G
    step's loss (``ops.gan_loss_stats``: in the loss's own kernel where the backend can) when the
    variant's G loss is that one call (``enabled``: Variant.g_loss_single), else by ``close``.
    The D step's tensors are held detached."""
    stats: torch.Tensor
    loss_d: torch.Tensor
    real: torch.Tensor
    fake: torch.Tensor
    enabled: bool = True
    loss: Optional[torch.Tensor] = None     # the loss that added the metrics

    def __post_init__(self):
        self.loss_d, self.real, self.fake = (t.detach() for t in (self.loss_d, self.real,
                                                                  self.fake))

    def close(self, loss_g: torch.Tensor) -> None:
        if self.loss is None:
            with torch.no_grad():
                ops.gan_stats(self.stats, self.loss_d, loss_g.detach(), self.real, self.fake)
        elif self.loss is not loss_g:
            raise RuntimeError("the variant's G loss is not its one loss call, but the metrics "
                               "were added with that call: set g_loss_single = False")


_SINK: Optional[StatsSink] = None


@contextlib.contextmanager
def stats_into(sink: Optional[StatsSink]) -> Iterator[None]:
    """Inside, the first bce / lsgan / hinge call adds the metrics of ``sink`` with its loss."""
    global _SINK
    old, _SINK = _SINK, sink if sink is not None and sink.enabled else None
    try:
        yield
    finally:
        _SINK = old


def _loss(logits: torch.Tensor, target, kind: str, reduction: str, weight: float):
    sink, logits = _SINK, _fp32(logits)
    if sink is None or sink.loss is not None:
        return ops.gan_loss(logits, target, kind, reduction, weight)
    sink.loss = ops.gan_loss_stats(logits, target, kind, reduction, weight, sink.stats,
                                   sink.loss_d, sink.real, sink.fake)
    return sink.loss


def _fp32(logits: torch.Tensor) -> torch.Tensor:
    # Losses are computed in fp32 at least, whatever the logits' dtype (as autocast does for BCE).
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


# ``weight``: a constant factor on the loss, applied inside the op's own kernels (write
# ``bce(l, t, weight=2.0)``, not ``2 * bce(l, t)``: no scalar kernel forward or backward).


def bce(logits: torch.Tensor, target: Target, reduction: str = "mean",
        weight: float = 1.0) -> torch.Tensor:
    return _loss(logits, target, _OVERRIDE or "bce", reduction, weight)


def lsgan(logits: torch.Tensor, target: Target, reduction: str = "sum",
          weight: float = 1.0) -> torch.Tensor:
    return _loss(logits, target, _OVERRIDE or "lsgan", reduction, weight)


def hinge(logits: torch.Tensor, target: Target, reduction: str = "mean",
          generator: bool = False, weight: float = 1.0) -> torch.Tensor:
    """The hinge loss of StyleGAN2/StudioGAN. D's side (generator False): target 1 (real)
    gives relu(1 - l), 0 (fake) relu(1 + l), a per-element target picks per row. G's side
    (generator True, called with target 1 as the G step of bce is): -l, i.e. the op's kind
    'linear', (1 - 2 t) l, so the target keeps its meaning and no argument is ignored."""
    return _loss(logits, target, "linear" if generator else "hinge", reduction, weight)
