"""Triton kernels of fastgan (the ``triton`` backend of the op registry).

One module per op, each holding its kernels, their launchers and the ``torch.library`` custom
ops (namespace ``fastgan_triton``, with fake and autograd registrations so they compose with
``torch.compile`` and CUDA graphs):

* :mod:`.linear_act` — ``act(x @ W.T + b)``: one autotuned matmul with bias + activation in the
  epilogue; backward dX/dW matmuls with the activation mask applied to the dY tiles and db
  reduced inside the dW kernel; a matrix-vector path for the 1-logit layer.
* :mod:`.bias_act` — ``act(x + b[c])`` (conv epilogue); backward writes dX and reduces db in one
  pass.
* :mod:`.bn_act` — training-mode BatchNorm + activation with the running-stat update; fused
  backward (dX, dgamma, dbeta). NCHW and channels_last.
* :mod:`.gan_loss` — BCE-with-logits / LSGAN loss and its gradient in one kernel.

:mod:`.config` holds the precision setting of fp32 matmuls (``DOT_PRECISION``: "tf32" by default
on CUDA, "ieee" under ``TRITON_INTERPRET=1``; environment ``FASTGAN_TRITON_DOT_PRECISION``).
:mod:`.register_triton` registers all ops with the registry (imported lazily by
``fastgan.ops`` when the triton backend is first asked for).

Eager calls go through a thin ``torch.autograd.Function`` over the same launchers (the custom
ops cost about 40 us of dispatcher overhead per call); under ``torch.compile`` the custom ops
are used (``config.EAGER_FAST_PATH``, ``config.use_custom_op``).

Notes: the matmul kernel is autotuned on first use per shape, so run one step before capturing a
CUDA graph (the trainers' warm-up does). Reductions are two-level with a fixed order, never
atomics, so every op is deterministic run to run. Kernels write ``tl.full(..., 0.0, ACC)`` and
``(x + b - 1) // b`` rather than ``tl.zeros`` / ``tl.cdiv``: the same code on a GPU, but those
are ``@jit`` helpers, which the CPU interpreter re-patches on every call (~2 ms each); with the
interpreter's cost-based tile sizes (``config.INTERPRET_BIG_*``) and its overflow sanitizer
off, an ``mlp`` iteration (batch 64) under ``TRITON_INTERPRET=1`` went from 10-20 s to about 1 s.

Import the submodules explicitly (``from fastgan.kernels import linear_act``); importing this
package alone does not import triton.
"""
