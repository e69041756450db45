"""gan_stats for the cuda backend: ``fastgan::gan_stats`` (the iteration's metrics in one
kernel, in place on ``stats``, no autograd) with its fake and the registry entries. On CPU
tensors the C++ kernel runs whatever the size (one serial pass where the reference runs four or
five ATen ops; measured faster up to 1024 logits per set, more than a GAN batch has), unless
``FASTGAN_CPU_KERNELS=never``."""
from __future__ import annotations

import torch

from fastgan.backends.reference import gan_stats as _reference
from fastgan.ops.iteration_checks import gan_stats_args
from fastgan.ops.registry import register

from ._cpu_policy import _cpu_policy
from ._extension import DEVICE_TYPES, _ops


@torch.library.register_fake("fastgan::gan_stats")
def _(stats, loss_d, loss_g, real_logits, fake_logits):
    return None


def gan_stats(stats, loss_d, loss_g, real_logits, fake_logits):
    gan_stats_args(stats, loss_d, loss_g, real_logits, fake_logits)
    _ops.gan_stats(stats, loss_d, loss_g, real_logits, fake_logits)   # Autograd: fallthrough
    return stats


def gan_stats_cpu(*args):
    return (_reference if _cpu_policy() == "never" else gan_stats)(*args)


register("gan_stats", "cuda", ("cpu",), gan_stats_cpu)
if "cuda" in DEVICE_TYPES:
    register("gan_stats", "cuda", ("cuda",), gan_stats)
