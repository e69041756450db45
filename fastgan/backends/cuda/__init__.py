"""The ``cuda`` backend: the compiled extension ``fastgan._C``, for device type 'cpu' and, when
the extension was built with nvcc, 'cuda'.

``fastgan._C`` registers its operators with ``TORCH_LIBRARY(fastgan, ...)``, their autograd
formulas included (csrc/autograd/: no Python per eager call); the per-op modules here add what
belongs in Python (fake implementations for ``torch.compile``) and register the registry entries. On CPU tensors
each entry keeps the faster implementation per size (:mod:`._cpu_policy`).

Importing this package raises ImportError with the reason when the extension is missing or does
not load (see :mod:`._extension`). The package exports the entries by op name
(``fastgan.backends.cuda.bias_act`` is the CUDA-device entry, ``bias_act_cpu`` the CPU one); a
per-op module is reached with ``importlib.import_module``.
"""
from __future__ import annotations

from ._extension import _C, HAS_CUDA_KERNELS, build_info  # noqa: F401  (first: the C++ schemas)
from ._cpu_policy import CPU_MIN_NUMEL, doctor_line  # noqa: I001
from .bias_act import bias_act, bias_act_cpu
from .bn_act import bn_act, bn_act_cpu
from .gan_loss import gan_loss, gan_loss_cpu
from .gan_loss_stats import gan_loss_stats, gan_loss_stats_cpu
from .gan_stats import gan_stats, gan_stats_cpu
from .gather_scale import gather_scale, gather_scale_cpu
from .linear_act import linear_act, linear_act_cpu
from .linear_bn_act import linear_bn_act, linear_bn_act_cpu

__all__ = ["linear_act", "bias_act", "bn_act", "gan_loss", "build_info", "HAS_CUDA_KERNELS",
           "CPU_MIN_NUMEL", "doctor_line", "linear_act_cpu", "bias_act_cpu", "bn_act_cpu",
           "gan_loss_cpu", "gather_scale", "gather_scale_cpu", "gan_stats", "gan_stats_cpu",
           "linear_bn_act", "linear_bn_act_cpu", "gan_loss_stats", "gan_loss_stats_cpu"]
