"""Float32 matmul and convolution precision for the duration of a run."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def tf32_scope(enabled: bool) -> Iterator[None]:
    """TF32 for cuBLAS matmuls and cuDNN convolutions on (``enabled``) or off, the caller's
    settings restored afterwards: --no-tf32 must turn off what torch enables by default (cuDNN),
    and a run must not leave its setting behind in the process (tests, notebooks)."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    old = matmul.allow_tf32, cudnn.allow_tf32
    matmul.allow_tf32 = cudnn.allow_tf32 = bool(enabled)
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = old
