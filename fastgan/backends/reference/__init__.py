"""The ``reference`` backend: plain PyTorch ops, on any device. It is the ground truth every fast
path is tested against, so it is written for clarity, in the most literal form of each formula.

One module per op, each registering its function for every device type when imported. The
package exports the functions by op name (``fastgan.backends.reference.bias_act`` is the
function); a per-op module is reached with ``importlib.import_module``.
"""
from __future__ import annotations

from ._devices import ALL_DEVICES
from .bias_act import bias_act
from .bn_act import bn_act
from .gan_loss import gan_loss
from .gan_loss_stats import gan_loss_stats
from .gan_stats import gan_stats
from .gather_scale import gather_scale
from .linear_act import linear_act
from .linear_act_head import linear_act_head
from .linear_bn_act import linear_bn_act
from .sync_bn_act import sync_bn_act

__all__ = ["ALL_DEVICES", "linear_act", "bias_act", "bn_act", "gan_loss", "sync_bn_act", "gather_scale", "gan_stats",
           "linear_bn_act", "linear_act_head", "gan_loss_stats"]
