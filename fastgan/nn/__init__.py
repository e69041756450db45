from .layers import BatchNormAct, ConvBNAct, FusedLinearAct
from .losses import bce, lsgan
from .sync_bn import SyncBatchNormAct, convert_sync_bn, sync_scope

__all__ = ["FusedLinearAct", "BatchNormAct", "ConvBNAct", "SyncBatchNormAct", "convert_sync_bn",
           "sync_scope", "bce", "lsgan"]
