"""bn_act = act(batchnorm(x)), running statistics updated in place: parity of every backend
against the float64 reference, forward, every gradient and the running statistics (the harness:
ops_harness.py). The case lists are per backend (the Triton interpreter is slow)."""
from __future__ import annotations

import pytest
import torch

from fastgan import ops
from ops_harness import (DTYPES, GC, R, SLOPES, available, backend_devices, check, check_floored,
                         interp_only, leaf, make_4d, make_layout, only, run_pair, tolerance)

TRITON = backend_devices("triton")
CUDA = backend_devices("cuda")
_case_id = lambda c: f"{'x'.join(map(str, c[0]))}-{c[1]}"  # noqa: E731


def _bn_module():
    from fastgan.kernels import bn_act as BN   # FORCE_SPLIT: the Triton two-kernel paths
    return BN


# ------------------------------------------------------------------------------ Triton cases

BN_SHAPES = [  # (shape, layout)
    ((33, 7), "nchw"),
    ((3, 5), "nchw"),                     # (N = 2 would make dX = O(eps): ill-conditioned)
    ((40, 1), "nchw"),
    ((5, 6, 7, 3), "nchw"),
    ((5, 6, 7, 3), "channels_last"),
    ((17, 5, 4, 4), "nchw"),
    ((2, 3, 9, 9), "channels_last"),
    ((6, 10, 4, 4), "slice"),
    ((30, 70), "t"),                      # [N, C] with N-contiguous (transposed) storage
]


def bn_case(backend, device, dtype, shape, layout, slope, training, affine, seed,
            wdtype=torch.float32, momentum=0.1, eps=1e-5):
    if layout == "t":
        x0 = torch.randn(shape[1], shape[0], device=device).to(dtype).t()
    else:
        x0 = make_4d(shape, layout, device, dtype)
    x0 = x0 * 2 + 0.5       # a mean away from zero and a std away from one
    C = x0.shape[1]
    w0 = (torch.rand(C, device=device) + 0.5).to(wdtype) if affine == "gamma_beta" else None
    b0 = torch.randn(C, device=device).to(wdtype) if affine != "none" else None
    rm0 = torch.randn(C, device=device)
    rv0 = torch.rand(C, device=device) + 0.5
    x = leaf(x0)
    w = leaf(w0) if w0 is not None else None
    b = leaf(b0) if b0 is not None else None
    rm, rv = rm0.clone(), rv0.clone()
    with ops.use_backend(backend):
        y = ops.bn_act(x, w, b, rm, rv, training, momentum, eps, slope)
    assert y.shape == x0.shape and y.dtype == dtype
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(y)
    y.backward(g)
    xr = leaf(x0.double())
    wr = leaf(w0.double()) if w0 is not None else None
    br = leaf(b0.double()) if b0 is not None else None
    rmr, rvr = rm0.double(), rv0.double()
    yr = R.bn_act(xr, wr, br, rmr, rvr, training, momentum, eps, slope)
    yr.backward(g.double())
    tol = tolerance(backend, device, dtype)
    check("y", y, yr, tol, seed)
    # dx = gamma*rstd*(g' - mean(g') - xhat*mean(g'*xhat)): with few samples per channel the
    # projection cancels most of g', so its rounding is measured against gamma*rstd*|g|.
    red = [d for d in range(x0.dim()) if d != 1]
    rstd = (xr.detach().var(dim=red, unbiased=False, keepdim=True) + eps).rsqrt() \
        if training else (rvr.view([-1 if d == 1 else 1 for d in range(x0.dim())]) + eps).rsqrt()
    gam = wr.detach().view([-1 if d == 1 else 1 for d in range(x0.dim())]) if wr is not None \
        else 1.0
    check("dx", x.grad, xr.grad, tol, seed, scale=(g.double() * rstd * gam).norm().item())
    # dgamma = sum(g' * xhat), dbeta = sum(g') per channel: sums whose terms may cancel (40
    # samples summing to 0.04), measured against the sum of the terms' magnitudes (|g'| <= |g|).
    xhat = (xr.detach() - xr.detach().mean(dim=red, keepdim=True)) * rstd if training else \
        (xr.detach() - rmr.view([-1 if d == 1 else 1 for d in range(x0.dim())])) * rstd
    if w is not None:
        check("dgamma", w.grad, wr.grad, tol, seed,
              scale=(g.double().abs() * xhat.abs()).sum(red).norm().item())
    if b is not None:
        check("dbeta", b.grad, br.grad, tol, seed, scale=g.double().abs().sum(red).norm().item())
    check("running_mean", rm, rmr, 1e-5, seed)
    check("running_var", rv, rvr, 1e-5, seed)


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("slope", SLOPES)
@pytest.mark.parametrize("case", BN_SHAPES, ids=_case_id)
def test_bn_act_train(backend, device, case, slope, seed):
    bn_case(backend, device, torch.float32, *case, slope, True, "gamma_beta", seed)


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("split", [2, 3])
@pytest.mark.parametrize("case", [((17, 5, 4, 4), "nchw"), ((33, 7), "nchw"),
                                  ((5, 6, 7, 3), "channels_last")], ids=_case_id)
def test_bn_act_split_paths(backend, device, case, split, seed, monkeypatch):
    """The two-kernel paths (partial sums combined by a second kernel), forward and backward."""
    monkeypatch.setattr(_bn_module(), "FORCE_SPLIT", split)
    bn_case(backend, device, torch.float32, *case, 0.2, True, "gamma_beta", seed)
    bn_case(backend, device, torch.float32, *case, 0.0, False, "gamma_beta", seed)


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("slope", [None, 0.2])
@pytest.mark.parametrize("case", [((33, 7), "nchw"), ((5, 6, 7, 3), "channels_last")], ids=_case_id)
def test_bn_act_eval(backend, device, case, slope, seed):
    bn_case(backend, device, torch.float32, *case, slope, False, "gamma_beta", seed)


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("affine", ["beta", "none"])
def test_bn_act_affine_variants(backend, device, affine, seed):
    bn_case(backend, device, torch.float32, (5, 6, 7, 3), "nchw", 0.2, True, affine, seed)


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("wdtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", [((33, 7), "nchw"), ((5, 6, 7, 3), "channels_last")], ids=_case_id)
def test_bn_act_bf16(backend, device, case, wdtype, seed):
    bn_case(backend, device, torch.bfloat16, *case, 0.2, True, "gamma_beta", seed, wdtype=wdtype)


@pytest.mark.parametrize("backend,device", TRITON)
def test_bn_act_without_running_stats(backend, device, seed):
    x = leaf(torch.randn(9, 4, device=device))
    with ops.use_backend(backend):
        y = ops.bn_act(x, None, None, None, None, True, 0.1, 1e-5, 0.0)
    y.sum().backward()
    xr = leaf(x.detach().double())
    yr = R.bn_act(xr, None, None, None, None, True, 0.1, 1e-5, 0.0)
    yr.sum().backward()
    check("y", y, yr, 1e-5, seed)
    check("dx", x.grad, xr.grad, 1e-5, seed)


@pytest.mark.parametrize("backend", only("triton"))
def test_bn_act_rejects_single_value_per_channel(backend):
    with ops.use_backend(backend), pytest.raises(ValueError, match="more than 1 value"):
        ops.bn_act(torch.randn(1, 3), None, None, None, None, True, 0.1, 1e-5, None)


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_linear_then_bn_mlp_order(backend, device, slope, seed):
    """mlp's order: linear_act(slope) then bn (no activation after the BN)."""
    N, K, M = 33, 20, 40
    x0, w0, b0 = torch.randn(N, K, device=device), torch.randn(M, K, device=device), torch.randn(M, device=device)
    gm0, bt0 = torch.rand(M, device=device) + 0.5, torch.randn(M, device=device)
    ts = [leaf(t) for t in (x0, w0, b0, gm0, bt0)]
    rs = [leaf(t.double()) for t in (x0, w0, b0, gm0, bt0)]
    rm, rv = torch.zeros(M, device=device), torch.ones(M, device=device)
    rmr, rvr = rm.double(), rv.double()
    with ops.use_backend(backend):
        y = ops.bn_act(ops.linear_act(ts[0], ts[1], ts[2], slope), ts[3], ts[4], rm, rv, True, 0.1, 1e-5, None)
    g = torch.randn_like(y)
    y.backward(g)
    yr = R.bn_act(R.linear_act(rs[0], rs[1], rs[2], slope), rs[3], rs[4], rmr, rvr, True, 0.1, 1e-5, None)
    yr.backward(g.double())
    tol = tolerance(backend, device, torch.float32, matmul=True)
    check("y", y, yr, tol, seed)
    for name, a, r in zip(("dx", "dw", "db", "dgamma", "dbeta"), ts, rs):
        check(name, a.grad, r.grad, tol, seed)
    check("running_mean", rm, rmr, tol, seed)
    check("running_var", rv, rvr, tol, seed)


@pytest.mark.parametrize("backend", only("triton"))
@pytest.mark.parametrize("training", [True, False])
def test_gradcheck_bn_act(backend, training, monkeypatch):
    interp_only()
    x = torch.randn(4, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    g = (torch.rand(3, dtype=torch.float64) + 0.5).requires_grad_()
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    for split in (None, 2):
        monkeypatch.setattr(_bn_module(), "FORCE_SPLIT", split)
        with ops.use_backend(backend):
            assert torch.autograd.gradcheck(
                lambda *a: ops.bn_act(*a, None if training else rm, None if training else rv,
                                      training, 0.1, 1e-5, 0.2), (x, g, b), **GC)


@pytest.mark.gpu
@pytest.mark.skipif(not available("triton", "cuda"), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["triton"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("shape", [(128, 512, 4, 4), (128, 64, 32, 32), (16, 1, 56, 56), (16, 50, 56, 56),
                                   (64, 1024), (30, 6272)], ids=lambda s: "x".join(map(str, s)))
def test_gpu_bn_act_real_shapes(backend, shape, layout, seed):
    if len(shape) == 2 and layout == "channels_last":
        pytest.skip("2-D")
    bn_case(backend, "cuda", torch.float32, shape, layout, 0.2, True, "gamma_beta", seed)


# -------------------------------------------------------------------------------- cuda cases

BN_CASES = [
    ((2, 1), "contiguous"),
    ((7, 13), "contiguous"),
    ((64, 256), "contiguous"),
    ((3, 1, 5, 7), "contiguous"),
    ((3, 5, 7, 9), "contiguous"),
    ((3, 5, 7, 9), "channels_last"),
    ((1, 3, 1, 2), "contiguous"),
    ((4, 8, 4, 4), "channels_last"),
    ((2, 6, 4, 3), "noncontig"),
    ((5, 16, 8, 8), "contiguous"),
    ((2, 3, 4, 5, 3), "contiguous"),  # [N, C, D, H, W]
]
AFFINES = ["gamma_beta", "beta", "none"]


def bn_inputs(shape, layout, dtype, device, affine):
    c = shape[1]
    count = 1
    for n in shape:
        count *= n
    count //= c
    # With 2-4 values per channel and var >> eps, d(out)/dx cancels almost exactly (the outputs
    # are pinned near +-1): float32 BN, torch's included, loses ~1e-3 there. Keep var ~ eps.
    scale = 0.03 if count <= 4 else 2.0
    x = (torch.randn(shape) + 0.5) * scale
    x = leaf(x, dtype, device)
    if layout != "contiguous":
        x = make_layout(x.detach(), layout).requires_grad_(True)
    w = leaf(torch.rand(c) + 0.5, dtype, device) if affine == "gamma_beta" else None
    b = leaf(torch.randn(c), dtype, device) if affine != "none" else None
    return x, w, b


@pytest.mark.parametrize("backend,device", CUDA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("slope", SLOPES)
@pytest.mark.parametrize("shape,layout", BN_CASES)
@pytest.mark.parametrize("affine", AFFINES)
def test_bn_act_training(backend, device, dtype, slope, shape, layout, affine, seed):
    x, w, b = bn_inputs(shape, layout, dtype, device, affine)
    c = shape[1]
    sdt = torch.float64 if dtype == torch.float64 else torch.float32
    rm0 = torch.randn(c, device=device, dtype=sdt)
    rv0 = torch.rand(c, device=device, dtype=sdt) + 0.5
    rm, rv = rm0.clone(), rv0.clone()
    rm_ref, rv_ref = rm0.double().cpu(), rv0.double().cpu()
    mom, eps = 0.2, 1e-3

    # Conditioning with few samples per channel (shape (2, 1): 2 values, maybe close): x - mean
    # cancels, so xhat carries a rounding of ~eps32 * |x| * rstd (``cond`` below) on top of |xhat|,
    # and the sums over a channel (dgamma = sum(g' * xhat), dbeta = sum(g')) and dx's
    # projection gamma*rstd*(g' - mean(g') - xhat*mean(g'*xhat)) may cancel. Each result's
    # rounding is measured against the size of its terms, not its (possibly tiny) value.
    def sizes(xr, wr):
        red = [d for d in range(xr.dim()) if d != 1]
        rstd = (xr.var(red, unbiased=False, keepdim=True) + eps).rsqrt()
        xhat = (xr - xr.mean(red, keepdim=True)) * rstd
        gamma = wr.view([-1 if d == 1 else 1 for d in range(xr.dim())]).abs() \
            if wr is not None else 1.0
        return red, rstd, gamma, xhat.abs() + xr.abs() * rstd

    def term_sizes(refs, gy):
        red, rstd, gamma, cond = sizes(refs[0], refs[1])
        return {"x": (gy.abs() * rstd * gamma * (1 + cond)).norm().item(),
                "weight": (gy.abs() * cond).sum(red).norm().item(),
                "bias": gy.abs().sum(red).norm().item()}

    _, _, gamma, cond = sizes(x.detach().double().cpu(),
                              None if w is None else w.detach().double().cpu())
    out_floor = (gamma * cond).norm().item()

    run_pair(backend, lambda x, w, b: ops.bn_act(x, w, b, rm, rv, True, mom, eps, slope),
             lambda x, w, b: R.bn_act(x, w, b, rm_ref, rv_ref, True, mom, eps, slope),
             [x, w, b], dtype, device, seed, ["x", "weight", "bias"],
             pre_act=lambda x, w, b: R.bn_act(x, w, b, None, None, True, mom, eps, None),
             grad_floors=term_sizes, out_floor=out_floor)
    # stats are fp32 math on bf16 inputs
    tol = 1e-5 if dtype == torch.bfloat16 else tolerance(backend, device, dtype)
    check_floored("running_mean", rm, rm_ref, tol, seed)
    check_floored("running_var", rv, rv_ref, tol, seed)


@pytest.mark.parametrize("backend,device", CUDA)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("slope", [None, 0.0, 0.2])
@pytest.mark.parametrize("shape,layout", [((7, 13), "contiguous"), ((3, 5, 7, 9), "channels_last"),
                                          ((4, 6, 5, 5), "contiguous")])
def test_bn_act_eval_dtypes(backend, device, dtype, slope, shape, layout, seed):
    x, w, b = bn_inputs(shape, layout, dtype, device, "gamma_beta")
    c = shape[1]
    rm, rv = torch.randn(c, device=device), torch.rand(c, device=device) + 0.5
    rm_c, rv_c = rm.clone(), rv.clone()
    run_pair(backend, lambda x, w, b: ops.bn_act(x, w, b, rm, rv, False, 0.1, 1e-5, slope),
             lambda x, w, b: R.bn_act(x, w, b, rm.double().cpu(), rv.double().cpu(), False, 0.1, 1e-5, slope),
             [x, w, b], dtype, device, seed, ["x", "weight", "bias"],
             pre_act=lambda x, w, b: R.bn_act(x, w, b, rm.double().cpu(), rv.double().cpu(), False, 0.1, 1e-5, None))
    assert torch.equal(rm, rm_c) and torch.equal(rv, rv_c), "eval mode changed the running stats"


@pytest.mark.parametrize("backend,device", CUDA)
def test_bn_act_no_running_stats_and_big_channels(backend, device, seed):
    # no running statistics; one channel with many values (splits); many rows (chunks)
    for shape in [(16, 1, 56, 56), (3000, 5), (2, 3, 130, 129)]:
        x, w, b = bn_inputs(shape, "contiguous", torch.float32, device, "gamma_beta")
        run_pair(backend, lambda x, w, b: ops.bn_act(x, w, b, None, None, True, 0.1, 1e-5, 0.0),
                 lambda x, w, b: R.bn_act(x, w, b, None, None, True, 0.1, 1e-5, 0.0),
                 [x, w, b], torch.float32, device, seed, ["x", "weight", "bias"])


@pytest.mark.parametrize("backend,device", CUDA)
def test_bn_act_mixed_param_dtypes(backend, device, seed):
    # bf16 activations with fp32 parameters and running stats (autocast-style)
    x = leaf(torch.randn(8, 6, 5, 5), torch.bfloat16, device)
    w = leaf(torch.rand(6) + 0.5, torch.float32, device)
    b = leaf(torch.randn(6), torch.float32, device)
    rm, rv = torch.zeros(6, device=device), torch.ones(6, device=device)
    with ops.use_backend(backend):
        y = ops.bn_act(x, w, b, rm, rv, True, 0.1, 1e-5, 0.2)
    assert y.dtype == torch.bfloat16
    y.float().square().sum().backward()
    assert w.grad.dtype == torch.float32 and b.grad.dtype == torch.float32
    assert x.grad.dtype == torch.bfloat16
    ref = R.bn_act(x.detach().double(), w.detach().double(), b.detach().double(), None, None,
                   True, 0.1, 1e-5, 0.2)
    check_floored("forward", y, ref, 5e-3, seed)


# ------------------------------------------ the running-variance choice, eval launches, groups

ALL = [pytest.param("reference", "cpu", id="reference-cpu")] + TRITON + CUDA
GROUP_CASES = [  # (shape, layout, groups): odd sizes, every group >= 11 values per channel
    ((34, 7), "nchw", 2),
    ((33, 5), "nchw", 3),
    ((6, 3, 5, 3), "nchw", 2),
    ((9, 4, 3, 5), "channels_last", 3),
    ((12, 5), "nchw", 1),
]


def _literal_reference(x, w, b, rm, rv, training, groups, mom, eps, slope, unbiased):
    """float64, literally: one F.batch_norm per batch chunk (chunk 0 first; eval: the whole
    batch), the running variance blended by hand with the biased or unbiased batch variance."""
    import torch.nn.functional as F
    if not training:
        return ops.act(F.batch_norm(x, rm, rv, w, b, False, mom, eps), slope)
    ys = []
    for c in x.chunk(groups, 0):
        red = [d for d in range(c.dim()) if d != 1]
        ys.append(ops.act(F.batch_norm(c, None, None, w, b, True, mom, eps), slope))
        with torch.no_grad():
            n = c.numel() // c.shape[1]
            rm.mul_(1 - mom).add_(c.mean(red) * mom)
            rv.mul_(1 - mom).add_(c.var(red, unbiased=False) * ((n / (n - 1)) if unbiased else 1.0)
                                  * mom)
    return torch.cat(ys)


@pytest.mark.parametrize("backend,device", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("training,unbiased", [(True, True), (True, False), (False, False)],
                         ids=["unbiased", "biased", "eval"])
@pytest.mark.parametrize("case", GROUP_CASES, ids=lambda c: f"{'x'.join(map(str, c[0]))}-{c[1]}-g{c[2]}")
def test_bn_act_groups_running_var_eval(backend, device, dtype, training, unbiased, case, seed):
    """groups (each chunk its own statistics, the running stats as successive calls), the biased
    running variance and eval mode: forward, every gradient and the running statistics against
    the literal float64 reference; float64 to 1e-10."""
    shape, layout, groups = case
    x0 = make_4d(shape, layout, device, dtype) * 2 + 0.5
    x0[shape[0] // max(groups, 2):] *= 3   # the chunks' statistics differ
    C = shape[1]
    w0 = (torch.rand(C, device=device) + 0.5).to(dtype)
    b0 = torch.randn(C, device=device).to(dtype)
    rm0, rv0 = torch.randn(C, device=device).to(dtype), (torch.rand(C, device=device) + 0.5).to(dtype)
    x, w, b = leaf(x0), leaf(w0), leaf(b0)
    rm, rv = rm0.clone(), rv0.clone()
    with ops.use_backend(backend):
        y = ops.bn_act(x, w, b, rm, rv, training, 0.2, 1e-3, 0.2, unbiased, groups)
    g = torch.randn_like(y)
    y.backward(g)
    xr, wr, br = (leaf(t.detach().double().cpu()) for t in (x0, w0, b0))
    rmr, rvr = rm0.double().cpu(), rv0.double().cpu()
    yr = _literal_reference(xr, wr, br, rmr, rvr, training, groups, 0.2, 1e-3, 0.2, unbiased)
    yr.backward(g.double().cpu())
    tol = 1e-10 if dtype == torch.float64 else tolerance(backend, device, dtype)
    # dx and dgamma are differences of larger terms: measured against those terms' size
    scale = g.double().norm().item() * 40
    check("y", y, yr, tol, seed)
    check("dx", x.grad, xr.grad, tol, seed, scale=scale)
    check("dgamma", w.grad, wr.grad, tol, seed, scale=scale)
    check("dbeta", b.grad, br.grad, tol, seed, scale=scale)
    check("running_mean", rm, rmr, tol, seed)
    check("running_var", rv, rvr, tol, seed)
    if not training:
        assert torch.equal(rm, rm0) and torch.equal(rv, rv0), "eval mode changed the running stats"


@pytest.mark.parametrize("backend,device", TRITON + CUDA)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bn_act_eval_is_one_launch(backend, device, dtype):
    """Eval mode: the running statistics are read by the one apply launch (no statistics op)."""
    from fastgan.benchmark.kernel_count import count_work
    x = torch.randn(8, 6, 5, 5, device=device, dtype=dtype)
    w, b = torch.rand(6, device=device, dtype=dtype) + 0.5, torch.randn(6, device=device, dtype=dtype)
    rm, rv = torch.randn(6, device=device, dtype=dtype), torch.rand(6, device=device, dtype=dtype) + 0.5
    with ops.use_backend(backend):
        n = count_work(lambda: ops.bn_act(x, w, b, rm, rv, False, 0.1, 1e-5, 0.2))
    launches = {k: v for k, v in n["by_op"].items() if k != "aten.fill_"}   # the NaN poison
    assert sum(launches.values()) == 1, n["by_op"]


@pytest.mark.parametrize("backend", ["reference"] + [p.values[0] for p in only("triton") + only("cuda")])
def test_bn_act_groups_must_divide_the_batch(backend):
    if backend != "reference" and not ops.ensure_loaded(backend):
        pytest.skip(f"no {backend}")
    with ops.use_backend(backend), pytest.raises(ValueError, match="groups"):
        ops.bn_act(torch.randn(7, 3), None, None, None, None, True, 0.1, 1e-5, None, True, 2)


@pytest.mark.parametrize("backend,device", ALL)
@pytest.mark.parametrize("unbiased", [True, False])
def test_batchnorm_layer_groups_are_separate_calls(backend, device, unbiased, seed):
    """BatchNormAct inside bn_groups(layer, 2) on [a; b] is two calls on a then b: outputs,
    parameter gradients (summed over both) and running statistics; then groups is 1 again."""
    from fastgan.nn import BatchNormAct
    from fastgan.nn.batchnorm import bn_groups
    a, b = (torch.randn(5, 4, 3, 3, device=device, dtype=torch.float64) * s + s
            for s in (1.0, 3.0))
    one = BatchNormAct(4, slope=0.2, momentum=0.3, unbiased_running_var=unbiased).double().to(device)
    two = BatchNormAct(4, slope=0.2, momentum=0.3, unbiased_running_var=unbiased).double().to(device)
    g = torch.randn(10, 4, 3, 3, device=device, dtype=torch.float64)
    xa, xb = leaf(a), leaf(b)
    with ops.use_backend(backend):
        with bn_groups(one, 2):
            x = leaf(torch.cat([a, b]))
            y = one(x)
        assert one.groups == 1
        y.backward(g)
        ya, yb = two(xa), two(xb)
        torch.cat([ya, yb]).backward(g)
    check("y", y, torch.cat([ya, yb]), 1e-10, seed)
    check("dx", x.grad, torch.cat([xa.grad, xb.grad]), 1e-10, seed)
    for name in ("weight", "bias"):
        check(f"d{name}", getattr(one, name).grad, getattr(two, name).grad, 1e-10, seed)
    for name in ("running_mean", "running_var"):
        check(name, getattr(one, name), getattr(two, name), 1e-10, seed)


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("case", GROUP_CASES[:4], ids=lambda c: f"{'x'.join(map(str, c[0]))}-{c[1]}-g{c[2]}")
def test_bn_act_groups_triton_launches(backend, device, case, seed, monkeypatch):
    """Triton: grouped BN is one launch forward and one backward (the chunks inside the
    kernel); with a forced split the op runs once per chunk, as exact."""
    from fastgan.benchmark.kernel_count import count_work
    shape, layout, groups = case
    x = leaf(make_4d(shape, layout, device, torch.float32))
    w, b = leaf(torch.rand(shape[1], device=device) + 0.5), leaf(torch.randn(shape[1], device=device))
    rm, rv = torch.zeros(shape[1], device=device), torch.ones(shape[1], device=device)
    out = {}
    with ops.use_backend(backend):
        fwd = count_work(lambda: out.update(y=ops.bn_act(x, w, b, rm, rv, True, 0.1, 1e-5, 0.2,
                                                         True, groups)))
        bwd = count_work(lambda: out["y"].backward(torch.ones_like(out["y"])))
    for n in (fwd, bwd):
        launches = {k: v for k, v in n["by_op"].items() if k.startswith("triton.")}
        assert sum(launches.values()) == 1, n["by_op"]
    monkeypatch.setattr(_bn_module(), "FORCE_SPLIT", 2)
    test_bn_act_groups_running_var_eval(backend, device, torch.float64, True, False, case, seed)
