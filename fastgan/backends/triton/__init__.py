"""The ``triton`` backend: the kernels of ``fastgan.kernels`` as registry ops.

Each per-op module (``linear_act``, ``bias_act``, ``bn_act``, ``gan_loss``) defines the
``torch.library`` custom ops (namespace ``fastgan_triton``, with fake and autograd
registrations so they compose with ``torch.compile`` and CUDA graphs), the eager
``torch.autograd.Function`` over the same launchers, and the registry entry, and registers
that entry for :data:`DEVICE_TYPES` when imported. Importing this package imports triton: when
triton is missing the registry records the ImportError and the backend is reported unavailable.

The package exports the entries by op name (``fastgan.backends.triton.bias_act`` is the
function); a per-op module is reached with ``importlib.import_module``.
"""
from __future__ import annotations

import triton  # noqa: F401  (fail early and clearly when triton is not installed)

from ._policy import DEVICE_TYPES
from .bias_act import bias_act
from .bn_act import bn_act
from .gan_loss import gan_loss
from .gan_loss_stats import gan_loss_stats
from .gan_stats import gan_stats
from .gather_scale import gather_scale
from .linear_act import linear_act
from .linear_act_head import linear_act_head
from .linear_bn_act import linear_bn_act

__all__ = ["DEVICE_TYPES", "linear_act", "bias_act", "bn_act", "gan_loss", "gather_scale", "gan_stats",
           "linear_bn_act", "linear_act_head", "gan_loss_stats"]
