"""The fast path by default (CPU; a GPU is faked where only the decision is tested): the CUDA-graph
choice per device and flag, the default's fallback where the graph cannot apply, a capture that
fails at run time (one warning, then exact eager training from the pre-capture state), and
that the choice is not a resumed setting."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from fastgan import ops
from fastgan.engine import Run, TrainConfig, UserError
from fastgan.engine.config import RESUMED_FIELDS, merge_resumed
from fastgan.engine.loop import fast_path
from fastgan.engine.validate import choose_graphs, decide_graphs

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def fake_gpu(monkeypatch):
    """torch.cuda.is_available() True: enough for the decision, which touches no GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_cpu_default_and_no_cuda_graphs_are_eager_cuda_graphs_is_the_error():
    for host in (False, True):
        assert choose_graphs(None, CPU, host) == (False, "CUDA graphs need a GPU")
        assert choose_graphs(False, CPU, host) == (False, "--no-cuda-graphs")
        with pytest.raises(UserError, match=r"--cuda-graphs needs a CUDA GPU and --device cuda "
                           r"\(this run is on cpu\); drop --cuda-graphs"):
            choose_graphs(True, CPU, host)


@pytest.mark.parametrize("host", [False, True])
def test_cuda_default_is_the_graph(fake_gpu, host):
    # A host-resident data set with one iteration per replay and one D step: fetched outside.
    assert choose_graphs(None, CUDA, host) == (True, "the default on a CUDA device")
    assert choose_graphs(True, CUDA, host) == (True, "--cuda-graphs")
    assert choose_graphs(False, CUDA, host) == (False, "--no-cuda-graphs")


@pytest.mark.parametrize("unroll,d_steps", [(2, 1), (1, 2)])
def test_host_resident_data_the_default_falls_back_cuda_graphs_refuses(fake_gpu, unroll,
                                                                      d_steps):
    use, why = choose_graphs(None, CUDA, True, unroll, d_steps)
    assert not use and why.startswith("a data set kept in host memory is fetched outside")
    with pytest.raises(UserError, match="use --graph-unroll 1 and --d-steps 1"):
        choose_graphs(True, CUDA, True, unroll, d_steps)
    # On the device the data set is gathered inside the graph: any unroll, any D steps.
    assert choose_graphs(None, CUDA, False, unroll, d_steps)[0]
    assert choose_graphs(False, CUDA, True, unroll, d_steps) == (False, "--no-cuda-graphs")


def _r(backend="triton", device=CUDA):
    return SimpleNamespace(backend=backend, device=device, main=True)


def test_the_default_falls_back_with_one_line_and_the_eager_auto_backend(fake_gpu, capsys):
    cfg = TrainConfig(backend="auto", graph_unroll=2)
    r = _r()
    decide_graphs(r, cfg, True, 1)
    err = capsys.readouterr().err
    assert not r.graphs and r.backend == ops.auto_backend("cuda", graph=False) == "reference"
    assert err.splitlines() == ["fastgan: training eagerly (no CUDA graph, backend reference "
                                "(auto, eager)): a data set kept in host memory is fetched "
                                "outside the graph, one batch per replay: use --graph-unroll 1 "
                                "and --d-steps 1, or a smaller data set"]
    # A named backend stays; --quiet silences the line; the graph says nothing here.
    r = _r("cuda")
    decide_graphs(r, TrainConfig(backend="cuda", graph_unroll=2, quiet=True), True, 1)
    assert (r.graphs, r.backend, capsys.readouterr().err) == (False, "cuda", "")
    r = _r()
    decide_graphs(r, TrainConfig(backend="auto"), False, 1)
    assert (r.graphs, r.backend, capsys.readouterr().err) == (True, "triton", "")
    # --no-cuda-graphs: asked for, nothing to say (its backend was resolved for eager already).
    r = _r("reference")
    decide_graphs(r, TrainConfig(backend="auto", cuda_graphs=False), False, 1)
    assert (r.graphs, capsys.readouterr().err) == (False, "")


def test_cpu_default_is_silent(capsys):
    r = _r("reference", CPU)
    decide_graphs(r, TrainConfig(backend="auto"), False, 1)
    assert (r.graphs, capsys.readouterr().err) == (False, "")


def test_the_graph_choice_is_not_resumed():
    assert "cuda_graphs" not in RESUMED_FIELDS and "graph_unroll" not in RESUMED_FIELDS
    for saved in (True, False):
        cfg = TrainConfig(resume="run")
        merge_resumed(cfg, {"config": {"cuda_graphs": saved, "graph_unroll": 4}})
        assert cfg.cuda_graphs is None and cfg.graph_unroll == 1


# ---- a capture that fails at run time ------------------------------------------------------

def _cfg(d, out, **kw):
    return TrainConfig(variant="mlp", data_dir=d, out=str(out), device="cpu", steps=6,
                       batch_size=8, log_every=3, sample_every=0, checkpoint_every=0,
                       quiet=True, backend="reference", **kw)


def _params(run):
    return [p.detach().clone() for net in run.nets.values() for p in net.parameters()]


class WarmsUpThenFails:
    """A capture whose warm-up trains (as GraphedIteration's does) before the CUDA error."""
    calls = 0

    def __init__(self, engine, warmup=3, unroll=1):
        type(self).calls += 1
        for _ in range(2):
            engine.step()
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\n"
                           "CUDA kernel errors might be asynchronously reported")


def _graph_run(cfg):
    """A CPU run told it chose the graph, with capturable optimizers, as it would on CUDA."""
    run = Run(cfg)
    run.graphs = True
    fast_path.build_engine(run, run.engine.resident, capturable=True)
    return run


def test_failed_capture_warns_once_and_trains_eagerly_from_the_same_state(
        make_idx_dataset, tmp_path, capsys):
    d = make_idx_dataset(128)
    run = _graph_run(_cfg(d, tmp_path / "a"))
    old_engine, before = run.engine, _params(run)
    with ops.use_backend(run.backend):
        step, unroll = fast_path.runner(run, capture=WarmsUpThenFails)
    err = capsys.readouterr().err
    assert err.splitlines() == ["fastgan: warning: the CUDA graph capture failed (RuntimeError: "
                                "CUDA error: operation not permitted when stream is capturing); "
                                "training eagerly (--no-cuda-graphs skips the capture)"]
    assert unroll == 1 and not run.graphs
    assert run.engine is not old_engine and not run.engine.opts.capturable
    assert step == run.engine.step
    # The warm-up's two steps are undone: the state is the pre-capture one, in the new engine.
    assert all(torch.equal(a, b) for a, b in zip(_params(run), before))
    with ops.use_backend(run.backend):
        for _ in range(4):
            step()
    eager = Run(_cfg(d, tmp_path / "b"))
    with ops.use_backend(eager.backend):
        for _ in range(4):
            eager.engine.step()
    assert all(torch.equal(a, b) for a, b in zip(_params(run), _params(eager)))


def test_failed_capture_in_a_whole_run_ends_like_an_eager_run(make_idx_dataset, tmp_path,
                                                             capsys, monkeypatch):
    """Through Run.train (the loop's runner): no traceback, the steps and losses of eager."""
    d = make_idx_dataset(128)
    monkeypatch.setattr(fast_path, "GraphedIteration", WarmsUpThenFails)
    WarmsUpThenFails.calls = 0
    res = _graph_run(_cfg(d, tmp_path / "a")).train()
    assert WarmsUpThenFails.calls == 1
    assert sum("capture failed" in ln for ln in capsys.readouterr().err.splitlines()) == 1
    ref = Run(_cfg(d, tmp_path / "b")).train()
    assert res["step"] == ref["step"] == 6
    assert res["last"]["d_loss"] == ref["last"]["d_loss"]
    assert res["last"]["g_loss"] == ref["last"]["g_loss"]


def test_failed_capture_switches_auto_to_the_eager_backend(make_idx_dataset, tmp_path, capsys,
                                                          monkeypatch):
    d = make_idx_dataset(128)
    run = _graph_run(_cfg(d, tmp_path / "a"))
    run.cfg.backend, run.backend = "auto", "cuda"        # as auto in a graph on CUDA would
    seen = []
    monkeypatch.setattr(fast_path.ops, "resolve_backend",
                        lambda name, dev, graph=True, variant=None:
                        seen.append((name, dev, graph, variant)) or "reference")
    with ops.use_backend("reference"):
        fast_path.runner(run, capture=WarmsUpThenFails)
        assert ops.active_backend() == "reference"
    # eager auto for the run's own variant (its measured order)
    assert seen == [("auto", "cpu", False, run.cfg.variant)] and run.backend == "reference"
    assert "training eagerly with backend reference (auto, eager)" in capsys.readouterr().err


def test_eager_that_cannot_start_either_is_one_user_error(make_idx_dataset, tmp_path,
                                                          monkeypatch):
    d = make_idx_dataset(128)
    run = _graph_run(_cfg(d, tmp_path / "a"))

    def broken(*a, **k):
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore")
    monkeypatch.setattr(fast_path, "build_engine", broken)
    with pytest.raises(UserError, match=r"^the CUDA graph capture failed \(RuntimeError: CUDA "
                       r"error: operation not permitted when stream is capturing\) and eager "
                       r"training could not start either \(RuntimeError: CUDA error: an illegal "
                       r"memory access was encountered\)$"):
        fast_path.runner(run, capture=WarmsUpThenFails)


def test_eager_runs_never_capture(make_idx_dataset, tmp_path):
    run = Run(_cfg(make_idx_dataset(128), tmp_path / "a"))
    assert run.graphs is False
    step, unroll = fast_path.runner(run, capture=WarmsUpThenFails)
    assert (step, unroll) == (run.engine.step, 1)
