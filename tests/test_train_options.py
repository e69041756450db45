"""fastgan train's training options (issue 22): --ema, --augment, --r1/--r1-every, --loss hinge,
--spectral-norm. Each one is wired into the iteration (it changes what training computes), the
fast backends train like the reference with it (float64, 20 iterations, as
tests/test_backends_train.py), a resumed run continues bit for bit with it on, `fastgan sample`
and `fastgan eval` use the EMA generator unless --no-ema, and a combination that does not make
sense is one line. Graph replay vs eager with the options: the gpu test at the end."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from fastgan import ops
from fastgan.cli import main
from fastgan.engine import Engine, EngineOptions, Run, TrainConfig
from fastgan.engine import checkpoint as ckpt
from fastgan.engine import train_options
from fastgan.nn import losses
from fastgan.variants import VARIANTS, get_variant
from run_stubs import train_config as _cfg

SMALL = {"dcgan": dict(image_size=32, ngf=8, ndf=8, batch_size=8, channels=1),
         "mlp": dict(batch_size=8), "bigan": dict(batch_size=8), "gancls": dict(batch_size=4),
         "convgan": dict(batch_size=4)}
R1_VARIANTS = ("mlp", "convgan", "dcgan")      # D scores images alone
OPTIONS = {
    "ema": dict(ema_decay=0.9),
    "augment": dict(augment="translation,cutout,color"),
    "r1": dict(r1_gamma=1.0, r1_every=2),
    "hinge": dict(loss="hinge"),
    "spectral_norm": {},
}


def _applies(name, option, backend="reference"):
    if option == "r1":
        if name not in R1_VARIANTS or backend == "triton":
            return False
        return not (name == "dcgan" and backend == "cuda")    # bn_act: no double backward
    return True


def _setup(name, option, seed=3):
    v = get_variant(name, **SMALL[name])
    torch.manual_seed(seed)
    nets = v.build({})
    if option == "spectral_norm":
        ckpt.spectral_norm_nets(v, nets, 0, torch.device("cpu"))
    g = torch.Generator().manual_seed(4)
    s, c = v.hyper.image_size, v.hyper.channels
    imgs = torch.randint(0, 256, (128, c, s, s), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (128,), generator=g)
    return v, nets, imgs, labels


def _engine(v, nets, imgs, labels, option, **kw):
    return Engine(v, nets, imgs, labels,
                  EngineOptions(batch_size=v.hyper.batch_size, seed=11, **OPTIONS[option], **kw),
                  torch.device("cpu"))


def _state(eng):
    out = {f"{r}.{k}": t for r, net in eng.nets.items() for k, t in net.state_dict().items()}
    if eng.ema is not None:
        out.update({f"ema.{k}": t for k, t in eng.ema.module.state_dict().items()})
    return out


# ---- each option changes what training computes ----------------------------------------------

@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("name", list(VARIANTS))
def test_option_changes_training(name, option):
    """Four steps with the option differ from four steps without it, from the same start (an
    option that is parsed but not wired in fails here)."""
    if not _applies(name, option):
        pytest.skip(f"{option} does not apply to {name}")
    v, nets, imgs, labels = _setup(name, option)
    plain_nets = copy.deepcopy(nets)
    if option == "spectral_norm":   # the plain run: the same weights, no parametrization
        v, plain_nets, _, _ = _setup(name, "plain")
    with ops.use_backend("reference"):
        a = _engine(v, nets, imgs, labels, option)
        b = Engine(v, plain_nets, imgs, labels,
                   EngineOptions(batch_size=v.hyper.batch_size, seed=11), torch.device("cpu"))
        for _ in range(4):
            a.step()
            b.step()
    sa, sb = a.read_stats(), b.read_stats()
    if option == "ema":   # EMA leaves training alone: the average differs from G
        assert sa == sb
        g, e = nets["G"].state_dict(), a.ema.module.state_dict()
        assert any(not torch.equal(g[k], e[k]) for k in g if g[k].is_floating_point())
    else:
        assert sa != sb, f"{option} did not change {name}'s training"


def test_hinge_is_the_hinge_loss():
    lg = torch.tensor([-2.0, -0.5, 0.3, 1.7])
    with losses.override("hinge", generator=False):
        d = losses.bce(lg, 1.0) + losses.lsgan(lg, 0.0)
    with losses.override("hinge", generator=True):
        g = losses.bce(lg, 1.0)
    assert torch.allclose(d, torch.relu(1 - lg).mean() + torch.relu(1 + lg).sum())
    assert torch.allclose(g, -lg.mean())
    # outside the override: the variants' own losses
    assert torch.allclose(losses.bce(lg, 1.0), torch.nn.functional.softplus(-lg).mean())


def test_lazy_r1_runs_every_k_d_steps(monkeypatch):
    calls = []
    real = train_options.r1_penalty
    monkeypatch.setattr(train_options, "r1_penalty",
                        lambda *a, **k: calls.append(k or a[2]) or real(*a, **k))
    v, nets, imgs, labels = _setup("mlp", "r1")
    with ops.use_backend("reference"):
        eng = Engine(v, nets, imgs, labels, EngineOptions(batch_size=8, d_steps=2, r1_gamma=0.5,
                                                          r1_every=3), torch.device("cpu"))
        for _ in range(6):
            eng.step()
    assert len(calls) == 4 and calls[0] == pytest.approx(1.5)   # D steps 0, 3, 6, 9 of 12
    assert eng.d_count == 12


def test_graph_unroll_holds_whole_r1_periods():
    assert train_options.graph_unroll(1, 1, 16) == 16
    assert train_options.graph_unroll(4, 2, 16) == 8
    assert train_options.graph_unroll(3, 1, 4) == 12
    assert train_options.graph_unroll(5, 4, 2) == 5


# ---- parity: the fast backends train like the reference --------------------------------------

def _run(backend, v, nets, imgs, labels, option, iters=20):
    with ops.use_backend(backend):
        eng = _engine(v, nets, imgs, labels, option)
        stats = []
        for _ in range(iters):
            eng.step()
            stats.append(eng.read_stats())
    return stats, _state(eng)


@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("name", list(VARIANTS))
def test_backend_trains_like_reference_with_option(name, option, backend, float64_default,
                                                     monkeypatch):
    if backend not in ops.available_backends("cpu"):
        pytest.skip(f"{backend} backend not available on CPU: {ops.load_error(backend)}")
    if not _applies(name, option, backend):
        pytest.skip(f"{option} does not apply to {name} with {backend} (a one-line error)")
    if backend == "triton" and name != "mlp":   # CI time: ~1 minute per variant there
        pytest.skip("the Triton interpreter: mlp stands for the others")
    monkeypatch.setenv("FASTGAN_CPU_KERNELS", "always")
    v, nets, imgs, labels = _setup(name, option)
    ref_s, ref = _run("reference", v, copy.deepcopy(nets), imgs, labels, option)
    fast_s, fast = _run(backend, v, nets, imgs, labels, option)
    for i, (a, b) in enumerate(zip(ref_s, fast_s)):
        for k in a:
            assert math.isfinite(b[k]), f"iteration {i}: {k} is not finite"
            assert abs(a[k] - b[k]) <= 1e-7 * max(1.0, abs(a[k])), \
                f"iteration {i}: {k} {b[k]} vs reference {a[k]}"
    assert ref.keys() == fast.keys()
    for k in ref:
        p, q = ref[k].double(), fast[k].double()
        err = (p - q).norm() / p.norm().clamp_min(1e-12)
        assert err < 1e-7, f"{k}: relative difference {err:.2e} after 20 steps"


# ---- resume is bit-exact with each option on -------------------------------------------------

FLAGS = {"ema": dict(ema=500.0), "augment": dict(augment="translation,cutout,color"),
         "r1": dict(r1=1.0, r1_every=3), "hinge": dict(loss="hinge"),
         "spectral_norm": dict(spectral_norm=True)}


@pytest.mark.parametrize("option", list(FLAGS))
@pytest.mark.parametrize("name", ["mlp", "convgan"])
def test_resume_is_bit_identical_with_option(tiny_mnist, tmp_path, name, option):
    straight, split = tmp_path / "straight", tmp_path / "split"
    kw = dict(variant=name, **FLAGS[option])
    Run(_cfg(tiny_mnist, straight, steps=10, **kw)).train()
    Run(_cfg(tiny_mnist, split, steps=5, **kw)).train()
    # the options come back from the checkpoint (not given again)
    Run(_cfg(tiny_mnist, split, resume=str(split), steps=10, variant=None,
             backend=None)).train()
    a, b = ckpt.load_checkpoint(str(straight)), ckpt.load_checkpoint(str(split))
    assert a["step"] == b["step"] == 10
    assert b["config"][next(iter(FLAGS[option]))] == next(iter(FLAGS[option].values()))
    for role in a["nets"]:
        for k in a["nets"][role]:
            assert torch.equal(a["nets"][role][k], b["nets"][role][k]), f"{role}.{k}"
    assert ("ema" in a) == (option == "ema") == ("ema" in b)
    if option == "ema":
        for k, t in a["ema"]["module"].items():
            assert torch.equal(t, b["ema"]["module"][k]), f"ema.{k}"
        assert torch.equal(a["ema"]["decay"], b["ema"]["decay"])
    assert torch.equal(a["rng"]["engine"]["device"], b["rng"]["engine"]["device"])


# ---- sample / eval use the EMA generator -----------------------------------------------------

def test_sample_uses_the_ema_generator_unless_no_ema(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "run"
    Run(_cfg(tiny_mnist, out, steps=6, ema=200.0, spectral_norm=True)).train()
    st = ckpt.load_checkpoint(str(out))
    _, _, nets = ckpt.load_networks(str(out), torch.device("cpu"))
    _, _, raw = ckpt.load_networks(str(out), torch.device("cpu"), ema=False)
    for k, t in nets["G"].state_dict().items():
        assert torch.equal(t, st["ema"]["module"][k])
        assert torch.equal(raw["G"].state_dict()[k], st["nets"]["G"][k])
    assert any(not torch.equal(st["ema"]["module"][k], st["nets"]["G"][k])
               for k in st["nets"]["G"] if "weight" in k)
    for extra in ([], ["--no-ema"]):
        rc = main(["sample", "--checkpoint", str(out), "--device", "cpu", "--n", "4",
                   "--out", str(tmp_path / f"s{len(extra)}.png"), *extra])
        assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "s0.png").read_bytes() != (tmp_path / "s1.png").read_bytes()


# ---- bad combinations: one line each ---------------------------------------------------------

@pytest.mark.parametrize("args, says", [
    (["--variant", "dcgan", "--image-size", "32", "--r1", "1", "--backend", "cuda"],
     "BatchNorm needs double backward"),
    (["--variant", "gancls", "--r1", "1"], "R1 here is on images alone"),
    (["--variant", "bigan", "--r1", "1"], "R1 here is on images alone"),
    (["--r1", "1", "--backend", "triton"], "triton backend"),
    (["--r1", "-1"], "--r1 must be a gamma >= 0"),
    (["--r1", "1", "--r1-every", "0"], "--r1-every must be at least 1"),
    (["--ema", "0"], "--ema must be a half-life"),
    (["--ema", "nan"], "--ema must be a half-life"),
    (["--augment", "translation,flip"], "unknown policy 'flip'"),
    (["--augment", "color,color"], "repeated"),
])
def test_bad_combinations_are_one_line(tiny_mnist, tmp_path, capsys, args, says):
    argv = ["train", "--data-dir", str(tiny_mnist), "--out", str(tmp_path / "r"), "--device",
            "cpu", "--quiet", "--steps", "2", "--batch-size", "8"]
    if "--backend" not in args:
        argv += ["--backend", "reference"]
    if "--variant" not in args:
        argv += ["--variant", "mlp"]
    rc = main(argv + args)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and says in lines[0], err
    assert not (tmp_path / "r").exists()       # nothing written


def test_spectral_norm_cannot_change_on_resume(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "run"
    Run(_cfg(tiny_mnist, out, steps=2)).train()
    rc = main(["train", "--resume", str(out), "--steps", "4", "--device", "cpu", "--quiet",
               "--spectral-norm"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot change on resume" in err, err


# ---- GPU: graph replay equals eager with fed batches, with each option -----------------------

@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["reference", "cuda"])
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("name", ["mlp", "convgan", "dcgan"])
def test_graph_replay_matches_eager_with_option(name, option, backend):
    from fastgan.engine.graphs import GraphedIteration
    if backend not in ops.available_backends("cuda"):
        pytest.skip(f"backend {backend} not available")
    if not _applies(name, option, backend):
        pytest.skip(f"{option} does not apply to {name} with {backend}")
    dev = torch.device("cuda")
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    with ops.use_backend(backend):
        v, nets, imgs, labels = _setup(name, option)
        nets = {k: m.to(dev) for k, m in nets.items()}
        nets_g = copy.deepcopy(nets)
        mk = lambda n, **kw: Engine(v, n, imgs, labels, EngineOptions(   # noqa: E731
            batch_size=v.hyper.batch_size, seed=11, **OPTIONS[option], **kw), dev)
        eager, graphed = mk(nets), mk(nets_g)
        src = mk(copy.deepcopy(nets), seed=5)
        eager.draw_inside = graphed.draw_inside = False
        # the augmentations' draws come from each engine's own generator: start both alike
        graphed.gen.set_state(eager.gen.get_state())
        unroll = 2 if option == "r1" else 1      # r1_every 2: one captured period

        def feed(e):
            for k in ("real", "z", "z_g"):
                if getattr(src, k) is not None:
                    getattr(e, k).copy_(getattr(src, k))
        src.draw()
        feed(graphed)
        g = GraphedIteration(graphed, warmup=3, unroll=unroll)
        eager.gen.set_state(graphed.gen.get_state())
        for _ in range(4 // unroll):
            src.draw()
            feed(eager)
            feed(graphed)
            for _ in range(unroll):
                eager.step()
            g.replay()
        torch.cuda.synchronize()
        a, b = _state(eager), _state(graphed)
        for k in a:
            err = (a[k].float() - b[k].float()).norm() / a[k].float().norm().clamp_min(1e-12)
            assert err <= 1e-5, f"{name}/{backend}/{option} {k}: rel err {err:.2e}"


# ---- torchrun: two ranks train like one process with the options on --------------------------

@pytest.mark.parametrize("variant, extra, tol", [
    ("bigan", ["--ema", "500", "--augment", "translation,cutout,color", "--loss", "hinge",
               "--spectral-norm"], 1e-3),   # see below
    ("mlp", ["--r1", "1", "--r1-every", "2", "--sync-bn"], 3e-3),   # BN in G: synced
])
def test_torchrun_two_ranks_equal_one_process_with_options(tiny_mnist, tmp_path, variant, extra,
                                                           tol):
    """bigan's 1e-3: the two ranks sum their half-batch gradients in another order than one
    process, and Adam turns a rounding difference in a near-zero gradient (a bias) into a step
    of up to lr (2.2e-4 on D.net.0.bias, every run on a 2-core machine in 2026-12, the commit
    before gan_loss_stats too)."""
    from test_distributed import one_process_train, torchrun_train, worst_rel
    common = ["--variant", variant, "--data-dir", str(tiny_mnist), "--device", "cpu",
              "--backend", "reference", "--steps", "4", "--log-every", "2",
              "--checkpoint-every", "0", "--sample-every", "0", "--quiet", "--batch-size", "32",
              *extra]
    torchrun_train(common + ["--out", str(tmp_path / "two")])
    one_process_train([a for a in common if a != "--sync-bn"] + ["--out", str(tmp_path / "one")])
    a, b = ckpt.load_checkpoint(str(tmp_path / "two")), ckpt.load_checkpoint(str(tmp_path / "one"))
    flat = lambda st: {**{f"{r}.{k}": t for r, sd in st["nets"].items()  # noqa: E731
                          for k, t in sd.items()},
                       **{f"ema.{k}": t for k, t in st.get("ema", {}).get("module", {}).items()}}
    pa, pb = flat(a), flat(b)
    assert pa.keys() == pb.keys()
    err, where = worst_rel(pa, pb)
    assert err < tol, f"{where} differs by {err:.2e}"


def test_backend_auto_with_r1_picks_one_with_double_backward():
    from types import SimpleNamespace
    v, nets, _, _ = _setup("dcgan", "r1")
    cfg = SimpleNamespace(r1=1.0, backend="auto")
    avail = ("reference", "triton", "cuda")
    assert train_options.r1_backend(cfg, nets, "triton", avail) == "reference"   # BN in D
    _, mlp, _, _ = _setup("mlp", "r1")
    assert train_options.r1_backend(cfg, mlp, "triton", avail) == "cuda"
    assert train_options.r1_backend(cfg, mlp, "triton", ("reference", "triton")) == "reference"
    assert train_options.r1_backend(SimpleNamespace(r1=1.0, backend="triton"), mlp, "triton",
                                    avail) == "triton"     # given: the check's error, not a swap
