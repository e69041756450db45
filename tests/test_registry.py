"""The op registry is a real seam: a backend registered at run time is what the layers call."""
from __future__ import annotations

import warnings

import pytest
import torch

from fastgan import ops
from fastgan.nn import BatchNormAct, ConvBNAct, FusedLinearAct, bce
from fastgan.ops import registry


@pytest.fixture
def dummy_backend():
    calls = []

    def spy(op):
        ref = registry.lookup(op, "cpu", "reference")

        def fn(*args):
            calls.append(op)
            return ref(*args)
        return fn

    for op in ("linear_act", "bias_act", "bn_act"):   # gan_loss left out on purpose
        ops.register(op, "dummy", ("cpu",), spy(op))
    yield calls
    ops.unregister_backend("dummy")


def test_layers_dispatch_to_active_backend(dummy_backend):
    lin = FusedLinearAct(5, 3, slope=0.2)
    bn = BatchNormAct(3, slope=0.0)
    conv = ConvBNAct(1, 2, 3, padding=1, slope=0.2)
    x = torch.randn(4, 5)
    with ops.use_backend("dummy"):
        assert ops.active_backend() == "dummy"
        bn(lin(x))
        conv(torch.randn(2, 1, 5, 5))
    assert dummy_backend == ["linear_act", "bn_act", "bias_act"]
    assert ops.active_backend() == "reference"
    lin(x)  # outside the context: the reference, not the dummy
    assert dummy_backend == ["linear_act", "bn_act", "bias_act"]


def test_missing_op_falls_back_with_one_warning(dummy_backend):
    logits = torch.randn(8, 1)
    with ops.use_backend("dummy"):
        with pytest.warns(RuntimeWarning, match="no 'dummy' implementation"):
            a = bce(logits, 1.0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")   # a second call does not warn again
            b = bce(logits, 1.0)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, torch.nn.functional.binary_cross_entropy_with_logits(
        logits, torch.ones_like(logits)))


def test_unknown_backend_and_op():
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        ops.set_backend("nope")
    with pytest.raises(ValueError, match="unknown op"):
        ops.register("conv_magic", "dummy", "cpu", lambda: None)
    with pytest.raises(ValueError, match="choose auto"):
        ops.resolve_backend("fast", "cpu")


def test_lookup_is_per_device():
    calls = []
    ops.register("gan_loss", "devtest", ("cuda",), lambda *a: calls.append(1))
    try:
        for op in ("linear_act", "bias_act", "bn_act"):
            ops.register(op, "devtest", ("cuda",), lambda *a: None)
        assert "devtest" not in ops.available_backends("cpu")
        assert "devtest" in ops.available_backends("cuda")
        with ops.use_backend("devtest"):
            with pytest.warns(RuntimeWarning):
                bce(torch.randn(3, 1), 0.0)   # CPU tensor: the cuda-only impl is not used
        assert calls == []
    finally:
        ops.unregister_backend("devtest")


def test_optional_op_is_not_required_and_falls_back_quietly():
    """sync_bn_act is optional: a backend with the four ops but not it is available, and its
    lookup is the reference's, without the fallback warning."""
    assert "sync_bn_act" in ops.OPTIONAL_OPS and "sync_bn_act" not in ops.OPS
    assert ops.has_impl("sync_bn_act", "reference", "cpu")
    reference = registry.lookup("sync_bn_act", "cpu", "reference")
    try:
        for op in ops.OPS:
            ops.register(op, "nosync", ("cpu",), registry.lookup(op, "cpu", "reference"))
        assert "nosync" in ops.available_backends("cpu")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert registry.lookup("sync_bn_act", "cpu", "nosync") is reference
            with ops.use_backend("nosync"):
                assert registry.lookup("sync_bn_act", "cpu") is reference
        own = ops.register("sync_bn_act", "nosync", ("cpu",), lambda *a: None)
        assert registry.lookup("sync_bn_act", "cpu", "nosync") is own
    finally:
        ops.unregister_backend("nosync")


def test_auto_on_cpu_is_never_the_triton_interpreter():
    assert ops.auto_backend("cpu") in ("cuda", "reference")


def test_ops_imports_no_backend():
    """The contract loads no backend, no Triton and no kernels until one is asked for."""
    import subprocess
    import sys
    code = ("import sys, fastgan.ops\n"
            "bad = [m for m in sys.modules if m.startswith(('fastgan.backends.', 'triton', "
            "'fastgan.kernels'))]\n"
            "assert not bad, bad\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_catalogue_names_and_auto_order():
    from fastgan import backends
    assert backends.names() == ("reference", "triton", "cuda") == ops.BACKENDS
    assert backends.auto_order("cuda") == ("triton", "cuda", "reference")
    assert backends.auto_order("cpu") == ("cuda", "reference")
    assert backends.get("nope") is None


def test_auto_order_per_mode():
    """On CUDA the order depends on the path (bench/results/2026-11-23-h100-prelim.md): in a
    graph triton, cuda, reference; eagerly the reference first. The default is the graph order
    (fastgan train's default on CUDA); CPU has no graphs, so one order for both."""
    from fastgan import backends
    assert backends.auto_order("cuda", graph=True) == ("triton", "cuda", "reference")
    assert backends.auto_order("cuda", graph=False) == ("reference", "cuda", "triton")
    assert backends.auto_order("cuda") == backends.auto_order("cuda", graph=True)
    assert backends.auto_order("cpu", graph=False) == backends.auto_order("cpu") == \
        ("cuda", "reference")
    assert backends.auto_order("xpu", graph=False) == ()     # no entry: never auto


def test_auto_backend_per_mode():
    from fastgan import backends
    avail = ops.available_backends("cuda")
    first = next(b for b in backends.auto_order("cuda", graph=True) if b in avail)
    assert ops.auto_backend("cuda") == ops.auto_backend("cuda", graph=True) == first
    assert ops.auto_backend("cuda", graph=False) == "reference"
    assert ops.resolve_backend("auto", "cuda", graph=False) == "reference"
    assert ops.resolve_backend("auto", "cuda") == first
    assert ops.resolve_backend("reference", "cuda", graph=True) == "reference"  # names stay
    assert ops.auto_backend("cpu", graph=False) == ops.auto_backend("cpu", graph=True)


def test_prepare_sets_the_interpreter_for_triton_on_cpu(monkeypatch):
    import os

    from fastgan import backends
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    backends.prepare("triton", "cuda")
    assert "TRITON_INTERPRET" not in os.environ
    backends.prepare("triton", "cpu")
    assert os.environ["TRITON_INTERPRET"] == "1"
    monkeypatch.setenv("TRITON_INTERPRET", "0")   # an explicit choice is kept
    backends.prepare("triton", "cpu")
    assert os.environ["TRITON_INTERPRET"] == "0"


def test_kernels_come_from_the_mapped_folder():
    """fastgan.kernels is the top-level kernels/ folder (a stale fastgan/kernels/ directory
    would shadow it as an empty namespace package)."""
    pytest.importorskip("triton")
    import fastgan.kernels
    assert fastgan.kernels.__file__ is not None
    assert fastgan.kernels.__file__.replace("\\", "/").endswith("kernels/__init__.py")
