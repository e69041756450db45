"""Custom ops are not autocast by PyTorch: the layers cast their inputs themselves."""
from __future__ import annotations

from typing import Optional

import torch


def _autocast_dtype(x: torch.Tensor) -> Optional[torch.dtype]:
    """The dtype autocast would compute a matmul in, or None outside autocast. Custom ops are not
    autocast by PyTorch, so the layers cast their inputs themselves (same policy as F.linear)."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return None


def _cast(t: Optional[torch.Tensor], dtype: Optional[torch.dtype]) -> Optional[torch.Tensor]:
    return t if t is None or dtype is None or t.dtype == dtype else t.to(dtype)
