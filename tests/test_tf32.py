"""``fastgan.backends.tf32(enabled)`` turns TF32 on or off everywhere for its duration (cuBLAS
matmuls, cuDNN convolutions, the fp32 dots of the loaded Triton backend) and restores every
setting on exit, also when the body raises; ``fastgan train --no-tf32`` runs under it."""
from __future__ import annotations

import pytest
import torch

from fastgan import backends


def _flags():
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


@pytest.fixture
def flags_restored():
    before = _flags()
    yield before
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.mark.parametrize("start", [False, True])
@pytest.mark.parametrize("enabled", [False, True])
def test_torch_flags_set_and_restored(flags_restored, start, enabled):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = start
    with backends.tf32(enabled):
        assert _flags() == (enabled, enabled)
    assert _flags() == (start, start)


def test_restored_when_the_body_raises(flags_restored):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    with pytest.raises(RuntimeError, match="boom"):
        with backends.tf32(False):
            raise RuntimeError("boom")
    assert _flags() == (True, True)


def test_triton_dot_precision_follows(flags_restored, monkeypatch):
    pytest.importorskip("triton")
    from fastgan import ops
    if not ops.ensure_loaded("triton"):
        pytest.skip(f"triton backend unavailable: {ops.load_error('triton')}")
    from fastgan.kernels import config
    start = config.DOT_PRECISION
    # the environment's choice is what "tf32 allowed" means (so the interpreter's ieee default
    # is not mistaken for a follow)
    monkeypatch.setenv("FASTGAN_TRITON_DOT_PRECISION", "tf32x3")
    with backends.tf32(True):
        assert config.DOT_PRECISION == "tf32x3"
        with backends.tf32(False):
            assert config.DOT_PRECISION == "ieee"
            assert config.dot_precision(torch.float32) == "ieee"
        assert config.DOT_PRECISION == "tf32x3"
    assert config.DOT_PRECISION == start
    monkeypatch.delenv("FASTGAN_TRITON_DOT_PRECISION")
    with backends.tf32(True):
        assert config.DOT_PRECISION == ("ieee" if config.INTERPRET else "tf32")
    assert config.DOT_PRECISION == start


def test_backends_not_loaded_are_left_alone(flags_restored):
    import sys
    loaded = {b.name for b in backends.BACKENDS if b.module in sys.modules}
    with backends.tf32(False):
        pass
    assert {b.name for b in backends.BACKENDS if b.module in sys.modules} == loaded


def test_train_no_tf32_turns_it_off_for_the_run_only(flags_restored, make_idx_dataset, tmp_path,
                                                     monkeypatch, capsys):
    from fastgan.cli import main
    from fastgan.engine.iteration import Engine
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    seen = []
    step = Engine.step

    def recording_step(self):
        seen.append(_flags())
        step(self)
    monkeypatch.setattr(Engine, "step", recording_step)
    rc = main(["train", "--data-dir", make_idx_dataset(64), "--out", str(tmp_path / "run"),
               "--device", "cpu", "--backend", "reference", "--quiet", "--batch-size", "8",
               "--steps", "2", "--no-tf32"])
    assert rc == 0, capsys.readouterr().err
    assert seen == [(False, False)] * 2
    assert _flags() == (True, True)
