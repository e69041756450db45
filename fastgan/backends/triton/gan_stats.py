"""gan_stats for the triton backend: the custom op (in place on ``stats``; metrics, no autograd),
its fake and the registry entry."""
from __future__ import annotations

import torch

from fastgan.kernels._common import check_float
from fastgan.kernels.gan_stats import gan_stats_into
from fastgan.ops.iteration_checks import gan_stats_args
from fastgan.ops.registry import register

from ._policy import DEVICE_TYPES, use_custom_op

Tensor = torch.Tensor


@torch.library.custom_op("fastgan_triton::gan_stats", mutates_args=("stats",))
def gan_stats_op(stats: Tensor, loss_d: Tensor, loss_g: Tensor, real_logits: Tensor,
                 fake_logits: Tensor) -> None:
    gan_stats_into(stats, loss_d, loss_g, real_logits, fake_logits)


@gan_stats_op.register_fake
def _(stats, loss_d, loss_g, real_logits, fake_logits):
    return None


def check_gan_stats(stats: Tensor, loss_d: Tensor, loss_g: Tensor, real_logits: Tensor,
                    fake_logits: Tensor) -> None:
    """gan_stats' argument checks (gan_loss_stats passes loss_d as loss_g: its loss is made)."""
    gan_stats_args(stats, loss_d, loss_g, real_logits, fake_logits)
    for t in (loss_d, loss_g, real_logits, fake_logits):
        check_float("gan_stats", t)


def gan_stats(stats: Tensor, loss_d: Tensor, loss_g: Tensor, real_logits: Tensor,
              fake_logits: Tensor) -> Tensor:
    check_gan_stats(stats, loss_d, loss_g, real_logits, fake_logits)
    args = [t.detach() for t in (loss_d, loss_g, real_logits, fake_logits)]
    (gan_stats_op if use_custom_op() else gan_stats_into)(stats, *args)
    return stats


register("gan_stats", "triton", DEVICE_TYPES, gan_stats)
