"""kernels/launch.py: direct launches of compiled Triton kernels for a call signature seen before
(FASTGAN_TRITON_LAUNCH=cached). On any machine, against a stand-in for Triton's JIT function and
compiled kernel: what is cached per signature, what a replay passes (grid, stream, every
argument in signature order with the constexprs and the autotuner's config), what is never
replayed, the one-time fallback when a direct launch fails. On a GPU, against the real kernels:
every op and a training iteration equal, bit for bit, to Triton's own launches."""
from __future__ import annotations

import inspect
import warnings

import pytest
import torch

from fastgan.kernels import launch

# ---------------------------------------------------------------------------------- stand-ins


class _Param:
    def __init__(self, name, constexpr, default=inspect.Parameter.empty):
        self.name, self.is_constexpr, self._default = name, constexpr, default

    @property
    def default(self):
        return self._default

    @property
    def has_default(self):
        return self._default is not inspect.Parameter.empty


class _Compiled:
    function, packed_metadata = "fn-handle", "packed"

    def __init__(self, log, fail=False):
        self.log, self.fail = log, fail

    def run(self, *a):
        if self.fail:
            raise TypeError("launcher takes other arguments")
        self.log.append(("direct",) + a)


class _Jit:
    """Triton's JITFunction as the wrapper sees it: arg_names, params, fn[grid](...)."""

    def __init__(self, params, fail=False):
        self.params = params
        self.arg_names = [p.name for p in params]
        self.log, self.fail = [], fail

    def __getitem__(self, grid):
        def run(*args, **meta):
            self.log.append(("jit", grid, args, meta))
            return _Compiled(self.log, self.fail)
        return run


class _Config:
    def __init__(self, kwargs):
        self.kwargs, self.pre_hook = kwargs, None


class _Autotuner:
    def __init__(self, jit, best):
        self.fn, self.configs, self._best = jit, [best], best
        self.cache = {"k": best}

    def __getitem__(self, grid):
        def run(*args, **meta):
            self.best_config = self._best
            return self.fn[grid](*args, **dict(meta, **self._best.kwargs))
        return run


class _Driver:
    def get_current_device(self):
        return 0

    def get_current_stream(self, device):
        return 1234


@pytest.fixture
def on(monkeypatch):
    monkeypatch.setattr(launch.STATE, "on", True)
    monkeypatch.setattr(launch, "_driver", lambda: _Driver())
    monkeypatch.setattr(launch, "_hooks", lambda: (None, None))


def _kernel(**kw):
    return _Jit([_Param("x_ptr", False), _Param("n", False), _Param("scale", False),
                 _Param("ACT", True), _Param("BLOCK", True, 128)], **kw)


def test_a_signature_seen_before_is_launched_directly(on):
    jit = _kernel()
    k = launch.CachedKernel(jit)
    x = torch.zeros(64)
    k[(3,)](x, 64, 0.5, ACT=2)                       # first: Triton's own path
    k[(3,)](x, 64, 0.25, ACT=2)                      # same signature (a float is not in it)
    assert [e[0] for e in jit.log] == ["jit", "direct"]
    # grid padded to 3, the stream, the handles, no launch metadata or hooks, then every
    # argument in signature order: the runtime ones as given, the constexprs (BLOCK's default)
    assert jit.log[1] == ("direct", 3, 1, 1, 1234, "fn-handle", "packed", None, None, None,
                          x, 64, 0.25, 2, 128)
    assert k.hits == 1


@pytest.mark.parametrize("change", ["int", "misaligned", "dtype", "constexpr", "bool"])
def test_another_signature_goes_through_triton(on, change):
    jit = _Jit([_Param("x_ptr", False), _Param("n", False), _Param("flag", False),
                _Param("ACT", True)])
    k = launch.CachedKernel(jit)
    buf = torch.zeros(80)
    x, n, flag, act = buf[:64], 64, True, 2
    k[(1,)](x, n, flag, ACT=act)
    if change == "int":
        n = 65
    elif change == "misaligned":
        x = buf[1:65]                                # 4 bytes off a 16-byte boundary
    elif change == "dtype":
        x = torch.zeros(64, dtype=torch.float64)
    elif change == "constexpr":
        act = 3
    else:
        flag = False
    k[(1,)](x, n, flag, ACT=act)
    assert [e[0] for e in jit.log] == ["jit", "jit"]
    k[(1,)](x, n, flag, ACT=act)                     # and that one is cached in turn
    assert [e[0] for e in jit.log] == ["jit", "jit", "direct"]


def test_autotuned_kernel_replays_its_config_and_grid(on):
    jit = _Jit([_Param("x_ptr", False), _Param("P", False), _Param("ACT", True),
                _Param("BLOCK_P", True)])
    k = launch.CachedKernel(_Autotuner(jit, _Config({"BLOCK_P": 32})))
    x = torch.zeros(100)
    grid = lambda meta: ((meta["P"] + meta["BLOCK_P"] - 1) // meta["BLOCK_P"],)  # noqa: E731
    k[grid](x, 100, ACT=1)
    k[grid](x, 100, ACT=1)
    assert jit.log[1] == ("direct", 4, 1, 1, 1234, "fn-handle", "packed", None, None, None,
                          x, 100, 1, 32)
    assert k.cache == {"k": k.configs[0]}            # the Autotuner's own attributes


def test_calls_that_cannot_be_replayed_never_are(on, monkeypatch):
    jit = _kernel()
    k = launch.CachedKernel(jit)
    x = torch.zeros(8)
    for _ in range(2):                               # a runtime argument passed by name
        k[(1,)](x, 8, scale=1.0, ACT=0)
    for _ in range(2):                               # an argument of no known kind
        k[(1,)](x, 8, [1.0], ACT=0)
    with launch.suspended():                         # the kernel count's mode
        for _ in range(2):
            k[(1,)](x, 8, 1.0, ACT=1)
    monkeypatch.setattr(launch, "_hooks", lambda: (print, None))   # a profiler's launch hook
    k[(1,)](x, 8, 1.0, ACT=1)
    assert all(e[0] == "jit" for e in jit.log) and len(jit.log) == 7


def test_a_failing_direct_launch_turns_it_off_once(on):
    jit = _kernel(fail=True)
    k = launch.CachedKernel(jit)
    x = torch.zeros(8)
    k[(1,)](x, 8, 1.0, ACT=0)
    with pytest.warns(RuntimeWarning, match="direct Triton launches are off"):
        k[(1,)](x, 8, 1.0, ACT=0)                    # relaunched through Triton
    assert not launch.STATE.on
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        k[(1,)](x, 8, 1.0, ACT=0)
    assert [e[0] for e in jit.log] == ["jit", "jit", "jit"]


def test_the_setting(monkeypatch):
    monkeypatch.setenv(launch.ENV, "bogus")
    with pytest.raises(ValueError, match="FASTGAN_TRITON_LAUNCH='bogus'"):
        launch._from_env()
    monkeypatch.setenv(launch.ENV, "jit")
    assert launch._from_env() is False
    monkeypatch.setenv(launch.ENV, "cached")
    assert launch._from_env() is (not launch.config.INTERPRET)
    monkeypatch.delenv(launch.ENV)
    assert launch._from_env() is False               # off until measured on a GPU


# ---------------------------------------------------------------------------------- on a GPU

@pytest.mark.gpu
def test_every_op_and_an_iteration_equal_triton_launches():
    """mlp and dcgan (every Triton kernel between them) for three eager iterations with direct
    launches: the same parameters, bit for bit, as with Triton's own; and the replays happen."""
    import os
    if not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("needs a GPU without the interpreter")
    from fastgan import ops
    from fastgan.engine import Engine, EngineOptions
    from fastgan.variants import get_variant
    from fastgan.kernels import gan_loss, matmul
    for k in launch.WRAPPED:
        k._cache.clear()
    for name, kw in (("mlp", {}), ("dcgan", dict(image_size=32, ngf=8, ndf=8, batch_size=8))):
        out = []
        for direct in (False, True):
            old = launch.set_enabled(direct)
            try:
                v = get_variant(name, **kw)
                g = torch.Generator().manual_seed(0)
                s, c = v.hyper.image_size, v.hyper.channels
                imgs = torch.randint(0, 256, (64, c, s, s), generator=g, dtype=torch.uint8)
                torch.manual_seed(0)
                with ops.use_backend("triton"):
                    e = Engine(v, v.build({}), imgs, None,
                               EngineOptions(batch_size=v.hyper.batch_size, seed=3),
                               torch.device("cuda"))
                    for _ in range(3):
                        e.step()
                torch.cuda.synchronize()
                out.append([t.detach().clone() for t in e.state_tensors()])
            finally:
                launch.set_enabled(old)
        for a, b in zip(*out):
            assert torch.equal(a, b), name
    assert matmul.mm_kernel.hits > 0 and gan_loss._gan_loss_kernel.hits > 0
    # every wrapped kernel that ran was replayed: no launch site passes its arguments so that
    # the wrapper must leave it to Triton
    ran = [k for k in launch.WRAPPED if k._cache]
    assert ran and all(k.replayable() for k in ran), \
        [(k._names[0], k.hits, k.replayable()) for k in ran]
