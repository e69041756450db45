"""Longer checks (marked slow, `make test-slow`, not in CI): mlp and convgan trained on real
MNIST produce digit-like samples. The grids are kept in runs/slow/ to be looked at; the test
checks what can be checked without a classifier: samples differ from one another, are mostly
ink-or-paper like real digits, and D has not won outright."""
from __future__ import annotations

import json
import os

import pytest
import torch

from fastgan.engine import Run, TrainConfig
from fastgan.engine.sampling import fixed_noise, generate

pytestmark = pytest.mark.slow
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name,steps", [("mlp", 3000), ("convgan", 4500)])
def test_digit_like_samples(name, steps, mnist_dir):
    out = os.path.join(REPO, "runs", "slow", name)
    run = Run(TrainConfig(variant=name, data_dir=str(mnist_dir), out=out, device="cpu",
                          steps=steps, log_every=250, sample_every=steps, quiet=True))
    run.train()
    z, labels, _ = fixed_noise(run.variant, 256, 123, run.device)
    x = generate(run.variant, run.nets, z, labels)           # [0, 1]
    assert torch.isfinite(x).all()
    per_pixel_std = x.flatten(1).std(0).mean()
    assert per_pixel_std > 0.15, "samples collapsed to (nearly) one image"
    ink_or_paper = ((x < 0.15) | (x > 0.85)).float().mean()
    assert ink_or_paper > 0.75, f"samples are grey noise ({ink_or_paper:.2f} ink-or-paper)"
    ink = (x > 0.5).float().mean()
    assert 0.05 < ink < 0.35, f"ink fraction {ink:.2f} is not digit-like (MNIST: ~0.13)"
    last = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))][-1]
    assert last["d_fake"] > 0.05, "D rejects every sample: G has failed"
