"""The EMA of G (fastgan/engine/ema.py): the average against a plain loop, buffers copied, no
host syncs and only in-place multi-tensor ops per update, save/restore bit-exact."""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn as nn

from fastgan.benchmark.kernel_count import count_work
from fastgan.engine.ema import EMA, decay_from_half_life


def _net(dtype=torch.float64):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.Linear(7, 3)).to(dtype)


def _perturb(net, gen):
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
        dtype = next(net.parameters()).dtype
        net(torch.randn(4, 5, generator=gen, dtype=dtype))  # moves the BN statistics


def test_half_life():
    assert decay_from_half_life(10_000, 64) == 0.5 ** (64 / 10_000)
    assert decay_from_half_life(64, 64) == 0.5
    with pytest.raises(ValueError, match="half-life"):
        decay_from_half_life(0, 64)


def test_update_equals_a_python_loop_float64():
    net = _net()
    beta = decay_from_half_life(500, 32)
    ema = EMA.from_half_life(net, 500, 32)
    loop = [p.detach().clone() for p in net.parameters()]
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        _perturb(net, gen)
        ema.update()
        for e, p in zip(loop, net.parameters()):
            e.mul_(beta).add_(p.detach(), alpha=1 - beta)
    for e, got in zip(loop, ema.module.parameters()):
        torch.testing.assert_close(got, e, rtol=1e-13, atol=1e-14)
        assert not got.requires_grad
    for b, got in zip(net.buffers(), ema.module.buffers()):   # copied, not averaged
        assert torch.equal(b, got)
    # and it moved: not G's weights, not the initial ones
    assert not torch.equal(next(ema.module.parameters()), next(net.parameters()))


def test_decay_is_a_device_tensor_and_can_change():
    net = _net(torch.float32)
    ema = EMA(net, 0.9)
    assert ema.decay.shape == () and ema.decay.dtype == torch.float32
    ptr = ema.decay.data_ptr()
    ema.set_decay(torch.tensor(0.0))       # beta 0: the EMA equals G
    with torch.no_grad():
        next(net.parameters()).add_(1.0)
    ema.update()
    assert ema.decay.data_ptr() == ptr
    for p, e in zip(net.parameters(), ema.module.parameters()):
        assert torch.equal(p, e)
    with pytest.raises(ValueError, match="decay"):
        ema.set_decay(1.5)


def test_update_no_host_sync_only_in_place_foreach():
    net = _net(torch.float32)
    ema = EMA(net, 0.99)
    ptrs = [t.data_ptr() for t in ema.module.state_dict().values()]
    work = count_work(ema.update)
    assert work["host_syncs"] == 0
    # one dtype group: three in-place multi-tensor ops and one buffer copy, nothing that allocates
    assert work["by_op"] == {"aten._foreach_sub_": 1, "aten._foreach_mul_": 1,
                             "aten._foreach_add_": 1, "aten._foreach_copy_": 1}, work["by_op"]
    assert ptrs == [t.data_ptr() for t in ema.module.state_dict().values()]


def test_rejects_bf16():
    with pytest.raises(ValueError, match="float32 or float64"):
        EMA(nn.Linear(3, 3).to(torch.bfloat16), 0.99)


def test_state_dict_round_trip_bit_exact():
    net = _net(torch.float32)
    ema = EMA(net, decay_from_half_life(100, 7))
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):
        _perturb(net, gen)
        ema.update()
    buf = io.BytesIO()
    torch.save(ema.state_dict(), buf)
    buf.seek(0)
    fresh = EMA(_net(torch.float32), 0.5)
    ptrs = [t.data_ptr() for t in fresh.module.state_dict().values()]
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(fresh.decay, ema.decay)
    for (k, a), b in zip(ema.module.state_dict().items(), fresh.module.state_dict().values()):
        assert a.dtype == b.dtype and torch.equal(a, b), k
    assert ptrs == [t.data_ptr() for t in fresh.module.state_dict().values()]   # in place
