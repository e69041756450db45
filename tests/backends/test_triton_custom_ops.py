"""The Triton backend's torch.library wiring: the custom ops' schemas and fake functions
(opcheck), parity through the custom-op path (the torch.compile path; eager calls take an
autograd.Function over the same launchers), torch.compile tracing, CUDA graph capture, and where
the registry offers the backend."""
from __future__ import annotations

import os

import pytest
import torch

import ops_harness as H
from fastgan import ops

pytest.importorskip("triton")

from test_bias_act import bias_act_case  # noqa: E402
from test_bn_act import bn_case  # noqa: E402
from test_gan_loss import gan_loss_case  # noqa: E402
from test_linear_act import linear_case  # noqa: E402

from fastgan.backends import triton as TB  # noqa: E402
from fastgan.backends.triton import _policy as TP  # noqa: E402

check = H.check


@pytest.fixture(autouse=True)
def triton_setup(monkeypatch):
    with H.triton_setup(monkeypatch):
        yield


def test_opcheck_custom_ops():
    """Schema, fake (meta) functions and autograd registration of the custom ops."""
    H.interp_only()
    ops.ensure_loaded("triton")
    from torch.library import opcheck
    tests = ("test_schema", "test_autograd_registration", "test_faketensor")
    x, w, b = torch.randn(9, 5, requires_grad=True), torch.randn(6, 5, requires_grad=True), torch.randn(6, requires_grad=True)
    # activation codes (fastgan.ops.activation): 0 identity, 2 LeakyReLU, 3 tanh, 4 sigmoid
    opcheck(torch.ops.fastgan_triton.linear_act.default, (x, w, b, 2, 0.2), test_utils=tests)
    opcheck(torch.ops.fastgan_triton.linear_act.default, (x, w[:1], None, 0, 0.0), test_utils=tests)
    opcheck(torch.ops.fastgan_triton.linear_act.default, (x, w, b, 3, 0.0), test_utils=tests)
    bn = (torch.randn(6), torch.rand(6) + 0.1, torch.randn(6), torch.randn(6), 1e-3)
    opcheck(torch.ops.fastgan_triton.linear_act_bn_eval.default, (x.detach(), w.detach(), b.detach(), 2, 0.2, *bn),
            test_utils=("test_schema", "test_faketensor"))
    x4 = torch.randn(2, 3, 4, 4, requires_grad=True)
    opcheck(torch.ops.fastgan_triton.bias_act.default, (x4, torch.randn(3, requires_grad=True), 2, 0.2, 1), test_utils=tests)
    opcheck(torch.ops.fastgan_triton.bias_act.default, (x4, torch.randn(3, requires_grad=True), 4, 0.0, 1), test_utils=tests)
    opcheck(torch.ops.fastgan_triton.gan_loss.default, (torch.randn(8, 1, requires_grad=True), None, 1.0, "bce", "mean", True), test_utils=tests)
    opcheck(torch.ops.fastgan_triton.bn_act_forward.default,
            (x4.detach(), torch.rand(3), torch.randn(3), torch.zeros(3), torch.ones(3), True, 0.1, 1e-5, 0.2),
            test_utils=("test_schema", "test_faketensor"))


@pytest.fixture
def custom_op_path(monkeypatch):
    """Route eager calls through the torch.library custom ops (the torch.compile path)."""
    monkeypatch.setattr(TP, "EAGER_FAST_PATH", False)


@pytest.mark.parametrize("backend,device", H.backend_devices("triton"))
def test_custom_op_path_parity(backend, device, seed, custom_op_path, monkeypatch):
    """The same parity checks through the custom ops (the eager default is an autograd.Function
    over the same launchers): every op, both backward kinds."""
    from fastgan.kernels import bn_act as BN
    f32 = torch.float32
    for shape in [(7, 33, 65), (65, 70, 33), (40, 65, 1)]:
        linear_case(backend, device, f32, *shape, 0.2, True, None, seed)
    linear_case(backend, device, f32, 40, 65, 1, None, False, None, seed, need_x_grad=False)
    bias_act_case(backend, device, f32, (70, 3, 9, 9), 1, "nchw", 0.2, True, seed)
    bias_act_case(backend, device, f32, (5, 6, 7, 3), 1, "channels_last", None, True, seed)
    bn_case(backend, device, f32, (5, 6, 7, 3), "channels_last", 0.2, True, "gamma_beta", seed)
    bn_case(backend, device, f32, (33, 7), "nchw", 0.0, False, "beta", seed)
    monkeypatch.setattr(BN, "FORCE_SPLIT", 3)
    bn_case(backend, device, f32, (17, 5, 4, 4), "nchw", 0.01, True, "gamma_beta", seed)
    for kind in ("bce", "lsgan"):
        gan_loss_case(backend, device, f32, (3000,), kind, "mean", "tensor0.9", seed)


@pytest.mark.parametrize("backend,device", H.backend_devices("triton"))
def test_gan_loss_no_grad_needed_skips_the_gradient(backend, device):
    z = torch.randn(10, device=device)
    loss, g = torch.ops.fastgan_triton.gan_loss(z, None, 1.0, "bce", "mean", False)
    assert g.numel() == 0
    assert torch.isfinite(loss)


@pytest.mark.gpucheck
def test_torch_compile_graph(seed):
    """torch.compile traces the custom ops through their fake implementations (aot_eager: no
    codegen) and matches eager, running stats included."""
    dev = "cpu" if H.INTERP else "cuda"
    torch._dynamo.reset()
    x = torch.randn(33, 20, device=dev)
    w1 = torch.randn(40, 20, device=dev, requires_grad=True)
    g1, b1 = torch.ones(40, device=dev, requires_grad=True), torch.zeros(40, device=dev, requires_grad=True)
    w2 = torch.randn(1, 40, device=dev, requires_grad=True)
    img, cb = torch.randn(2, 3, 4, 4, device=dev), torch.randn(3, device=dev, requires_grad=True)

    def f(rm, rv):
        with ops.use_backend("triton"):
            h = ops.linear_act(x, w1, None, 0.2)
            h = ops.bn_act(h, g1, b1, rm, rv, True, 0.1, 1e-5, 0.0)
            loss = ops.gan_loss(ops.linear_act(h, w2, None, None), 0.9, "bce", "mean")
            return loss + ops.bias_act(img, cb, 0.2, 1).square().mean()

    params = (w1, g1, b1, w2, cb)
    res = []
    for fn in (f, torch.compile(f, backend="aot_eager", fullgraph=False)):
        rm, rv = torch.zeros(40, device=dev), torch.ones(40, device=dev)
        for p in params:
            p.grad = None
        loss = fn(rm, rv)
        loss.backward()
        res.append([loss.detach().clone(), rm, rv] + [p.grad.clone() for p in params])
    for a, b in zip(*res):
        check("compiled vs eager", a, b, 1e-6, seed)


def test_registry_has_triton_everywhere_it_should():
    dev = "cpu" if H.INTERP else "cuda"
    assert "triton" in ops.available_backends(dev)
    assert TB.DEVICE_TYPES == (("cuda", "cpu") if os.environ.get("TRITON_INTERPRET") == "1" else ("cuda",))


@pytest.mark.gpu
@pytest.mark.skipif(not H.available("triton", "cuda"), reason="needs CUDA")
def test_gpu_cuda_graph_capture(seed):
    """Forward + backward of every op captured in a CUDA graph and replayed: same results as
    eager (no host syncs, no value-dependent allocation)."""
    dev = "cuda"
    x = torch.randn(64, 100, device=dev)
    w1 = torch.randn(256, 100, device=dev, requires_grad=True)
    g1, b1 = torch.ones(256, device=dev, requires_grad=True), torch.zeros(256, device=dev, requires_grad=True)
    rm, rv = torch.zeros(256, device=dev), torch.ones(256, device=dev)
    w2 = torch.randn(1, 256, device=dev, requires_grad=True)
    cb = torch.randn(8, device=dev, requires_grad=True)
    img = torch.randn(16, 8, 8, 8, device=dev)
    target = torch.tensor(0.9, device=dev)
    params = (w1, g1, b1, w2, cb)

    def step():
        for p in params:
            p.grad = None
        with ops.use_backend("triton"):
            h = ops.linear_act(x, w1, None, 0.2)
            h = ops.bn_act(h, g1, b1, rm, rv, True, 0.1, 1e-5, 0.0)
            logit = ops.linear_act(h, w2, None, None)
            c = ops.bias_act(img, cb, 0.2, 1)
            loss = ops.gan_loss(logit, target, "bce", "mean") + c.square().mean()
        loss.backward()
        return loss

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):          # autotune + compile outside the capture
            step()
    torch.cuda.current_stream().wait_stream(s)
    rm.zero_(), rv.fill_(1.0)
    eager_loss = step().detach().clone()
    eager_grads = [p.grad.clone() for p in params]
    rm_e = rm.clone()
    rm.zero_(), rv.fill_(1.0)
    graph = torch.cuda.CUDAGraph()
    for p in params:
        p.grad = None
    with torch.cuda.graph(graph):
        static_loss = step()
    rm.zero_(), rv.fill_(1.0)
    graph.replay()
    torch.cuda.synchronize()
    check("loss", static_loss, eager_loss, 1e-6, seed)
    for p, g in zip(params, eager_grads):
        check("grad", p.grad, g, 1e-6, seed)
    check("running_mean", rm, rm_e, 1e-6, seed)
