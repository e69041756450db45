"""Layers the variants are written with. Each forward is one call into the op registry, so the
active backend decides how it runs; parameters and buffers are laid out like torch.nn's own
(``weight``, ``bias``, ``running_mean``...), so state dicts read like PyTorch's."""
from .batchnorm import BatchNormAct, uses_batch_statistics
from .conv import ConvBNAct
from .linear import FusedLinearAct
from .diffaugment import DiffAugment, parse_policy
from .losses import bce, hinge, lsgan
from .spectral_norm import apply_spectral_norm, spectral_norm
from .sync_bn import SyncBatchNormAct, convert_sync_bn, sync_scope

__all__ = ["FusedLinearAct", "BatchNormAct", "ConvBNAct", "SyncBatchNormAct", "convert_sync_bn",
           "sync_scope", "bce", "lsgan", "hinge", "uses_batch_statistics", "DiffAugment",
           "parse_policy", "spectral_norm", "apply_spectral_norm"]
