"""Argument checks of the op contract, shared by every backend's entries (same messages
everywhere). The C++ operators keep their own TORCH_CHECKs for direct ``torch.ops`` calls."""
from __future__ import annotations

GAN_LOSS_KINDS = ("bce", "lsgan", "hinge", "linear")
GAN_LOSS_REDUCTIONS = ("mean", "sum")


def gan_loss_args(kind: str, reduction: str) -> None:
    """Raise ValueError unless ``kind`` is one of GAN_LOSS_KINDS and ``reduction`` 'mean' or
    'sum'."""
    if kind not in GAN_LOSS_KINDS:
        raise ValueError(f"gan_loss: unknown kind {kind!r} (use 'bce', 'lsgan', 'hinge' or "
                         "'linear')")
    if reduction not in GAN_LOSS_REDUCTIONS:
        raise ValueError(f"gan_loss: unknown reduction {reduction!r} (use 'mean' or 'sum')")
