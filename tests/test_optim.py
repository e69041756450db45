"""The eps-hat Adam (TF1's AdamOptimizer, Keras' Adam): the update formula in float64, no host
syncs in ``step()`` (so it can be captured), an lr written into its device tensor takes effect,
state_dict round trips bit for bit through ``torch.load(weights_only=True)``, and on a GPU a
captured step replays what eager steps compute."""
from __future__ import annotations

import io
import math

import pytest
import torch

from fastgan.engine.iteration import make_optimizer
from fastgan.engine.optim import EpsHatAdam, eps_hat_adam_reference


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
    try:
        from fastgan.kernels import adam  # noqa: F401
    except Exception as e:  # pragma: no cover
        pytest.skip(f"triton not importable: {e}")


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

    def refuse(*a, **k):
        raise AssertionError("host sync inside step()")
    for name in ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__",
                 "__index__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    for _ in range(3):
        opt.step()
    monkeypatch.undo()
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


@pytest.mark.gpu
@pytest.mark.parametrize("decay", [0.0, 8e-8])
def test_captured_step_replays_eager_steps(decay):
    form = dict(lr=2e-4, betas=(0.5, 0.999), eps=1e-7, decay=decay)
    eager, graphed = _params(torch.float32, "cuda"), _params(torch.float32, "cuda")
    oe, og = EpsHatAdam(eager, **form), EpsHatAdam(graphed, **form)
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
