from .layers import BatchNormAct, ConvBNAct, FusedLinearAct
from .losses import bce, lsgan

__all__ = ["FusedLinearAct", "BatchNormAct", "ConvBNAct", "bce", "lsgan"]
