"""One optimizer step on each variant's real parameter sets: torch's Adam as the engine makes it
(on a GPU the one-launch Triton TorchFormAdam), torch.optim.Adam itself (fused, capturable on a
GPU: what the engine made before) and the eps-hat Adam of the TF1/Keras seeds
(fastgan/engine/optim.py). Adam is the memory floor of the MLP variants' iteration, so neither
Triton form may be slower than torch's fused one on a GPU.

    pytest bench/test_adam_step.py --benchmark-group-by=param:case --benchmark-columns=min,median,rounds

On a GPU each timed step ends with ``torch.cuda.synchronize()``; on CPU the same cases time
torch's fused CPU Adam (both torch rows: make_optimizer keeps it there) against the eps-hat one.
"""
from __future__ import annotations

import os

import pytest
import torch

from fastgan.engine.iteration import make_optimizer
from fastgan.variants import get_variant

pytest.importorskip("pytest_benchmark")

CUDA = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1"
DEVICE = torch.device("cuda" if CUDA else "cpu")

# (case, variant, options, role): every network an optimizer trains in the seeds' variants
CASES = [("mlp.G", "mlp", {}, "G"), ("mlp.D", "mlp", {}, "D"),
         ("bigan.G+E", "bigan", {}, "G"), ("bigan.D", "bigan", {}, "D"),
         ("gancls.G", "gancls", {}, "G"), ("gancls.D", "gancls", {}, "D"),
         ("convgan.G", "convgan", {}, "G"), ("convgan.D", "convgan", {}, "D"),
         ("dcgan64.G", "dcgan", {}, "G"), ("dcgan64.D", "dcgan", {}, "D")]
# make_optimizer's options per form; None: torch.optim.Adam as make_optimizer built it before
FORMS = {"torch": {}, "torch.optim": None, "eps_hat": dict(adam="eps_hat", eps=1e-7, decay=8e-8)}
# As part of a whole test run (bench/conftest.py): a smoke test, mlp only, three rounds.
EXPLICIT = os.environ.get("FASTGAN_BENCH_EXPLICIT") == "1"
if not EXPLICIT:
    CASES = CASES[:2]


def _params(variant, opts, role):
    v = get_variant(variant, **opts)
    torch.manual_seed(0)
    nets = {k: m.to(DEVICE) for k, m in v.build({}).items()}
    roles = v.param_roles()[role]
    ps = [p for r in roles for p in nets[r].parameters()]
    for p in ps:
        p.grad = torch.randn_like(p) * 1e-3
    return ps


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_adam_step(benchmark, case, form):
    _, variant, opts, role = next(c for c in CASES if c[0] == case)
    ps = _params(variant, opts, role)
    if FORMS[form] is None:
        opt = torch.optim.Adam(ps, lr=torch.tensor(2e-4, device=DEVICE), betas=(0.5, 0.999),
                               fused=True, capturable=CUDA)
    else:
        opt = make_optimizer(ps, 2e-4, (0.5, 0.999), DEVICE, capturable=True, **FORMS[form])
    opt.step()   # state, and any compilation, outside the timing
    n = sum(p.numel() for p in ps)
    # fastgan's Adams say which kernel ("triton", "torch" or "" for foreach), torch's a bool
    fused = getattr(opt, "fused", None) or bool(opt.defaults.get("fused"))
    benchmark.extra_info.update(params=n, device=str(DEVICE), optimizer=type(opt).__name__,
                                fused=fused)

    def step():
        opt.step()
        if CUDA:
            torch.cuda.synchronize()
    if EXPLICIT:
        benchmark(step)
    else:
        benchmark.pedantic(step, rounds=3, iterations=1)
