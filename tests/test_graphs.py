"""CUDA-graph capture of the iteration (GPU only): replays compute what eager steps compute, the
in-graph RNG advances, and the trainer runs every variant and backend with --cuda-graphs."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from fastgan import ops
from fastgan.engine import Engine, EngineOptions, Run, TrainConfig
from fastgan.engine.graphs import GraphedIteration
from fastgan.variants import VARIANTS, get_variant

pytestmark = pytest.mark.gpu

SMALL = {"dcgan": {"image_size": 32, "ngf": 16, "ndf": 16, "batch_size": 16}}


def _setup(name, backend, **kw):
    v = get_variant(name, **{**SMALL.get(name, {}), **kw})
    torch.manual_seed(0)
    nets = {k: m.cuda() for k, m in v.build({}).items()}
    g = torch.Generator().manual_seed(1)
    s, c = v.hyper.image_size, v.hyper.channels
    imgs = torch.randint(0, 256, (512, c, s, s), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (512,), generator=g)
    return v, nets, imgs, labels


def _engine(v, nets, imgs, labels, **kw):
    return Engine(v, nets, imgs, labels, EngineOptions(batch_size=v.hyper.batch_size, **kw),
                  torch.device("cuda"))


def _feed(src, dst):
    """Copy one engine's freshly drawn batch into the other's static buffers."""
    for name in ("real", "z", "batch_labels", "mis_labels", "z_g"):
        a, b = getattr(src, name), getattr(dst, name)
        if a is not None:
            b.copy_(a)


@pytest.fixture(autouse=True)
def deterministic():
    old = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old


def _backends():
    return [b for b in ("reference", "triton", "cuda") if b in ops.available_backends("cuda")]


@pytest.mark.parametrize("backend", ["reference", "triton", "cuda"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_graph_replays_match_eager_steps(name, backend):
    if backend not in ops.available_backends("cuda"):
        pytest.skip(f"backend {backend} not available: {ops.load_error(backend)}")
    with ops.use_backend(backend):
        v, nets, imgs, labels = _setup(name, backend)
        nets_g = copy.deepcopy(nets)
        eager = _engine(v, nets, imgs, labels)
        graphed = _engine(v, nets_g, imgs, labels)
        graphed.draw_inside = eager.draw_inside = False
        # The same batches for both: drawn by a third engine, fed as static inputs (graph RNG
        # and eager RNG are different streams, the two never share a sequence).
        src = _engine(v, copy.deepcopy(nets), imgs, labels, seed=5)
        src.draw()
        if src.z_g is not None:
            src.draw_g_noise()
        _feed(src, graphed)
        g = GraphedIteration(graphed, warmup=3)
        for _ in range(5):
            src.draw()
            if src.z_g is not None:
                src.draw_g_noise()
            _feed(src, eager)
            _feed(src, graphed)
            eager.step()
            g.replay()
        torch.cuda.synchronize()
        for role in nets:
            sa, sb = nets[role].state_dict(), nets_g[role].state_dict()
            for k in sa:
                a, b = sa[k].float(), sb[k].float()
                assert torch.isfinite(b).all(), f"{role}.{k}"
                err = (a - b).norm() / a.norm().clamp_min(1e-12)
                assert err <= 1e-6, f"{name}/{backend} {role}.{k}: rel err {err:.2e}"
        ea, eb = eager.read_stats(), graphed.read_stats()
        for k in ea:
            assert math.isclose(ea[k], eb[k], rel_tol=1e-5, abs_tol=1e-6), k


def test_in_graph_rng_advances_every_replay():
    v, nets, imgs, labels = _setup("mlp", "reference")
    e = _engine(v, nets, imgs, labels)
    g = GraphedIteration(e, warmup=2)
    seen = []
    for _ in range(3):
        g.replay()
        seen.append((e.z.clone(), e.idx.clone()))
    torch.cuda.synchronize()
    assert not torch.equal(seen[0][0], seen[1][0])
    assert not torch.equal(seen[1][1], seen[2][1])
    assert 0 <= int(seen[0][1].min()) and int(seen[0][1].max()) < imgs.shape[0]


def test_warmup_leaves_no_trace():
    """Capturing (with its warm-up iterations) must not change the training state."""
    v, nets, imgs, labels = _setup("dcgan", "reference")
    e = _engine(v, nets, imgs, labels)
    e.step()   # create optimizer state first
    # detach: a clone of a parameter would keep its AccumulateGrad node (and the stream it ran
    # on) alive through the capture
    before = [t.detach().clone() for t in e.state_tensors()]
    GraphedIteration(e, warmup=3)
    for a, b in zip(e.state_tensors(), before):
        assert torch.equal(a, b)


@pytest.mark.parametrize("opts", [dict(d_steps=2), dict(precision="bf16"),
                                  dict(graph_unroll=4)])
@pytest.mark.parametrize("name", ["mlp", "gancls", "dcgan"])
def test_trainer_cuda_graphs(tmp_path, name, opts, make_idx_dataset):
    d = make_idx_dataset(256)
    vopts = {"ngf": 16, "ndf": 16} if name == "dcgan" else {}
    cfg = TrainConfig(variant=name, data_dir=d, out=str(tmp_path / "run"), device="cuda",
                      backend="auto", cuda_graphs=True, steps=40, log_every=8,
                      sample_every=0, checkpoint_every=0, quiet=True,
                      image_size=32 if name == "dcgan" else None, variant_options=vopts,
                      **{k: v for k, v in opts.items() if k != "precision"},
                      precision=opts.get("precision"))
    res = Run(cfg).train()
    assert res["step"] == 40
    assert math.isfinite(res["last"]["d_loss"]) and math.isfinite(res["last"]["g_loss"])
    # resume in graph mode: the graph is rebuilt from the checkpoint
    cfg2 = TrainConfig(resume=str(tmp_path / "run"), device="cuda", cuda_graphs=True, steps=48,
                       log_every=8, sample_every=0, checkpoint_every=0, quiet=True,
                       **{k: v for k, v in opts.items() if k in ("graph_unroll",)})
    res2 = Run(cfg2).train()
    assert res2["step"] == 48


def test_host_resident_data_with_graphs(tmp_path, make_idx_dataset):
    """A data set kept in pinned host memory: fetched outside the graph before each replay."""
    d = make_idx_dataset(256)
    cfg = TrainConfig(variant="gancls", data_dir=d, out=str(tmp_path / "run"),
                      device="cuda", backend="reference", cuda_graphs=True, data_on="host",
                      steps=20, log_every=5, sample_every=0, checkpoint_every=0, quiet=True)
    run = Run(cfg)
    assert not run.engine.resident
    res = run.train()
    assert res["step"] == 20 and math.isfinite(res["last"]["d_loss"])


def test_the_default_on_cuda_is_the_graph(tmp_path, make_idx_dataset, capsys):
    """No flag: the graph, with auto's graph-mode backend; --no-cuda-graphs: eager, with auto's
    eager backend; host-resident data that the graph cannot take: eager, with one line."""
    d = make_idx_dataset(256)
    kw = dict(variant="mlp", data_dir=d, device="cuda", backend="auto", steps=8, log_every=4,
              sample_every=0, checkpoint_every=0)
    run = Run(TrainConfig(out=str(tmp_path / "a"), **kw))
    assert run.graphs and run.engine.opts.capturable
    assert run.backend == ops.auto_backend("cuda", graph=True)
    assert run.train()["step"] == 8
    err = capsys.readouterr().err
    assert "+ CUDA graphs" in err and "captured 1 iteration(s) in a CUDA graph" in err
    run = Run(TrainConfig(out=str(tmp_path / "b"), cuda_graphs=False, **kw))
    assert not run.graphs and not run.engine.opts.capturable and run.backend == "reference"
    run = Run(TrainConfig(out=str(tmp_path / "c"), data_on="host", graph_unroll=2, **kw))
    assert not run.graphs and run.backend == "reference"
    assert "fastgan: training eagerly (no CUDA graph" in capsys.readouterr().err


def test_a_capture_that_fails_on_the_gpu_trains_eagerly(tmp_path, make_idx_dataset, capsys,
                                                        monkeypatch):
    """A real warm-up on the GPU, then an error: one warning, eager training, no traceback."""
    from fastgan.engine.loop import fast_path

    class FailsAfterWarmUp(GraphedIteration):
        def __init__(self, engine, warmup=3, unroll=1):
            for _ in range(warmup):
                engine.step()
            raise RuntimeError("CUDA error: operation failed due to a previous error during "
                               "capture")
    monkeypatch.setattr(fast_path, "GraphedIteration", FailsAfterWarmUp)
    d = make_idx_dataset(256)
    run = Run(TrainConfig(variant="mlp", data_dir=d, out=str(tmp_path / "a"), device="cuda",
                          backend="auto", steps=8, log_every=4, sample_every=0,
                          checkpoint_every=0))
    res = run.train()
    assert res["step"] == 8 and math.isfinite(res["last"]["d_loss"])
    assert not run.graphs and not run.engine.opts.capturable and run.backend == "reference"
    assert "fastgan: warning: the CUDA graph capture failed" in capsys.readouterr().err
