"""dcgan under --precision bf16 (issue 21) against the PyTorch DCGAN example in float64.

fastgan trains with float32 parameters, Adam state and BatchNorm statistics and bf16 activations
(autocast: bf16 convolutions with float32 accumulation, the fused bn_act / bias_act kernels
reading and writing bf16, the loss in float32); the example runs in float64 from the same initial
weights, fed the same draws (batch 4, ngf = ndf = 8, RGB 64x64, 5 iterations). bf16 keeps 8
significant bits, and with 4 samples per BatchNorm the gradients of G's BN parameters are sums
that cancel, so the tolerances are loose but far below what a wrong formula gives (O(1)):

- both losses, every iteration: 3e-2 absolute (measured: at most 1.7e-2);
- every gradient, relative in norm: 0.3 in iteration 1, from the same weights (measured 0.21);
  0.75 later, once bf16 rounding has moved the weights apart (measured 0.59);
- the parameters and BatchNorm statistics after each step: 1e-2 absolute (measured 4.5e-3),
  and no worse than the example itself under ``torch.autocast(bfloat16)`` (measured 2.1e-2).

The same tolerances in NCHW and in channels_last, on every CPU backend.
"""
from __future__ import annotations

import pytest
import torch

from fastgan import ops
from test_seed_steps import dcgan_example_records, run_fastgan

BACKENDS = ["reference", "cuda", "triton"]
TOL_LOSS, TOL_GRAD_FIRST, TOL_GRAD, TOL_STATE = 3e-2, 0.3, 0.75, 1e-2
WORST = {}


def _need(backend):
    if backend not in ops.available_backends("cpu"):
        pytest.skip(f"{backend} backend not available on CPU: {ops.load_error(backend)}")


def _float64_example(recs, init, nc):
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        fed = [dict(r, real=r["real"].double(), z=r["z"].double()) for r in recs]
        init64 = {role: {k: t.double() if t.is_floating_point() else t for k, t in sd.items()}
                  for role, sd in init.items()}
        return dcgan_example_records(fed, init64, nc=nc)
    finally:
        torch.set_default_dtype(old)


def _err(a, b, scale):
    a, b = a.double(), b.double()
    assert torch.isfinite(a).all(), "NaN or inf"
    return (a - b).abs().max().item() / scale


def _rel_norm(a, b):
    a, b = a.double(), b.double()
    assert torch.isfinite(a).all(), "NaN or inf"
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _worst_state(recs, seed):
    return max(_err(r["state"][k], t, 1.0) for r, s in zip(recs, seed)
               for k, t in s["state"].items() if t.is_floating_point())


@pytest.mark.parametrize("memory_format", ["nchw", "channels_last"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_dcgan_bf16_is_the_pytorch_example(backend, memory_format, monkeypatch):
    _need(backend)
    monkeypatch.setenv("FASTGAN_CPU_KERNELS", "always")
    v, init, imgs, _, recs = run_fastgan("dcgan", backend, precision="bf16",
                                         memory_format=memory_format, channels=3)
    assert recs[0]["grads"]["G.net.0.conv.weight"].dtype == torch.float32   # fp32 parameters
    seed = _float64_example(recs, init, nc=3)
    worst = {"loss": 0.0, "grad": 0.0, "state": 0.0}
    for i, (r, s) in enumerate(zip(recs, seed)):
        for k in ("d_loss", "g_loss"):
            e = _err(r[k], s[k], 1.0)
            worst["loss"] = max(worst["loss"], e)
            assert e <= TOL_LOSS, f"iteration {i + 1}: {k} {e:.3e} from the float64 example"
        tol = TOL_GRAD_FIRST if i == 0 else TOL_GRAD
        for k, g in s["grads"].items():
            e = _rel_norm(r["grads"][k], g)
            worst["grad"] = max(worst["grad"], e)
            assert e <= tol, f"iteration {i + 1}: grad {k} {e:.3e} from the example"
        for k, t in r["state"].items():
            if not t.is_floating_point():
                continue
            assert t.dtype == torch.float32, f"{k} is {t.dtype}, not float32"
            e = _err(t, s["state"][k], 1.0)
            worst["state"] = max(worst["state"], e)
            assert e <= TOL_STATE, f"iteration {i + 1}: {k} {e:.3e} from the example"
    with torch.autocast("cpu", dtype=torch.bfloat16):   # PyTorch's own bf16 recipe
        plain = dcgan_example_records(recs, init, nc=3)
    assert worst["state"] <= _worst_state(plain, seed), "worse than the example under autocast"
    WORST[(backend, memory_format)] = worst
    print(f"\ndcgan bf16 {backend} {memory_format}: worst " +
          ", ".join(f"{k} {x:.2e}" for k, x in worst.items()))
