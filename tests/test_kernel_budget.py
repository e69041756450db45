"""Kernels per iteration, held to each variant's budget without a GPU.

The count is the CPU dispatch proxy of fastgan/benchmark/kernel_count.py (each ATen compute op,
each fused-op launch; views and metadata excluded) of one training iteration after two warm-up
iterations, at the variant's tiny bench configuration (``BenchSettings.tiny_batch`` and
``tiny_overrides``): the count does not depend on the batch size (checked below), only on the
architecture. The budgets live in one place, each variant's ``BenchSettings.kernel_budget``
(the cuda backend, its C++ kernels forced on as on a GPU) and ``kernel_budget_reference``.
A kernel added to the iteration fails here; a kernel removed fails too until the budget is
lowered to the new count, so the budget is always the count.
"""
from __future__ import annotations

import pytest
import torch

from fastgan import ops
from fastgan.benchmark.kernel_count import count_work, gpu_like_cpu_kernels, gpu_like_optimizers
from fastgan.benchmark.paths import make_runner
from fastgan.variants import VARIANTS, bench_settings, get_variant

BACKENDS = {"cuda": "kernel_budget", "reference": "kernel_budget_reference",
            "triton": "kernel_budget_triton"}


def _need(backend):
    if backend not in ops.available_backends("cpu"):
        pytest.skip(f"{backend} backend not available on CPU: {ops.load_error(backend)}")


def count(name: str, backend: str, batch: int = 0) -> dict:
    s = bench_settings(name)
    with ops.use_backend(backend), gpu_like_cpu_kernels():
        r = make_runner(f"fastgan-{backend}", name, batch or s.tiny_batch, "fp32",
                        dict(s.tiny_overrides), torch.device("cpu"))
        try:
            r.build()
            assert gpu_like_optimizers(r.engine)
            r.run(2)   # optimizer state and every cached constant exist from here on
            return count_work(lambda: r.run(1))
        finally:
            r.close()


def test_every_variant_states_its_budgets():
    for name in VARIANTS:
        s = bench_settings(name)
        for field in BACKENDS.values():
            assert isinstance(getattr(s, field), int), f"{name}: BenchSettings.{field} unset"


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("name", list(VARIANTS))
def test_kernels_per_iteration_within_budget(name, backend):
    _need(backend)
    budget = getattr(bench_settings(name), BACKENDS[backend])
    c = count(name, backend)
    assert c["host_syncs"] == 0, f"{name}/{backend}: {c['host_syncs']} host syncs per iteration"
    assert c["kernels"] <= budget, (
        f"{name}/{backend}: {c['kernels']} kernels per iteration, budget {budget} "
        f"(fastgan/variants/{name}.py, BenchSettings): {c['by_op']}")
    assert c["kernels"] == budget, (
        f"{name}/{backend}: {c['kernels']} kernels per iteration, fewer than the budget "
        f"{budget}: lower BenchSettings.{BACKENDS[backend]} in fastgan/variants/{name}.py")


@pytest.mark.parametrize("name", list(VARIANTS))
def test_the_count_does_not_depend_on_the_batch(name):
    """What lets the budget be counted at tiny shapes."""
    _need("cuda")
    tiny = bench_settings(name).tiny_batch
    a, b = count(name, "cuda"), count(name, "cuda", 2 * tiny)
    assert a["by_op"] == b["by_op"], name


def test_budget_catches_one_more_kernel(monkeypatch):
    """The check fails when the iteration gains one op: one more in-place op on the noise."""
    _need("cuda")
    name = "bigan"
    v = VARIANTS[name]
    orig = v.fill_noise

    def fill_noise(self, z, labels, generator):
        orig(self, z, labels, generator)
        z.mul_(1.0)
    before = count(name, "cuda")["kernels"]
    monkeypatch.setattr(v, "fill_noise", fill_noise)
    after = count(name, "cuda")["kernels"]
    assert after == before + 1     # bigan draws its noise once an iteration
    assert after > bench_settings(name).kernel_budget


def test_mlp_training_noise_is_the_seeds_bit_for_bit():
    """np.random.normal(-1, 1) / 2 drawn as N(-0.5, 0.5²): the same numbers, as halving is
    exact in binary floating point (any size: the CPU generator's scalar and vector paths)."""
    v = get_variant("mlp")
    for dtype in (torch.float32, torch.float64):
        for n in (1, 3, 32, 64):
            z = torch.empty(n, 5 if n < 4 else 100, dtype=dtype)
            v.fill_train_noise(z, None, torch.Generator().manual_seed(n))
            want = torch.empty_like(z).normal_(-1.0, 1.0, generator=torch.Generator()
                                               .manual_seed(n)).div_(2.0)
            assert torch.equal(z, want), (dtype, n)


def test_bench_rows_state_the_budget_where_they_count_the_same():
    from types import SimpleNamespace

    from fastgan.benchmark.measure import _budget
    s = bench_settings("dcgan")
    row = lambda path, ov: SimpleNamespace(name=path, variant_name="dcgan", overrides=ov)  # noqa
    assert _budget(row("fastgan-cuda", dict(s.tiny_overrides))) == s.kernel_budget
    assert _budget(row("fastgan-reference", dict(s.tiny_overrides))) == \
        s.kernel_budget_reference
    assert _budget(row("fastgan-triton", dict(s.tiny_overrides))) == s.kernel_budget_triton
    assert _budget(row("fastgan-cuda", {})) is None            # 64x64: more layers
    # a graph row replays the same iteration: the same budget (GPU rows carry it beside the
    # profiler's count)
    assert _budget(row("fastgan-cuda-graph", dict(s.tiny_overrides))) == s.kernel_budget
    assert _budget(row("compile-default", dict(s.tiny_overrides))) is None


def test_readme_states_the_budgets():
    """The README's table is a copy of the BenchSettings: it must say the same numbers."""
    import pathlib
    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    part = text.split("### Kernels per iteration", 1)[1].split("\n### ", 1)[0]
    rows = {}
    for line in part.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] in VARIANTS:
            rows[cells[0]] = (int(cells[2]), int(cells[3]), int(cells[4]))
    assert rows == {n: (bench_settings(n).kernel_budget_triton, bench_settings(n).kernel_budget,
                        bench_settings(n).kernel_budget_reference) for n in VARIANTS}


def test_triton_custom_ops_count_as_their_launches():
    """A fastgan_triton custom op is the Triton kernels it launches, not one more."""
    _need("triton")
    x, w = torch.randn(8, 16), torch.randn(24, 16)
    m, one = torch.zeros(24), torch.ones(24)
    with ops.use_backend("triton"), torch.no_grad():
        c = count_work(lambda: ops.linear_act(x, w, None, 0.2, (m, one, one, m, 1e-3)))
    assert c["by_op"] == {"triton._mm_kernel": 1}, c["by_op"]


def test_the_gpu_adam_is_one_launch_per_network_with_its_table_not_counted():
    """Both Adam forms switched to their GPU kernel: one launch per step, even when fresh grads
    make it rebuild its tensor table (host work on CPU tensors, one copy on a GPU)."""
    from fastgan.engine.optim import EpsHatAdam
    ps = [torch.randn(5, 3, requires_grad=True), torch.randn(7, requires_grad=True)]
    from types import SimpleNamespace
    eng = SimpleNamespace(opt_d=EpsHatAdam(ps, lr=1e-3, eps=1e-7),
                          opt_g=torch.optim.Adam(ps, lr=1e-3, fused=True))
    assert eng.opt_d.fused == "torch" and gpu_like_optimizers(eng)
    assert eng.opt_d.fused == "triton" and type(eng.opt_g).__name__ == "TorchFormAdam"
    for opt in (eng.opt_d, eng.opt_g):
        for i in range(3):
            for p in ps:
                p.grad = torch.randn_like(p)    # new addresses: the table is rebuilt
            c = count_work(opt.step)
            if i:    # the first step makes the state (m, v, step: zero fills)
                assert c["by_op"] == {"triton._adam_kernel": 1}, c["by_op"]
