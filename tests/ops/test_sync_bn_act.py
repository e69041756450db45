"""sync_bn_act = training-mode act(batchnorm(x)) with statistics over every rank (an optional op:
only the reference implements it). Single process: in a one-rank process group it is bn_act's
reference, in float64, forward, every gradient and the running statistics; and convert_sync_bn
keeps a network's state dict, parameters and buffers (the two-rank checks:
tests/test_distributed.py)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist

from fastgan import ops
from fastgan.backends import reference as R
from fastgan.engine.checkpoint import arch_signature
from fastgan.nn import BatchNormAct, FusedLinearAct, SyncBatchNormAct, convert_sync_bn, sync_scope
from fastgan.variants import get_variant

F64 = torch.float64
TOL = dict(rtol=1e-11, atol=1e-12)
SHAPES = [(3, 5), (33, 1), (7, 3, 5), (5, 6, 7, 3), (2, 3, 9, 9), (17, 5, 1, 1)]


@pytest.fixture
def one_rank(tmp_path):
    """A gloo process group of one rank for the duration of the test."""
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available in this PyTorch build")
    if dist.is_initialized():
        pytest.skip("a process group is already initialized in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _inputs(shape, affine, seed=0):
    g = torch.Generator().manual_seed(seed)
    C = shape[1]
    x = torch.randn(shape, generator=g, dtype=F64) * 2 + 0.5
    w = torch.rand(C, generator=g, dtype=F64) + 0.5 if affine == "gamma_beta" else None
    b = torch.randn(C, generator=g, dtype=F64) if affine != "none" else None
    rm = torch.randn(C, generator=g, dtype=F64)
    rv = torch.rand(C, generator=g, dtype=F64) + 0.5
    return x, w, b, rm, rv


def _run(fn, x, w, b, rm, rv, g):
    leaves = [t.clone().requires_grad_(True) if t is not None else None for t in (x, w, b)]
    rm, rv = rm.clone(), rv.clone()
    y = fn(*leaves, rm, rv)
    y.backward(g)
    return y.detach(), [t.grad if t is not None else None for t in leaves], rm, rv


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("slope", [None, 0.0, 0.2])
@pytest.mark.parametrize("affine", ["gamma_beta", "beta", "none"])
def test_one_rank_equals_bn_act_reference(one_rank, shape, slope, affine):
    x, w, b, rm, rv = _inputs(shape, affine)
    g = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    with ops.use_backend("reference"):
        got = _run(lambda *a: ops.sync_bn_act(*a, 0.1, 1e-5, slope), x, w, b, rm, rv, g)
    ref = _run(lambda *a: R.bn_act(*a, True, 0.1, 1e-5, slope), x, w, b, rm, rv, g)
    y, grads, rm1, rv1 = got
    assert y.dtype == F64 and y.shape == x.shape
    torch.testing.assert_close(y, ref[0], **TOL)
    for name, a, e in zip(("dx", "dweight", "dbias"), grads, ref[1]):
        assert (a is None) == (e is None), name
        if e is not None:
            torch.testing.assert_close(a, e, **TOL, msg=lambda m: f"{name}: {m}")
    torch.testing.assert_close(rm1, ref[2], **TOL)
    torch.testing.assert_close(rv1, ref[3], **TOL)


def test_biased_running_var(one_rank):
    x, w, b, rm, rv = _inputs((9, 4, 3), "gamma_beta")
    rv1 = rv.clone()
    R.sync_bn_act(x, w, b, rm.clone(), rv1, 0.3, 1e-5, 0.2, None, False)
    torch.testing.assert_close(rv1, 0.7 * rv + 0.3 * x.var((0, 2), unbiased=False), **TOL)


def _net(affine, unbiased):
    torch.manual_seed(0)
    bn = BatchNormAct(6, slope=0.2, momentum=0.3, affine=affine, unbiased_running_var=unbiased)
    return torch.nn.Sequential(FusedLinearAct(4, 6), bn).to(F64)


@pytest.mark.parametrize("affine", ["gamma_beta", "beta", "none"])
@pytest.mark.parametrize("unbiased", [True, False])
def test_layer_in_scope_equals_batchnormact(one_rank, monkeypatch, affine, unbiased):
    """Inside sync_scope the converted layer (one rank) computes what BatchNormAct does;
    outside it, it is BatchNormAct's forward itself (bitwise)."""
    calls = []
    real = ops.sync_bn_act
    monkeypatch.setattr(ops, "sync_bn_act", lambda *a: calls.append(a[-2]) or real(*a))
    a, s = _net(affine, unbiased), _net(affine, unbiased)
    assert convert_sync_bn([s]) == 1 and type(s[1]) is SyncBatchNormAct
    x = torch.randn(11, 4, dtype=F64)
    ya = a(x)
    with sync_scope():
        ys = s(x)
    assert calls == [None]   # through the op, over the default group
    torch.testing.assert_close(ys, ya, **TOL)
    ya.square().sum().backward()
    ys.square().sum().backward()
    for (k, pa), (_, ps) in zip(a.named_parameters(), s.named_parameters()):
        torch.testing.assert_close(ps.grad, pa.grad, **TOL, msg=lambda m: f"{k}: {m}")
    for (k, ba), (_, bs) in zip(a.named_buffers(), s.named_buffers()):
        torch.testing.assert_close(bs, ba, **TOL, msg=lambda m: f"{k}: {m}")
    assert torch.equal(s(x), a(x)) and len(calls) == 1   # outside the scope


# ---- convert_sync_bn ---------------------------------------------------------------------------

def _snapshot(nets):
    return {
        "sig": arch_signature(nets),
        "params": {r: [(k, id(p)) for k, p in n.named_parameters()] for r, n in nets.items()},
        "buffers": {r: [(k, id(t)) for k, t in n.named_buffers()] for r, n in nets.items()},
        "state": {r: {k: v.clone() for k, v in n.state_dict().items()} for r, n in nets.items()},
    }


@pytest.mark.parametrize("variant", ["mlp", "gancls"])
def test_convert_keeps_state_dict_and_parameter_identity(variant):
    v = get_variant(variant)
    torch.manual_seed(0)
    nets = v.build({})
    before = _snapshot(nets)
    old = [m for n in nets.values() for m in n.modules() if type(m) is BatchNormAct]
    opt = torch.optim.SGD([p for n in nets.values() for p in n.parameters()], lr=0.1)
    n_bn = convert_sync_bn(nets.values())
    assert n_bn == len(old) > 0
    assert all(type(m) is BatchNormAct for m in old)   # replaced, not re-classed
    assert not any(type(m) is BatchNormAct for n in nets.values() for m in n.modules())
    after = _snapshot(nets)
    assert after["sig"] == before["sig"]
    assert after["params"] == before["params"] and after["buffers"] == before["buffers"]
    for r, sd in after["state"].items():
        assert sd.keys() == before["state"][r].keys()
        assert all(torch.equal(sd[k], before["state"][r][k]) for k in sd)
    new = [m for n in nets.values() for m in n.modules() if type(m) is SyncBatchNormAct]
    for o, m in zip(old, new):
        assert m._non_persistent_buffers_set == o._non_persistent_buffers_set
        assert m._non_persistent_buffers_set is not o._non_persistent_buffers_set
        for k in ("gamma_const", "beta_const"):
            assert (k in m._buffers) == (k in o._buffers)
    assert opt.param_groups[0]["params"] == [p for n in nets.values() for p in n.parameters()]
    for r, n in nets.items():   # old checkpoints load as they are
        n.load_state_dict(before["state"][r], strict=True)


def test_convert_shared_layer_and_bare_layer():
    bn = BatchNormAct(3)
    a, b = torch.nn.Sequential(bn), torch.nn.Sequential(copy.deepcopy(bn), bn)
    assert convert_sync_bn([a, b]) == 2
    assert a[0] is b[1] and type(a[0]) is SyncBatchNormAct and a[0].weight is bn.weight
    assert convert_sync_bn([a, b]) == 0
    with pytest.raises(TypeError, match="pass the network"):
        convert_sync_bn([BatchNormAct(3)])
