"""Fixtures of the parity harness: the seed, and each backend's set-up (poison, tiles, CPU
kernels) chosen by the test's ``backend`` parameter."""
from __future__ import annotations

import pytest

import ops_harness as H


@pytest.fixture
def seed():
    return H.make_seed()


@pytest.fixture(autouse=True)
def backend_setup(request, monkeypatch):
    params = getattr(request.node, "callspec", None)
    backend = params.params.get("backend") if params else None
    if backend not in H.SETUP or (backend == "cuda" and not H.HAS_EXT) or \
            (backend == "triton" and not H.HAS_TRITON):
        yield
        return
    with H.SETUP[backend](monkeypatch):
        yield
