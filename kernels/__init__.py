"""Triton kernels of fastgan: ``@triton.jit`` functions and their launchers, nothing else.

This folder sits at the top of the repository and is installed as ``fastgan.kernels`` (setup.py
maps it into the package). It knows nothing of autograd, ``torch.library`` or the op registry:
those live in :mod:`fastgan.backends.triton`, which wraps these launchers as the ``triton``
backend. That is also why nothing here registers anything global: with the repository root as
the working directory the folder is importable a second time as plain ``kernels``.

* :mod:`.linear_act` — ``act(x @ W.T + b)``: chooses between the kernels below (orientation per
  problem, the tiny-M path) for the forward and the backward.
* :mod:`.matmul` — the tiled matmul with bias + activation (or inference BN) in its epilogue, and
  the backward's pair (dX tiles and dW tiles + db, the activation mask applied to the dY tiles
  as they load) in one launch.
* :mod:`.gemv` — the matrix-vector kernels of the 1-logit layer (forward; backward in one pass).
* :mod:`.linear_act_head` — a hidden linear_act and its 1-logit head: the backward of both in
  one matmul launch whose dY is the rank-1 ``g w``, read, never stored.
* :mod:`.linear_bn_act` — the matmul with training-mode BN in its epilogue when the batch fits one
  tile; its backward (dX, dW, db, dgamma, dbeta) in one launch.
* :mod:`.bias_act` — ``act(x + b[c])`` (conv epilogue); backward writes dX and reduces db in one
  pass.
* :mod:`.bn_act` — training-mode BatchNorm + activation with the running-stat update; fused
  backward (dX, dgamma, dbeta). NCHW and channels_last.
* :mod:`.gan_loss` — BCE-with-logits / LSGAN loss and its gradient in one kernel (and, for
  gan_loss_stats, the iteration's metrics of :mod:`.gan_stats` in the same program).
* :mod:`.adam` — the eps-hat Adam step over many tensors in one launch.

:mod:`.config` holds the precision setting of fp32 matmuls (``DOT_PRECISION``: "tf32" by default
on CUDA, "ieee" under ``TRITON_INTERPRET=1``; environment ``FASTGAN_TRITON_DOT_PRECISION``).
:mod:`.compile_check` compiles every kernel for sm_90 on any machine (the cases:
:mod:`.compile_cases`). :mod:`.launch` wraps every launched kernel: with
``FASTGAN_TRITON_LAUNCH=cached`` a call signature seen before is launched directly.

Notes: the matmul kernel is autotuned on first use per shape, so run one step before capturing a
CUDA graph (the trainers' warm-up does). Reductions are two-level with a fixed order, never
atomics, so every op is deterministic run to run. Kernels write ``tl.full(..., 0.0, ACC)`` and
``(x + b - 1) // b`` rather than ``tl.zeros`` / ``tl.cdiv``: the same code on a GPU, but those
are ``@jit`` helpers, which the CPU interpreter re-patches on every call; the interpreter also
gets cost-based tile sizes (``config.INTERPRET_BIG_*``) and its overflow sanitizer off.

Import the submodules explicitly (``from fastgan.kernels import linear_act``); importing this
package alone does not import triton. Inside this folder, imports are relative.
"""
