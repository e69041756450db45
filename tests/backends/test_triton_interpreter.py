"""The Triton interpreter's own tile choice: above config.INTERPRET_BIG_* it fits the tiles to
the whole layer (one program or a few); the parity cases of tests/ops must hold there too."""
from __future__ import annotations

import pytest
import torch

import ops_harness as H

pytest.importorskip("triton")

from test_bias_act import bias_act_case  # noqa: E402
from test_bn_act import bn_case  # noqa: E402
from test_linear_act import linear_case  # noqa: E402


@pytest.fixture(autouse=True)
def triton_setup(monkeypatch):
    with H.triton_setup(monkeypatch):
        yield


@pytest.mark.skipif(not H.INTERP, reason="the interpreter's tile choice")
@pytest.mark.parametrize("op", ["linear", "linear_swapped", "bn_2d", "bn_nchw", "bias_nchw"])
def test_interpreter_whole_layer_tiles(op, seed, monkeypatch):
    """The tiles the interpreter uses above config.INTERPRET_BIG_* (fitted to the whole layer,
    so one program or a few): same parity as the crossing tiles."""
    from fastgan.kernels import config as KC
    from fastgan.kernels import linear_act as LA
    monkeypatch.setattr(KC, "INTERPRET_BIG_WORK", 0)
    monkeypatch.setattr(KC, "INTERPRET_BIG_SWEEP", 0)
    LA.mm_kernel.cache.clear()
    if op == "linear":
        linear_case("triton", "cpu", torch.float32, 70, 300, 33, 0.2, True, None, seed)
    elif op == "linear_swapped":
        linear_case("triton", "cpu", torch.float32, 7, 33, 1100, 0.0, True, "t", seed)
    elif op == "bn_2d":
        bn_case("triton", "cpu", torch.float32, (33, 1100), "nchw", 0.2, True, "gamma_beta", seed)
    elif op == "bn_nchw":
        bn_case("triton", "cpu", torch.float32, (17, 5, 4, 4), "nchw", None, True, "gamma_beta", seed)
    else:
        bias_act_case("triton", "cpu", torch.float32, (70, 3, 9, 9), 1, "nchw", 0.2, True, seed)
    if op.startswith("linear"):
        cfgs = [c.kwargs for c in LA.mm_kernel.cache.values()]
        assert cfgs and all(c["BLOCK_P"] > LA._INTERP_CONFIG[0] or c["BLOCK_Q"] >
                            LA._INTERP_CONFIG[1] for c in cfgs), cfgs
