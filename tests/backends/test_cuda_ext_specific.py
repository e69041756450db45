"""The cuda backend's own behaviour (the compiled extension fastgan._C): the operators' argument
checks called directly, torch.library.opcheck on each operator, torch.compile (aot_eager)
tracing, CPU determinism, the registry's entries and the CPU size policy, the NaN poison, TF32
matmuls and CUDA graph capture. Parity lives in tests/ops.

If the extension is not built these tests skip -- unless FASTGAN_REQUIRE_EXT=1 (``make test``),
where a missing extension is a failure.
"""
from __future__ import annotations

import pytest
import torch

import ops_harness as H
from fastgan import ops

if not H.HAS_EXT:
    pytest.skip(f"fastgan._C is not available: {ops.load_error('cuda')}", allow_module_level=True)

from fastgan import _C  # noqa: E402
from fastgan.backends import cuda as CB  # noqa: E402
from fastgan.backends.cuda import _cpu_policy as CP  # noqa: E402

from test_linear_act import term_sizes_of  # noqa: E402

FG = torch.ops.fastgan
R = H.R
check = H.check_floored
DEVICES = H.backend_devices("cuda")


@pytest.fixture(autouse=True)
def cuda_setup(monkeypatch):
    with H.cuda_setup(monkeypatch):
        yield


@pytest.mark.gpu
@pytest.mark.skipif(not H.available("cuda", "cuda"), reason="needs a GPU and the CUDA kernels")
@pytest.mark.parametrize("n,k,m", [(64, 100, 256), (10, 48, 33), (128, 784, 1)])
def test_linear_act_tf32(n, k, m, seed):
    """With TF32 on (fastgan's default for fp32 on a GPU) cuBLAS rounds the operands to 10-bit
    mantissas: each result within ~1e-3 of the size of its terms, never NaN."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        x = H.leaf(torch.randn(n, k), torch.float32, "cuda")
        w = H.leaf(torch.randn(m, k) / k ** 0.5, torch.float32, "cuda")
        b = H.leaf(torch.randn(m), torch.float32, "cuda")
        xa, wa = x.detach().double().cpu().abs(), w.detach().double().cpu().abs()
        H.run_pair("cuda", lambda x, w, b: ops.linear_act(x, w, b, 0.2),
                   lambda x, w, b: R.linear_act(x, w, b, 0.2),
                   [x, w, b], torch.float32, "cuda", seed, ["x", "weight", "bias"], tol=2e-3,
                   pre_act=lambda x, w, b: R.linear_act(x, w, b, None),
                   grad_floors=term_sizes_of(xa, wa),
                   out_floor=(xa @ wa.t() + b.detach().double().cpu().abs()).norm().item())
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def test_bn_act_errors():
    with pytest.raises(RuntimeError, match="more than 1 value per channel"):
        CB.bn_act(torch.randn(1, 4), None, None, None, None, True, 0.1, 1e-5, None)
    with pytest.raises(RuntimeError, match="fastgan::bn_stats.*running_mean"):
        CB.bn_act(torch.randn(3, 4), None, None, torch.zeros(5), torch.ones(4), True, 0.1, 1e-5, None)
    with pytest.raises(RuntimeError, match="required when training=False"):
        CB.bn_act(torch.randn(3, 4), None, None, None, None, False, 0.1, 1e-5, None)
    with pytest.raises(RuntimeError, match="fastgan::bn_act.*weight"):
        CB.bn_act(torch.randn(3, 4), torch.ones(3), None, None, None, True, 0.1, 1e-5, None)


def test_gan_loss_errors():
    with pytest.raises(ValueError, match="kind"):
        CB.gan_loss(torch.randn(3), 1.0, "wasserstein", "mean")
    with pytest.raises(ValueError, match="reduction"):
        CB.gan_loss(torch.randn(3), 1.0, "bce", "none")
    with pytest.raises(RuntimeError, match="fastgan::gan_loss: unknown kind"):
        FG.gan_loss(torch.randn(3), None, 1.0, "wasserstein", "mean")
    with pytest.raises(RuntimeError, match="fastgan::gan_loss: logits must be float32"):
        FG.gan_loss(torch.ones(3, dtype=torch.int32), None, 1.0, "bce", "mean")


def test_argument_errors_name_op_and_argument():
    x = torch.randn(4, 3)
    with pytest.raises(RuntimeError, match="fastgan::bias_act: bias must be 1-D with 3"):
        FG.bias_act(x, torch.randn(4), 2, 0.2, 1)
    with pytest.raises(RuntimeError, match="fastgan::bias_act: x must be float32, bfloat16 or float64"):
        FG.bias_act(torch.ones(4, 3, dtype=torch.int64), None, 2, 0.2, 1)
    with pytest.raises(RuntimeError, match="fastgan::bias_act: act must be"):
        FG.bias_act(x, None, 2, -0.5, 1)
    with pytest.raises(RuntimeError, match="fastgan::bias_act: act must be"):
        FG.bias_act(x, None, 5, 0.0, 1)
    with pytest.raises(RuntimeError, match="fastgan::linear_act: x has 3 features"):
        FG.linear_act(x, torch.randn(5, 4), None, 2, 0.2)
    with pytest.raises(RuntimeError, match="fastgan::linear_act: weight is"):
        FG.linear_act(x, torch.randn(5, 3, dtype=torch.float64), None, 2, 0.2)
    with pytest.raises(RuntimeError, match="fastgan::bias_act_backward: grad has shape"):
        FG.bias_act_backward(torch.randn(3, 3), x, 2, 0.2, 1, True)


def _opcheck_samples(device):
    d = dict(device=device)
    x4 = torch.randn(3, 5, 4, 3, **d, requires_grad=True)
    x4cl = torch.randn(3, 5, 4, 3, **d).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    x2 = torch.randn(6, 7, **d, requires_grad=True)
    b5 = torch.randn(5, **d, requires_grad=True)
    b7 = torch.randn(7, **d, requires_grad=True)
    w = torch.randn(7, 6, **d, requires_grad=True)
    mean, invstd = FG.bn_stats(x4.detach(), None, None, True, 0.1, 1e-5)
    y = FG.bias_act(x2.detach(), b7.detach(), 2, 0.2, 1)
    yt = FG.bias_act(x2.detach(), b7.detach(), 3, 0.0, 1)
    return [  # activation codes (fastgan.ops.activation): 0 identity, 1 ReLU, 2 leaky, 3 tanh, 4 sigmoid
        (FG.bias_act.default, (x4, b5, 2, 0.2, 1)),
        (FG.bias_act.default, (x4cl, b5, 1, 0.0, 1)),
        (FG.bias_act.default, (x2, None, 2, 0.01, 1)),
        (FG.bias_act.default, (x4, b5, 3, 0.0, 1)),
        (FG.bias_act.default, (x4cl, b5, 4, 0.0, 1)),
        (FG.bias_act_backward.default, (torch.randn(6, 7, **d), y, 2, 0.2, 1, True)),
        (FG.bias_act_backward.default, (torch.randn(6, 7, **d), y, 2, 0.2, 1, False)),
        (FG.bias_act_backward.default, (torch.randn(6, 7, **d, requires_grad=True), yt, 3, 0.0, 1, True)),
        (FG.linear_act.default, (torch.randn(4, 6, **d, requires_grad=True), w, b7, 2, 0.2)),
        (FG.linear_act.default, (torch.randn(4, 6, **d, requires_grad=True), w, b7, 0, 0.0)),
        (FG.linear_act.default, (torch.randn(2, 4, 6, **d, requires_grad=True), w, None, 1, 0.0)),
        (FG.linear_act.default, (torch.randn(4, 6, **d, requires_grad=True), w, b7, 4, 0.0)),
        (FG.linear_act.default, (torch.randn(4, 6, **d), w.detach(), b7.detach(), 2, 0.2, torch.randn(7, **d),
                                 torch.rand(7, **d) + 0.1, torch.randn(7, **d), torch.randn(7, **d), 1e-3)),
        (FG.bn_stats.default, (x4.detach(), torch.zeros(5, **d), torch.ones(5, **d), True, 0.1, 1e-5)),
        (FG.bn_stats.default, (x4cl.detach(), torch.zeros(5, **d), torch.ones(5, **d), False, 0.1, 1e-5)),
        (FG.bn_act.default, (x4, torch.rand(5, **d, requires_grad=True), b5, mean, invstd, 0.2, True)),
        (FG.bn_act.default, (x4cl, None, None, mean, invstd, None, False)),
        (FG.bn_stats.default, (x4.detach(), torch.zeros(5, **d), torch.ones(5, **d), True, 0.1, 1e-5,
                               False)),
        # eval in one launch: the running statistics and eps given to the apply op
        (FG.bn_act.default, (x4, torch.rand(5, **d, requires_grad=True), b5, torch.randn(5, **d),
                             torch.rand(5, **d) + 0.5, 0.2, False, 1e-5)),
        (FG.bn_act_backward.default, (torch.randn(3, 5, 4, 3, **d), x4.detach(), None, b5.detach(),
                                      mean, invstd, 0.0, True)),
        (FG.gan_loss.default, (torch.randn(8, 1, **d, requires_grad=True), None, 1.0, "bce", "mean")),
        (FG.gan_loss.default, (torch.randn(8, **d, requires_grad=True), torch.tensor(0.9, **d), 0.0,
                               "lsgan", "sum")),
    ]


@pytest.mark.parametrize("backend,device", DEVICES)
def test_opcheck(backend, device):
    _C._set_debug_poison(False)  # opcheck compares eager runs; poison is irrelevant there
    for op, args in _opcheck_samples(device):
        torch.library.opcheck(op, args)


def test_torch_compile_traces_ops(seed):
    torch._dynamo.reset()
    lin_w, lin_b = torch.randn(8, 6, requires_grad=True), torch.randn(8, requires_grad=True)
    g, bb = torch.rand(8, requires_grad=True), torch.randn(8, requires_grad=True)
    rm, rv = torch.zeros(8), torch.ones(8)

    def f(x):
        h = CB.linear_act(x, lin_w, lin_b, 0.2)
        h = CB.bn_act(h, g, bb, rm, rv, True, 0.1, 1e-5, 0.0)
        h = CB.bias_act(h, bb, 0.2, 1)
        return CB.gan_loss(h.sum(1), 1.0, "bce", "mean")

    x = torch.randn(5, 6)
    eager = f(x)
    eager.backward()
    ge = [t.grad.clone() for t in (lin_w, lin_b, g, bb)]
    rm_e = rm.clone()
    for t in (lin_w, lin_b, g, bb):
        t.grad = None
    rm.zero_(), rv.fill_(1.0)
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    out.backward()
    check("compiled loss", out, eager, 1e-6, seed)
    for a, t in zip(ge, (lin_w, lin_b, g, bb)):
        check("compiled grad", t.grad, a, 1e-6, seed)
    check("compiled running_mean", rm, rm_e, 1e-6, seed)


def test_cpu_results_are_deterministic(seed):
    x = torch.randn(32, 24, 9, 9, requires_grad=True)
    w, b = torch.rand(24, requires_grad=True), torch.randn(24, requires_grad=True)
    gy = torch.randn(32, 24, 9, 9)
    outs = []
    for _ in range(2):
        y = CB.bn_act(x, w, b, None, None, True, 0.1, 1e-5, 0.2)
        gx, gw, gb = torch.autograd.grad(y, (x, w, b), gy)
        outs.append((y, gx, gw, gb))
    for a, c in zip(*outs):
        assert torch.equal(a, c)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        y1 = CB.bn_act(x, w, b, None, None, True, 0.1, 1e-5, 0.2)
    finally:
        torch.set_num_threads(n)
    assert torch.equal(y1, outs[0][0]), "result depends on the thread count"


def test_registry_uses_extension_on_cpu(monkeypatch):
    with ops.use_backend("cuda"):
        for op in ops.OPS:
            impl = ops.lookup(op, "cpu")
            assert impl is getattr(CB, op + "_cpu") and impl.fast is getattr(CB, op)
            if CB.HAS_CUDA_KERNELS:
                assert ops.lookup(op, "cuda") is getattr(CB, op)
    assert "cuda" in ops.available_backends("cpu")
    assert ops.auto_backend("cpu") == "cuda"
    info = CB.build_info()
    assert info["cuda"] == CB.HAS_CUDA_KERNELS
    assert info["torch_version"].split(".")[:2] == torch.__version__.split(".")[:2]


def test_cpu_size_policy(monkeypatch):
    """The cuda backend on CPU runs the C++ kernels on large tensors, the reference on small ones
    (the faster of the two, measured), and FASTGAN_CPU_KERNELS overrides the choice."""
    calls = []
    small, big = torch.randn(4, 3), torch.randn(4, CB.CPU_MIN_NUMEL["bias_act"] // 4 + 1)
    monkeypatch.setenv("FASTGAN_CPU_KERNELS", "auto")
    real_fast, real_ref = CB.bias_act, ops.lookup("bias_act", "cpu", "reference")
    wrapped = CP._cpu_pick("bias_act", lambda *a: calls.append("fast") or real_fast(*a),
                           lambda *a: calls.append("ref") or real_ref(*a), lambda x, *a: x.numel())
    wrapped(small, None, 0.2, 1)
    wrapped(big, None, 0.2, 1)
    monkeypatch.setenv("FASTGAN_CPU_KERNELS", "always")
    wrapped(small, None, 0.2, 1)
    monkeypatch.setenv("FASTGAN_CPU_KERNELS", "never")
    wrapped(big, None, 0.2, 1)
    assert calls == ["ref", "fast", "fast", "ref"]


def test_poison_is_active():
    # the NaN fill really happens: a bias_act with zero elements allocates nothing, a real one
    # overwrites every element (checked by the isfinite in every parity test)
    assert _C._debug_poison()


@pytest.mark.gpu
@pytest.mark.skipif(not H.available("cuda", "cuda"), reason="needs a GPU and the CUDA kernels")
def test_cuda_graph_capture_matches_eager(seed):
    from fastgan.nn import BatchNormAct, ConvBNAct, FusedLinearAct
    dev = "cuda"
    net = torch.nn.Sequential(FusedLinearAct(32, 6 * 8 * 8, 0.2), torch.nn.Unflatten(1, (6, 8, 8)),
                              ConvBNAct(6, 8, 3, 1, 1, bn=True, slope=0.0),
                              ConvBNAct(8, 4, 3, 1, 1, bn=False, slope=0.2), torch.nn.Flatten(),
                              BatchNormAct(4 * 8 * 8, None)).to(dev)
    x = torch.randn(16, 32, device=dev)
    params = list(net.parameters())

    def step():
        with ops.use_backend("cuda"):
            loss = CB.gan_loss(net(x).sum(1), 1.0, "bce", "mean")
        grads = torch.autograd.grad(loss, params)
        return loss, grads

    state = {k: v.clone() for k, v in net.state_dict().items()}
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(s)
    net.load_state_dict(state)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        loss_g, grads_g = step()
    net.load_state_dict(state)
    g.replay()
    torch.cuda.synchronize()
    buf_g = {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    loss_e, grads_e = step()
    check("graph loss", loss_g, loss_e, 1e-6, seed)
    for a, b in zip(grads_g, grads_e):
        check("graph grad", a, b, 1e-6, seed)
    for k, v in net.state_dict().items():
        check(f"graph buffer {k}", buf_g[k], v, 1e-6, seed)
