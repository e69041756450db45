"""--no-tf32 turns TF32 off for the run (cuBLAS matmuls and cuDNN convolutions), and a run
leaves the process's TF32 settings as it found them."""
from __future__ import annotations

import pytest
import torch

from fastgan.cli import main
from fastgan.engine.iteration import Engine
from fastgan.engine.precision import tf32_scope


def _flags():
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


@pytest.fixture
def tf32_on():
    """Both flags on before the test (cuDNN's default; matmul's after a TF32 run), restored."""
    old = _flags()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.parametrize("enabled", [False, True])
def test_scope_sets_both_and_restores(tf32_on, enabled):
    torch.backends.cuda.matmul.allow_tf32 = False      # the two differ before
    with tf32_scope(enabled):
        assert _flags() == (enabled, enabled)
    assert _flags() == (False, True)


def test_scope_restores_after_an_error(tf32_on):
    with pytest.raises(RuntimeError):
        with tf32_scope(False):
            raise RuntimeError("boom")
    assert _flags() == (True, True)


def test_train_no_tf32_turns_it_off_for_the_run_only(tf32_on, make_idx_dataset, tmp_path,
                                                     monkeypatch, capsys):
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
