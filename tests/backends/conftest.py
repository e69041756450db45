"""The backend-specific tests use the parity harness of tests/ops (ops_harness.py)."""
from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "ops"))

import ops_harness as H  # noqa: E402


@pytest.fixture
def seed():
    return H.make_seed()
