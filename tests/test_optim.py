"""The eps-hat Adam (TF1's AdamOptimizer, Keras' Adam): the update formula in float64, no host
syncs in ``step()`` (so it can be captured), an lr written into its device tensor takes effect,
state_dict round trips bit for bit through ``torch.load(weights_only=True)``, and on a GPU a
captured step replays what eager steps compute. Then torch's form in the same one-launch kernel
(TorchFormAdam): against torch's formula in float64 and torch.optim.Adam itself, state dicts
both ways with torch.optim.Adam, and the same capture tests."""
from __future__ import annotations

import copy
import io
import math

import pytest
import torch

from fastgan.engine.iteration import make_optimizer
from fastgan.engine.optim import EpsHatAdam, TorchFormAdam, eps_hat_adam_reference


def _params(dtype=torch.float64, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (3, 2, 4), (1,)]
    return [torch.randn(s, generator=g, dtype=dtype).to(device).requires_grad_() for s in shapes]


def _grads(ps, t, seed=1):
    g = torch.Generator().manual_seed(seed + t)
    # every other step near-zero gradients, where the eps forms differ most
    scale = 1e-7 if t % 2 else 1.0
    return [(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale).to(p.device) for p in ps]


def _transcribed(ps0, steps, lr, betas, eps, decay):
    """Keras' Adam.get_updates / TF1's ApplyAdam, written out on plain tensors."""
    b1, b2 = betas
    p = [x.detach().clone() for x in ps0]
    m = [torch.zeros_like(x) for x in p]
    v = [torch.zeros_like(x) for x in p]
    for t in range(1, steps + 1):
        for i, g in enumerate(_grads(p, t)):
            lr_d = lr * (1.0 / (1.0 + decay * (t - 1)))   # iterations before the update
            lr_t = lr_d * math.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t)
            m[i] = b1 * m[i] + (1.0 - b1) * g
            v[i] = b2 * v[i] + (1.0 - b2) * g * g
            p[i] = p[i] - lr_t * m[i] / (torch.sqrt(v[i]) + eps)
    return p


def _triton_or_skip():
    """Skipped only where Triton is not installed: a broken kernel module fails."""
    pytest.importorskip("triton")
    from fastgan.kernels import adam  # noqa: F401


FORMS = [
    dict(lr=2e-4, betas=(0.5, 0.999), eps=1e-7, decay=8e-8),   # Keras, seed 001
    dict(lr=2e-4, betas=(0.5, 0.999), eps=1e-7, decay=1e-2),   # a decay large enough to see
    dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, decay=0.0),    # TF1, seeds 000 and 002
]


@pytest.mark.parametrize("fused", [False, "torch", True], ids=["foreach", "torch-cpu", "triton"])
@pytest.mark.parametrize("form", FORMS)
def test_matches_the_keras_and_tf1_formula_in_float64(form, fused):
    """Every implementation: the foreach ops, torch's fused CPU kernel with the step's eps, and
    the multi-tensor Triton kernel (run by the interpreter on CPU)."""
    if fused is True:
        _triton_or_skip()
    ps = _params()
    ref = _transcribed(ps, 12, **form)
    opt = EpsHatAdam(ps, **form, fused=fused)
    for t in range(1, 13):
        for p, g in zip(ps, _grads(ps, t)):
            p.grad = g
        opt.step()
    for p, r in zip(ps, ref):
        assert (p.detach() - r).abs().max().item() <= 1e-14 * max(1.0, r.abs().max().item())
    # engine/optim.py's plain transcription; its first step in closed form
    p, g = ps[0].detach().clone(), _grads(ps, 1)[0]
    m = v = torch.zeros_like(p)
    p2, _, _ = eps_hat_adam_reference(p, g, m, v, 1, form["lr"], *form["betas"], form["eps"],
                                      form["decay"])
    (b1, b2), lr = form["betas"], form["lr"]
    lr_t = lr * math.sqrt(1 - b2) / (1 - b1)
    want = p - lr_t * (1 - b1) * g / (math.sqrt(1 - b2) * g.abs() + form["eps"])
    torch.testing.assert_close(p2, want, rtol=1e-13, atol=0)


@pytest.mark.parametrize("fused", ["torch", True], ids=["torch-cpu", "triton"])
def test_fused_kernels_equal_foreach_on_a_variants_parameters(fused):
    """fp32, mlp's G (14 tensors: two Triton launches, blocks across slots) and D."""
    if fused is True:
        _triton_or_skip()
    from fastgan.variants import get_variant
    for role in ("G", "D"):
        torch.manual_seed(0)
        a = list(get_variant("mlp").build({})[role].parameters())
        b = [p.detach().clone().requires_grad_() for p in a]
        oa = EpsHatAdam(a, lr=2e-4, betas=(0.5, 0.999), eps=1e-7, decay=8e-8, fused=fused)
        ob = EpsHatAdam(b, lr=2e-4, betas=(0.5, 0.999), eps=1e-7, decay=8e-8, fused=False)
        for t in range(1, 4):
            for p, q, g in zip(a, b, _grads(a, t)):
                p.grad, q.grad = g, g.clone()
            oa.step()
            ob.step()
        for p, q in zip(a, b):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-9)
        for p, q in zip(a, b):
            for k in ("exp_avg", "exp_avg_sq", "step"):
                torch.testing.assert_close(oa.state[p][k], ob.state[q][k], rtol=1e-6, atol=0)


def test_differs_from_torch_adam_where_the_seeds_say():
    """torch's Adam adds eps after the bias correction: with near-zero gradients the two forms
    move parameters differently (the seeds' form damps the first steps)."""
    a, b = _params(), _params()
    oa = EpsHatAdam(a, lr=1e-3, eps=1e-8)
    ob = torch.optim.Adam(b, lr=1e-3, eps=1e-8)
    for t in range(1, 6):
        for p, q, g in zip(a, b, _grads(a, t)):
            p.grad, q.grad = g, g.clone()
        oa.step()
        ob.step()
    assert max((p - q).abs().max().item() for p, q in zip(a, b)) > 1e-5


def _steps_without_host_reads(opt, monkeypatch, steps: int = 3):
    """``steps`` optimizer steps, every way a tensor reads back to the host refused."""
    def refuse(*a, **k):
        raise AssertionError("host sync inside step()")
    for name in ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__",
                 "__index__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    for _ in range(steps):
        opt.step()
    monkeypatch.undo()


@pytest.mark.parametrize("fused", [False, "torch", True], ids=["foreach", "torch-cpu", "triton"])
def test_step_never_reads_back_to_the_host(monkeypatch, fused):
    """Capture-safe: no .item(), float(), bool(), .tolist(), .cpu() on a tensor inside step()
    (torch's CPU form keeps its step count on the host after the first step)."""
    if fused is True:
        _triton_or_skip()
    ps = _params(torch.float32)
    opt = EpsHatAdam(ps, lr=2e-4, betas=(0.5, 0.999), eps=1e-7, decay=8e-8, fused=fused)
    for p, g in zip(ps, _grads(ps, 0)):
        p.grad = g
    opt.step()   # state creation (a capture warms up eagerly first)
    _steps_without_host_reads(opt, monkeypatch)
    assert all(torch.isfinite(p).all() for p in ps)


def test_lr_lives_in_a_device_tensor_that_can_be_written():
    ps = _params()
    opt = make_optimizer(ps, 1e-3, (0.9, 0.999), torch.device("cpu"), adam="eps_hat")
    assert isinstance(opt, EpsHatAdam)
    lr = opt.param_groups[0]["lr"]
    assert torch.is_tensor(lr) and lr.dim() == 0
    before = [p.detach().clone() for p in ps]
    lr.fill_(0.0)          # what --lr-d/--lr-g on --resume does
    for p, g in zip(ps, _grads(ps, 2)):
        p.grad = g
    opt.step()
    assert all(torch.equal(p, b) for p, b in zip(ps, before))
    assert opt.state[ps[0]]["step"].item() == 1.0


def test_state_dict_round_trip_is_bit_exact():
    form = dict(lr=2e-4, betas=(0.5, 0.999), eps=1e-7, decay=8e-8)
    straight = _params()
    opt = EpsHatAdam(straight, **form)
    split = _params()
    opt2 = EpsHatAdam(split, **form)
    for t in range(1, 9):
        for p, g in zip(straight, _grads(straight, t)):
            p.grad = g
        opt.step()
    for t in range(1, 5):
        for p, g in zip(split, _grads(split, t)):
            p.grad = g
        opt2.step()
    buf = io.BytesIO()
    torch.save({"opt": opt2.state_dict(), "p": [p.detach() for p in split]}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)     # checkpoints are loaded this way
    resumed = [p.clone().requires_grad_() for p in saved["p"]]
    opt3 = EpsHatAdam(resumed, lr=1.0, betas=(0.5, 0.999), eps=1e-7, decay=8e-8)
    lr_tensor = opt3.param_groups[0]["lr"]
    opt3.load_state_dict(saved["opt"])
    assert opt3.param_groups[0]["lr"] is lr_tensor and lr_tensor.item() == 2e-4
    for t in range(5, 9):
        for p, g in zip(resumed, _grads(resumed, t)):
            p.grad = g
        opt3.step()
    for a, b in zip(straight, resumed):
        assert torch.equal(a, b)
    for i in range(len(straight)):
        sa, sb = opt.state_dict()["state"][i], opt3.state_dict()["state"][i]
        assert set(sa) == set(sb) == {"step", "exp_avg", "exp_avg_sq"}
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


def _eps_hat(decay):
    return lambda ps: EpsHatAdam(ps, lr=2e-4, betas=(0.5, 0.999), eps=1e-7, decay=decay)


# every optimizer a CUDA graph captures: the eps-hat form with and without decay, torch's form
CAPTURED = {"eps_hat": _eps_hat(0.0), "eps_hat-decay": _eps_hat(8e-8),
            "torch": lambda ps: TorchFormAdam(ps, lr=2e-4, betas=(0.5, 0.999), eps=1e-8)}


@pytest.mark.gpu
@pytest.mark.parametrize("form", list(CAPTURED))
def test_captured_step_replays_eager_steps(form):
    eager, graphed = _params(torch.float32, "cuda"), _params(torch.float32, "cuda")
    oe, og = CAPTURED[form](eager), CAPTURED[form](graphed)
    assert og.fused == "triton"
    grads = [torch.zeros_like(p) for p in graphed]
    for p, g in zip(graphed, grads):
        p.grad = g
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):      # warm-up creates the state outside the capture
        og.step()
    torch.cuda.current_stream().wait_stream(s)
    for p, q in zip(eager, graphed):     # start from the warmed-up state on both
        p.data.copy_(q.data)
    oe.load_state_dict(og.state_dict())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        og.step()
    for t in range(1, 6):
        for p, g, src in zip(eager, grads, _grads(eager, t)):
            p.grad = src.clone()
            g.copy_(src)
        oe.step()
        graph.replay()
    torch.cuda.synchronize()
    for p, q in zip(eager, graphed):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-8)
    assert og.state[graphed[0]]["step"].item() == oe.state[eager[0]]["step"].item() == 6


# ---- the Triton kernel: one launch per (group, device, dtype), the steps advanced inside ----

def _kernel_update(p, g, m, v, t_old: float, lr, b1, b2, eps, decay):
    """The Triton kernel's arithmetic, operation for operation, in numpy (what the interpreter
    runs it with: no fused multiply-adds; torch's CPU kernels round some quotients otherwise):
    the kernel's results are bit-equal to this."""
    import numpy as np
    acc = np.float64 if p.dtype == torch.float64 else np.float32
    t = float(np.float32(t_old) + np.float32(1.0))
    lr_d = lr / (1.0 + decay * (t - 1.0))
    lr_t = acc(lr_d * np.sqrt(1.0 - np.exp2(t * math.log2(b2)))
               / (1.0 - np.exp2(t * math.log2(b1))))
    g, m, v, p = (x.detach().to(torch.float64 if acc is np.float64 else torch.float32).numpy()
                  for x in (g, m, v, p))
    m = acc(b1) * m + acc(1.0 - b1) * g
    v = acc(b2) * v + acc(1.0 - b2) * g * g
    p = p - lr_t * m / (np.sqrt(v) + acc(eps))
    return tuple(torch.from_numpy(x) for x in (p, m, v))


# sizes: 1 and 0 elements, just under/over the interpreter's 65536-element block, odd lengths
_SIZES = [1, 0, 70000, 3, 65536, 65537, 131073, 5, 1023]


def _bucket(n_tensors: int, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(_SIZES[i % len(_SIZES)], generator=g, dtype=torch.float64)
            .to(dtype).requires_grad_() for i in range(n_tensors)]


def _same_or_bf16_rounding(got: torch.Tensor, want: torch.Tensor) -> bool:
    """``got`` is ``want`` (fp32/fp64, the kernel's arithmetic) stored in got's dtype: bf16 is
    rounded to nearest even by a GPU and toward zero by the interpreter (Triton 3.8)."""
    if got.dtype != torch.bfloat16:
        return torch.equal(got.nan_to_num(7.0), want.nan_to_num(7.0))
    w = want.float().nan_to_num(7.0)
    rz = (w.view(torch.int32) & -65536).view(torch.float32).to(torch.bfloat16)
    g = got.nan_to_num(7.0)
    return bool(((g == w.to(torch.bfloat16)) | (g == rz)).all())


def _four_steps(opt, ps, dtype):
    """Steps 1..4 with gradients shrinking 10x a step (a NaN in the first tensor's first element
    at step 3): yields (t, each tensor's (p, m, v) before the step, the grads)."""
    gen = torch.Generator().manual_seed(5)
    for t in range(1, 5):
        grads = [(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 10.0 ** -t)
                 .to(dtype) for p in ps]
        if t == 3:
            grads[0][0] = float("nan")
        before = [(p.detach().clone(), opt.state[p]["exp_avg"].clone(),
                   opt.state[p]["exp_avg_sq"].clone()) if opt.state[p] else
                  (p.detach().clone(), torch.zeros_like(p), torch.zeros_like(p)) for p in ps]
        for p, g in zip(ps, grads):
            p.grad = g
        opt.step()
        yield t, before, grads


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16],
                         ids=["fp64", "fp32", "bf16"])
@pytest.mark.parametrize("n_tensors", [1, 8, 9, 20])
def test_triton_bucket_is_bit_exact_with_its_arithmetic(dtype, n_tensors):
    """Any number of tensors (the old kernel took 8 per launch): each step's p, m, v bit-equal
    to the kernel's arithmetic (t read before this step's increment), close to the Keras/TF1
    formula over 4 steps, a NaN gradient propagates to its own element only, and every step
    count (the empty tensor's too) advances exactly once per step()."""
    _triton_or_skip()
    form = dict(lr=2e-4, betas=(0.5, 0.999), eps=1e-7, decay=1e-2)
    ps = _bucket(n_tensors, dtype)
    opt = EpsHatAdam(ps, **form, fused=True)
    ref = [(p.detach().double().clone(), torch.zeros_like(p, dtype=torch.float64),
            torch.zeros_like(p, dtype=torch.float64)) for p in ps]
    for t, before, grads in _four_steps(opt, ps, dtype):
        ref = [eps_hat_adam_reference(p, g.double(), m, v, t, form["lr"], *form["betas"],
                                      form["eps"], form["decay"])
               for (p, m, v), g in zip(ref, grads)]
        for i, (p, (p0, m0, v0), g) in enumerate(zip(ps, before, grads)):
            st = opt.state[p]
            assert st["step"].item() == t, (i, st["step"])
            want = _kernel_update(p0, g, m0, v0, t - 1, form["lr"], *form["betas"],
                                  form["eps"], form["decay"])
            for got, w in zip((p.detach(), st["exp_avg"], st["exp_avg_sq"]), want):
                assert _same_or_bf16_rounding(got, w), (t, i)
    # bf16: each step's store rounds by up to one ulp (2^-8 relative; toward zero under the
    # interpreter, so the 4 roundings add up)
    tol = {torch.float64: 1e-13, torch.float32: 1e-5, torch.bfloat16: 2.0 ** -5}[dtype]
    for i, (p, (r, _, _)) in enumerate(zip(ps, ref)):
        got = p.detach().double()
        nan = torch.isnan(r)
        assert torch.equal(torch.isnan(got), nan)
        assert bool(nan.any()) == (i == 0) and nan.sum() <= 1   # the NaN gradient's element
        torch.testing.assert_close(got[~nan], r[~nan], rtol=tol, atol=tol * 1e-2)


def _count_step(opt):
    from fastgan.benchmark.kernel_count import count_work
    return count_work(opt.step)


@pytest.mark.parametrize("n_tensors", [1, 9, 20])
def test_triton_step_is_one_launch_and_nothing_else(n_tensors):
    """One launch per group, no step-count kernel, no host read; a second group (and each
    (device, dtype) bucket) is one launch more."""
    _triton_or_skip()
    ps = _bucket(n_tensors, torch.float32)
    extra = _bucket(3, torch.float32, seed=1)
    opt = EpsHatAdam([{"params": ps}, {"params": extra, "lr": 1e-3}], lr=2e-4, fused=True)
    for p in ps + extra:
        p.grad = torch.ones_like(p)
    opt.step()      # builds the state and the tables (a capture's warm-up)
    work = _count_step(opt)
    assert work["by_op"] == {"triton._adam_kernel": 2} and work["host_syncs"] == 0
    assert all(opt.state[p]["step"].item() == 2 for p in ps + extra)


def test_triton_bucket_of_empty_tensors_still_advances_its_steps():
    _triton_or_skip()
    ps = [torch.zeros(0, requires_grad=True), torch.zeros(0, 3, requires_grad=True)]
    opt = EpsHatAdam(ps, lr=1e-3, fused=True)
    for t in range(1, 4):
        for p in ps:
            p.grad = torch.zeros_like(p)
        opt.step()
        assert [opt.state[p]["step"].item() for p in ps] == [t, t]


def test_triton_table_is_rebuilt_only_when_an_address_changes():
    """Cached while the tensors stay (a CUDA graph's case); rebuilt when a grad is reallocated
    (eager zero_grad(set_to_none=True)) or the state is replaced (load_state_dict), and the
    steps then still match an optimizer whose tensors never moved."""
    _triton_or_skip()
    form = dict(lr=2e-4, betas=(0.5, 0.999), eps=1e-7, decay=8e-8)
    a, b = _bucket(9, torch.float32), _bucket(9, torch.float32)
    oa, ob = EpsHatAdam(a, **form, fused=True), EpsHatAdam(b, **form, fused=True)
    fixed = [torch.zeros_like(p) for p in b]
    for p, g in zip(b, fixed):
        p.grad = g
    tables = []
    for t in range(1, 7):
        grads = _grads(a, t)
        if t in (1, 2, 5):
            oa.zero_grad(set_to_none=True)
            for p, g in zip(a, grads):
                p.grad = g.clone()
        else:
            for p, g in zip(a, grads):
                p.grad.copy_(g)
        for p, g in zip(fixed, grads):
            p.copy_(g)
        if t == 4:
            oa.load_state_dict(copy.deepcopy(oa.state_dict()))   # new state tensors
        oa.step()
        ob.step()
        tables.append(next(iter(oa._tables.values())).tab)
    assert [tables[i] is tables[i - 1] for i in range(1, 6)] == [False, True, False, False, True]
    assert len(ob._tables) == 1
    for p, q in zip(a, b):
        assert torch.equal(p, q)
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(oa.state[p][k], ob.state[q][k]), k


def test_triton_table_rebuild_during_a_capture_bookkeeping():
    """The capture branch, on CPU: a table made during a capture is a spare allocated before it
    (the graph's pool could hand out a block its earlier kernels overwrite on every replay),
    not written until the capture ends (a write there would be a copy node replayed every time,
    or a host wait the capture forbids); every tensor a graph may read is kept; more rebuilds
    than prepared for, or a first step inside a capture, are refused."""
    _triton_or_skip()
    from fastgan.engine.optim import capture_tables
    from fastgan.kernels import adam as AD
    ps = _bucket(3, torch.float32)
    ms, vs = [torch.zeros_like(p) for p in ps], [torch.zeros_like(p) for p in ps]
    steps = [torch.zeros(()) for _ in ps]
    cpu = torch.device("cpu")

    def words(gs):
        return AD._words(ps, gs, ms, vs, steps)
    with pytest.raises(RuntimeError, match="run one step before capturing"):
        AD._rebuild(None, words(ps), cpu, True, [])
    eager = AD._rebuild(None, words(ps), cpu, False, [])
    keep = []
    g1, g2, g3 = ([torch.zeros_like(p) for p in ps] for _ in range(3))
    with pytest.raises(RuntimeError, match="capture_tables"):     # nothing prepared
        AD._rebuild(eager, words(g1), cpu, True, keep)
    with capture_tables(launches=2):
        spares = list(eager.spares)
        assert len(spares) == 2
        first = AD._rebuild(eager, words(g1), cpu, True, keep)
        assert first.tab is spares[0] and first.captured and first.cnt is eager.cnt
        assert keep == [first.tab, first.cnt] and AD._PENDING[-1][0] is first.tab
        second = AD._rebuild(first, words(g2), cpu, True, keep)
        assert second.tab is spares[1]
        with pytest.raises(RuntimeError, match="more often than prepared"):
            AD._rebuild(second, words(g3), cpu, True, keep)
    assert not AD._PENDING and not second.spares
    assert torch.equal(first.tab, AD._host_table(words(g1), 3))
    assert torch.equal(second.tab, AD._host_table(words(g2), 3))
    later = AD._rebuild(second, words(ps), cpu, False, keep)      # eager again
    assert not later.captured and keep[-1] is second.tab and not AD._PENDING


def test_triton_beta1_zero():
    """betas (0, 0.99), as some GAN recipes use: b^t is 0 (log2 -inf in the kernel)."""
    _triton_or_skip()
    form = dict(lr=1e-3, betas=(0.0, 0.99), eps=1e-7)
    a = _bucket(4, torch.float64)
    b = [p.detach().clone().requires_grad_() for p in a]
    oa, ob = EpsHatAdam(a, **form, fused="triton"), EpsHatAdam(b, **form, fused=False)
    for t in range(1, 4):
        for p, q, g in zip(a, b, _grads(a, t)):
            p.grad, q.grad = g.clone(), g.clone()
        oa.step()
        ob.step()
    for p, q in zip(a, b):
        assert torch.isfinite(p).all()
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


@pytest.mark.gpu
@pytest.mark.parametrize("form", ["eps_hat-decay", "torch"])
def test_captured_step_with_grads_allocated_inside_the_capture(form):
    """The engine's capture: grads set to None before it, so the backward inside allocates new
    ones from the graph's pool and the table is rebuilt during the capture; replays must then
    match eager steps, and later eager steps (other addresses) must not disturb the graph."""
    from fastgan.engine.optim import capture_tables
    eager, graphed = _bucket(20, torch.float32), _bucket(20, torch.float32)
    eager = [p.detach().cuda().requires_grad_() for p in eager]
    graphed = [p.detach().cuda().requires_grad_() for p in graphed]
    oe, og = CAPTURED[form](eager), CAPTURED[form](graphed)
    src = [torch.zeros_like(p) for p in graphed]
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):      # warm-up: state and tables
        for p, g in zip(graphed, src):
            p.grad = g.clone()
        og.step()
    torch.cuda.current_stream().wait_stream(s)
    for p, q in zip(eager, graphed):
        p.data.copy_(q.data)
    oe.load_state_dict(og.state_dict())
    og.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with capture_tables(), torch.cuda.graph(graph):     # as engine/graphs.py captures
        for p, g in zip(graphed, src):
            p.grad = g * 1.0        # allocated inside the capture
        # a block freed inside the capture, of the table's size: the graph's pool would hand
        # it to a table allocated here, and this fill would overwrite it on every replay
        tab = next(iter(og._tables.values())).tab
        junk = torch.empty(tab.numel(), dtype=torch.int64, device="cuda")
        junk.fill_(-1)
        del junk
        og.step()
    for t in range(1, 6):
        for p, g, x in zip(eager, src, _grads(eager, t)):
            p.grad = x.clone()
            g.copy_(x)
        oe.step()
        graph.replay()
    torch.cuda.synchronize()
    from fastgan.kernels import adam as AD
    for t in og._tables.values():       # the replays left the captured tables as written
        assert torch.equal(t.tab.cpu(), AD._host_table(t.key, t.T)), "table overwritten"
    for p, q in zip(eager, graphed):
        assert torch.equal(p, q)
    assert og.state[graphed[0]]["step"].item() == oe.state[eager[0]]["step"].item() == 6


# ---- torch's form (TorchFormAdam): the same kernel, torch.optim.Adam's update and state ----

def _torch_transcribed(p, g, m, v, t: int, lr: float, b1: float, b2: float, eps: float):
    """torch.optim.Adam's documented update (no weight decay, amsgrad), in float64."""
    m = b1 * m + (1.0 - b1) * g
    v = b2 * v + (1.0 - b2) * g * g
    bias_correction1, bias_correction2 = 1.0 - b1 ** t, 1.0 - b2 ** t
    return p - (lr / bias_correction1) * m / (v.sqrt() / math.sqrt(bias_correction2) + eps), m, v


def _close(got: torch.Tensor, want: torch.Tensor, rel: float) -> None:
    """Equal up to ``rel`` of the tensor's largest magnitude (an update's rounding is relative
    to the parameter's scale, not to an element that cancels near 0); NaN never passes."""
    got, want = got.detach().double(), want.detach().double()
    assert got.shape == want.shape and not torch.isnan(got).any() and not torch.isnan(want).any()
    if want.numel():
        err = (got - want).abs().max().item()
        assert err <= rel * max(want.abs().max().item(), 1e-30), (err, want.abs().max().item())


def _groups(dtype, seed=0):
    """Two groups of odd sizes (1 and 0 elements, across the interpreter's 65536 block)."""
    return [_bucket(9, dtype, seed), _bucket(3, dtype, seed + 1)]


TORCH_HP = dict(betas=(0.5, 0.999), eps=1e-8)
LRS = (2e-4, 1e-3)


def _torch_adam(groups, lr_dtype=torch.float32):
    """torch.optim.Adam as make_optimizer builds it (fused, lr a tensor; CPU: not capturable)."""
    return torch.optim.Adam([{"params": g, "lr": torch.tensor(lr, dtype=lr_dtype)}
                             for g, lr in zip(groups, LRS)], lr=torch.tensor(1.0), fused=True,
                            **TORCH_HP)


def _torch_form(groups, fused="triton"):
    opt = TorchFormAdam(groups[0], lr=LRS[0], **TORCH_HP, fused=fused)
    opt.add_param_group({"params": groups[1],
                         "lr": torch.tensor(LRS[1], dtype=torch.float32)})
    return opt


def _step_both(opts, groups_list, t: int, gen):
    grads = [(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 10.0 ** -(t % 4))
             .to(groups_list[0][0][0].dtype) for p in sum(groups_list[0], [])]
    for groups, opt in zip(groups_list, opts):
        for p, g in zip(sum(groups, []), grads):
            p.grad = g.clone()
        opt.step()
    return grads


@pytest.mark.parametrize("fused", ["triton", "torch"])
def test_torch_form_matches_torchs_formula_in_float64(fused):
    """float64, two groups with their own lr, group 1's rate written into its device tensor
    after step 3 (a schedule's write): every tensor equals the float64 transcription."""
    if fused == "triton":
        _triton_or_skip()
    groups = _groups(torch.float64)
    opt = _torch_form(groups, fused)
    ref = [[(p.detach().clone(), torch.zeros_like(p), torch.zeros_like(p)) for p in g]
           for g in groups]
    gen = torch.Generator().manual_seed(3)
    for t in range(1, 8):
        if t == 4:
            opt.param_groups[1]["lr"].fill_(5e-3)
        lrs = [float(g["lr"]) for g in opt.param_groups]    # float32 values, as torch's
        grads = iter(_step_both([opt], [groups], t, gen))
        ref = [[_torch_transcribed(p, next(grads), m, v, t, lr, *TORCH_HP["betas"],
                                   TORCH_HP["eps"]) for p, m, v in g]
               for g, lr in zip(ref, lrs)]
    assert lrs[1] == float(torch.tensor(5e-3))
    for g, rg in zip(groups, ref):
        for p, (rp, rm, rv) in zip(g, rg):
            st = opt.state[p]
            assert st["step"].dtype == torch.float32 and st["step"].item() == 7
            for got, want in ((p.detach(), rp), (st["exp_avg"], rm), (st["exp_avg_sq"], rv)):
                _close(got, want, 1e-14)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_torch_form_equals_torch_optim_adam(dtype):
    """Against torch.optim.Adam itself (fused, the CPU kernel) over 8 steps, an lr written
    into both optimizers' tensors halfway. fp32: torch's CUDA kernel, which this one follows,
    takes 1 - b2 from b2 in fp32 (fma(-b2, g g, g g)), its CPU kernel in fp64; for 0.999 the
    two differ by 1.3e-5 relative, and so do the exp_avg_sq, nothing more."""
    _triton_or_skip()
    ga, gb = _groups(dtype), _groups(dtype)
    oa, ob = _torch_form(ga), _torch_adam(gb)
    gen = torch.Generator().manual_seed(4)
    for t in range(1, 9):
        if t == 5:
            for o in (oa, ob):
                o.param_groups[0]["lr"].fill_(3e-3)
        _step_both([oa, ob], [ga, gb], t, gen)
    rel = 1e-14 if dtype == torch.float64 else 1e-6
    b2 = TORCH_HP["betas"][1]
    c2_fp32 = 1.0 - float(torch.tensor(b2, dtype=torch.float32))
    rel_v = rel if dtype == torch.float64 else abs(c2_fp32 / (1.0 - b2) - 1.0) + rel
    assert dtype == torch.float64 or 1.2e-5 < rel_v < 1.4e-5
    for p, q in zip(sum(ga, []), sum(gb, [])):
        _close(p, q, rel)
        for k, r in (("exp_avg", rel), ("exp_avg_sq", rel_v), ("step", 0.0)):
            _close(oa.state[p][k], ob.state[q][k], r)


def _torch_kernel_update(p, g, m, v, t_old: float, lr: torch.Tensor, b1, b2, eps):
    """The kernel's torch form, operation for operation, in numpy (the interpreter's fma is
    a multiply then an add): bit-equal to what it computes. (1 - b) in the tensors' type: with
    it exact, (1 - b) g is torch's fma(-b, g, g), one rounding."""
    import numpy as np
    acc = np.float64 if p.dtype == torch.float64 else np.float32
    t = float(np.float32(t_old) + np.float32(1.0))
    step_size = acc(float(lr) / (1.0 - np.exp2(t * math.log2(b1))))
    bc2_sqrt = acc(np.sqrt(1.0 - np.exp2(t * math.log2(b2))))
    g, m, v, p = (x.detach().to(torch.float64 if acc is np.float64 else torch.float32).numpy()
                  for x in (g, m, v, p))
    m = acc(b1) * m + (acc(1.0) - acc(b1)) * g
    v = acc(b2) * v + (acc(1.0) - acc(b2)) * (g * g)
    p = p - step_size * m / (np.sqrt(v) / bc2_sqrt + acc(eps))
    return tuple(torch.from_numpy(x) for x in (p, m, v))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16],
                         ids=["fp64", "fp32", "bf16"])
@pytest.mark.parametrize("n_tensors", [1, 9, 20])
def test_torch_form_is_bit_exact_with_its_arithmetic(dtype, n_tensors):
    """Each step's p, m, v bit-equal to the kernel's arithmetic (torch's fused CUDA kernel's
    order), a NaN gradient stays in its element, every step count advances once per step."""
    _triton_or_skip()
    ps = _bucket(n_tensors, dtype)
    # (0.9, 0.999): 1 - b in fp32 is not (1 - b) in fp64 rounded to fp32 for either
    opt = TorchFormAdam(ps, lr=2e-4, betas=(0.9, 0.999), eps=1e-8, fused="triton")
    for t, before, grads in _four_steps(opt, ps, dtype):
        for i, (p, (p0, m0, v0), g) in enumerate(zip(ps, before, grads)):
            st = opt.state[p]
            assert st["step"].item() == t, (i, st["step"])
            want = _torch_kernel_update(p0, g, m0, v0, t - 1, opt.param_groups[0]["lr"],
                                        0.9, 0.999, 1e-8)
            for got, w in zip((p.detach(), st["exp_avg"], st["exp_avg_sq"]), want):
                assert _same_or_bf16_rounding(got, w), (t, i)
    nan = torch.isnan(ps[0].detach())
    assert nan.sum() == 1 and bool(nan[0])
    assert all(not torch.isnan(p).any() for p in ps[1:])


@pytest.mark.parametrize("n_tensors", [1, 9, 20])
def test_torch_form_step_is_one_launch_per_group_and_nothing_else(n_tensors):
    """torch.optim.Adam(fused) makes two per group (the steps' _foreach_add_, the kernel)."""
    _triton_or_skip()
    groups = [_bucket(n_tensors, torch.float32), _bucket(3, torch.float32, seed=1)]
    opt = _torch_form(groups)
    for p in sum(groups, []):
        p.grad = torch.ones_like(p)
    opt.step()
    work = _count_step(opt)
    assert work["by_op"] == {"triton._adam_kernel": 2} and work["host_syncs"] == 0
    assert all(opt.state[p]["step"].item() == 2 for p in sum(groups, []))


def _save_load(sd):
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)     # checkpoints are loaded this way


@pytest.mark.parametrize("direction", ["torch->form", "form->torch"])
def test_torch_form_state_dict_both_ways_with_torch_optim_adam(direction):
    """float64: 4 steps in one optimizer, its state dict through torch.load(weights_only),
    4 more in the other; equal to 8 steps of torch.optim.Adam straight. The layouts are the
    same (state keys and dtypes, every param_groups key), the loading optimizer keeps its lr
    tensor (a graph may hold it) with the loaded value."""
    _triton_or_skip()
    dtype = torch.float64
    straight, first, second = _groups(dtype), _groups(dtype), _groups(dtype)
    ref = _torch_adam(straight)
    if direction == "torch->form":
        o1, o2 = _torch_adam(first), _torch_form(second)
    else:
        o1, o2 = _torch_form(first), _torch_adam(second)
    gen = torch.Generator().manual_seed(6)
    for t in range(1, 5):
        _step_both([ref, o1], [straight, first], t, gen)
    sd = _save_load(o1.state_dict())
    assert set(sd["param_groups"][0]) == set(_torch_adam(_groups(dtype)).param_groups[0])
    for st in sd["state"].values():
        assert set(st) == {"step", "exp_avg", "exp_avg_sq"}
        assert st["step"].dtype == torch.float32 and st["step"].dim() == 0
    with torch.no_grad():
        for p, q in zip(sum(second, []), sum(first, [])):
            p.copy_(q)
    lr_tensors = [g["lr"] for g in o2.param_groups]
    if direction == "torch->form":
        o2.load_state_dict(sd)
        assert [g["lr"] for g in o2.param_groups] == lr_tensors       # the same tensors
        assert [float(x) for x in lr_tensors] == [float(g["lr"]) for g in sd["param_groups"]]
        assert all(g["capturable"] and g["fused"] for g in o2.param_groups)
    else:
        o2.load_state_dict(sd)
    for t in range(5, 9):
        _step_both([ref, o2], [straight, second], t, gen)
    for p, q in zip(sum(straight, []), sum(second, [])):
        _close(q, p, 1e-14)
        for k in ("exp_avg", "exp_avg_sq", "step"):
            _close(o2.state[q][k], ref.state[p][k], 1e-14)


def test_torch_form_loads_a_foreach_checkpoint_and_refuses_what_it_lacks():
    """A state dict of torch's default (foreach, steps on the host) Adam: the steps go to the
    parameters' device as float32 and the options stay fused/capturable; weight decay,
    amsgrad or maximize are refused (the kernel has none of them)."""
    _triton_or_skip()
    a, b = _params(), _params()
    plain = torch.optim.Adam(a, lr=1e-3)
    for p, g in zip(a, _grads(a, 1)):
        p.grad = g
    plain.step()
    opt = TorchFormAdam(b, lr=1.0, fused="triton")
    opt.load_state_dict(_save_load(plain.state_dict()))
    g0 = opt.param_groups[0]
    assert g0["capturable"] and g0["fused"] and g0["foreach"] is None
    assert opt.state[b[0]]["step"].dtype == torch.float32
    for bad in (dict(weight_decay=1e-2), dict(amsgrad=True), dict(maximize=True)):
        other = torch.optim.Adam(_params(), lr=1e-3, **bad)
        with pytest.raises(ValueError, match="without weight decay, amsgrad or maximize"):
            opt.load_state_dict(other.state_dict())


def test_torch_form_step_never_reads_back_to_the_host(monkeypatch):
    _triton_or_skip()
    ps = _params(torch.float32)
    opt = TorchFormAdam(ps, lr=2e-4, **TORCH_HP, fused="triton")
    for p, g in zip(ps, _grads(ps, 0)):
        p.grad = g
    opt.step()
    _steps_without_host_reads(opt, monkeypatch)
    assert opt.state[ps[0]]["step"].item() == 4


def test_torch_form_layouts_the_kernel_takes_and_the_rest():
    """channels_last weights (p, g, m, v with one dense layout) go in the one launch; a
    non-dense parameter's bucket goes torch's own way; both equal torch.optim.Adam."""
    _triton_or_skip()
    from fastgan.engine.optim import _flat_alike
    cl = torch.channels_last

    def nets():     # a channels_last weight and a strided (non-dense) view, as leaves
        gen = torch.Generator().manual_seed(7)
        w = torch.randn(4, 3, 5, 5, generator=gen, dtype=torch.float64).contiguous(
            memory_format=cl)
        s = torch.randn(6, 8, generator=gen, dtype=torch.float64)[:, ::2]
        return w.requires_grad_(), s.requires_grad_()
    w, s = nets()
    assert _flat_alike(w, torch.empty_like(w)) and not _flat_alike(w, w.contiguous())
    assert not _flat_alike(s, torch.empty_like(s), torch.empty_like(s), torch.empty_like(s))
    for pick, launches in ((1, {"triton._adam_kernel": 1}), (2, None)):
        a, b = list(nets())[:pick], list(nets())[:pick]
        oa = TorchFormAdam(a, lr=1e-3, fused="triton")
        ob = torch.optim.Adam(b, lr=torch.tensor(1e-3), fused=True)
        gen = torch.Generator().manual_seed(8)
        for t in range(1, 4):
            for p, q in zip(a, b):
                g = torch.randn(p.shape, generator=gen, dtype=torch.float64)
                if p.dim() == 4:
                    g = g.contiguous(memory_format=cl)
                p.grad, q.grad = g.clone(memory_format=torch.preserve_format), g.clone(
                    memory_format=torch.preserve_format)
            if launches and t == 3:     # the same grads as step 2 (no table rebuild)
                for p, q in zip(a, b):
                    p.grad = q.grad = None
                    q.grad = g_kept[id(p)].clone(memory_format=torch.preserve_format)
                    p.grad = g_kept[id(p)]
                assert _count_step(oa)["by_op"] == launches
            else:
                oa.step()
            ob.step()
            g_kept = {id(p): p.grad for p in a}
        assert oa.state[a[0]]["exp_avg"].is_contiguous(memory_format=cl)
        for p, q in zip(a, b):
            _close(p, q, 1e-14)


def test_make_optimizer_keeps_torchs_adam_on_cpu():
    """The CPU path is unchanged (the step-by-step tests compare it with the seed loops)."""
    opt = make_optimizer(_params(), 1e-3, (0.9, 0.999), torch.device("cpu"))
    assert type(opt) is torch.optim.Adam and opt.defaults["fused"]


@pytest.mark.gpu
def test_make_optimizer_on_cuda_is_the_one_launch_torch_form():
    """On a GPU: TorchFormAdam against torch.optim.Adam(fused, capturable), as it replaces."""
    a, b = _params(torch.float32, "cuda"), _params(torch.float32, "cuda")
    oa = make_optimizer(a, 2e-4, (0.5, 0.999), torch.device("cuda"))
    assert isinstance(oa, TorchFormAdam) and oa.fused == "triton"
    assert oa.param_groups[0]["lr"].dtype == torch.float32
    ob = torch.optim.Adam(b, lr=torch.tensor(2e-4, device="cuda"), betas=(0.5, 0.999),
                          fused=True, capturable=True)
    for t in range(1, 9):
        for p, q, g in zip(a, b, _grads(a, t)):
            p.grad, q.grad = g.clone(), g.clone()
        oa.step()
        ob.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=2e-6, atol=1e-9)
        for k in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(oa.state[p][k], ob.state[q][k], rtol=2e-6, atol=0)


def test_as_gpu_adam_is_what_a_gpu_runs_over_the_same_state():
    """For the CPU count of the GPU's kernels: torch.optim.Adam becomes the one-launch torch
    form over the same tensors (a step of it is torch's step), the eps-hat Adam its kernel."""
    _triton_or_skip()
    from fastgan.engine.optim import as_gpu_adam
    a, b = _params(), _params()
    lr = float(torch.tensor(1e-3))      # a GPU's lr tensor is float32 (make_optimizer's too)
    oa = make_optimizer(a, lr, (0.5, 0.999), torch.device("cpu"))
    ob = make_optimizer(b, lr, (0.5, 0.999), torch.device("cpu"))
    for t in (1, 2):
        for p, q, g in zip(a, b, _grads(a, t)):
            p.grad, q.grad = g, g.clone()
        oa.step()
        ob.step()
        if t == 1:
            oa = as_gpu_adam(oa)
            assert isinstance(oa, TorchFormAdam) and oa.state[a[0]]["step"].item() == 1
    assert _count_step(oa)["by_op"] == {"triton._adam_kernel": 1}
    ob.step()
    for p, q in zip(a, b):
        _close(p, q, 1e-14)
        assert oa.state[p]["step"].item() == 3
    e = EpsHatAdam(_params(), fused="torch")
    assert as_gpu_adam(e) is e and e.fused == "triton"


def test_adam_kernel_choice_and_its_escape_hatch(monkeypatch):
    """The Triton kernel by default on CUDA only; FASTGAN_ADAM_KERNEL=torch turns it off (torch's
    own kernels); any other value is a clear error."""
    from fastgan.engine import optim
    monkeypatch.setattr(optim, "_triton_kernel", lambda: object())
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.delenv("FASTGAN_ADAM_KERNEL", raising=False)
    assert optim.triton_adam(cuda) and not optim.triton_adam(cpu)
    monkeypatch.setenv("FASTGAN_ADAM_KERNEL", " Torch ")
    assert not optim.triton_adam(cuda)
    # on CPU tensors the defaults stay torch's CPU kernels either way
    assert EpsHatAdam(_params(torch.float32), lr=1e-3).fused == "torch"
    monkeypatch.setenv("FASTGAN_ADAM_KERNEL", "triton")
    with pytest.raises(ValueError, match="FASTGAN_ADAM_KERNEL='triton': set it to one of auto, torch"):
        optim.triton_adam(cuda)
    monkeypatch.setattr(optim, "_triton_kernel", lambda: None)
    monkeypatch.delenv("FASTGAN_ADAM_KERNEL")
    assert not optim.triton_adam(cuda)
