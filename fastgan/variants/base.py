"""What a variant is, as far as the engine is concerned.

A variant builds its networks, says how a batch is drawn (how many real images, which noise),
computes the generators' outputs and the two losses. The engine owns everything else (optimizers,
the step order, capture); it never looks at a variant's name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from torch._subclasses.fake_tensor import is_fake


@dataclass
class Hyper:
    """A variant's seed hyperparameters; every field is a default the CLI may override."""
    batch_size: int
    lr_d: float
    lr_g: float
    betas: Tuple[float, float] = (0.9, 0.999)
    z_dim: int = 100
    image_size: int = 28
    channels: int = 1
    data_range: str = "tanh"          # "tanh": images in [-1, 1]; "sigmoid": in [0, 1]
    d_steps: int = 1                  # D updates per G update
    label_smoothing: float = 0.0      # real target = 1 - label_smoothing
    # Which Adam: "torch" (eps added to the bias-corrected root) or "eps_hat" (TF1's
    # AdamOptimizer and Keras' Adam: eps added to the raw root, engine/optim.py).
    adam: str = "torch"
    adam_eps: float = 1e-8
    lr_decay: float = 0.0             # Keras' per-update decay lr / (1 + decay * t) (eps_hat)
    extra: Dict[str, object] = field(default_factory=dict)


@dataclass
class Batch:
    """Everything one D/G step consumes; all tensors live on the training device.

    ``real`` is in the variant's input range and layout; ``labels`` the real images' classes;
    ``z`` the noise for the fake batch; ``mis_labels`` mismatched classes (GAN-cls).
    """
    real: torch.Tensor
    z: torch.Tensor
    labels: Optional[torch.Tensor] = None
    mis_labels: Optional[torch.Tensor] = None
    # Where a generator may write fakes it makes without grad (the engine's D step): the rows
    # right below ``real`` in memory, so that ``cat_rows(real, fake)`` is a view.
    fake_out: Optional[torch.Tensor] = None


def rows_adjacent(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``b`` lies right below ``a`` in one dense block of memory (so that [a; b] is a
    view of it)."""
    return (not (is_fake(a) or is_fake(b)) and a.dtype == b.dtype and a.shape[1:] == b.shape[1:]
            and a.is_contiguous() and b.is_contiguous()
            and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
            and b.storage_offset() == a.storage_offset() + a.numel())


def cat_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.cat([a, b])``: a view where ``b`` already lies right below ``a`` in memory and
    neither needs a gradient (the engine's D-step buffers), else the cat."""
    if a.requires_grad or b.requires_grad or not rows_adjacent(a, b):
        return torch.cat([a, b], 0)
    return a.as_strided((a.shape[0] + b.shape[0],) + tuple(a.shape[1:]), a.stride())


@dataclass(frozen=True)
class Option:
    """A command-line flag of ``fastgan train`` that sets ``Hyper.extra[key]``."""
    flag: str
    key: str
    type: Any = None
    choices: Optional[Tuple] = None
    help: str = ""


@dataclass(frozen=True)
class BenchSettings:
    """Where a variant sits in ``fastgan bench``'s matrix (fastgan/benchmark/matrix.py)."""
    tiny_batch: int                                  # CPU tiny mode (CI): seconds for the matrix
    tiny_overrides: Mapping[str, object] = field(default_factory=dict)
    gpu_batches: Tuple[int, ...] = ()                # fp32 batches on a GPU (default: the seed's)
    heavy: bool = False          # speed targets of its own: compiled first, max-autotune in quick
    bf16_batches: Tuple[int, ...] = ()               # bf16 rows of the GPU matrix
    bf16_quick: bool = False                         # ... also in --quick
    check_batches: Tuple[int, ...] = ()    # make gpu-check's third tier, fp32 and bf16
    top_kernels: bool = False    # the report lists its top kernels (kernels, not launches, cost)
    # Kernels per training iteration, the CPU dispatch proxy (fastgan/benchmark/kernel_count.py):
    # the device work one iteration issues with the cuda backend's kernels on (the reference
    # backend's; the triton backend's launches, under the interpreter), the optimizers as on a
    # GPU, counted at the tiny_overrides' architecture; tests/test_kernel_budget.py holds the
    # count to it, with no host sync. Lower it when fusion removes work.
    kernel_budget: Optional[int] = None
    kernel_budget_reference: Optional[int] = None
    kernel_budget_triton: Optional[int] = None


class Variant:
    name: str = ""
    hyper: Hyper
    # Flags of ``fastgan train`` for keys of ``hyper.extra``; None: the base default below.
    cli_options: Tuple[Option, ...] = ()
    bench: Optional[BenchSettings] = None
    needs_labels: bool = False
    # True: the G step reuses the D step's fake batch (one G forward per iteration, as the PyTorch
    # DCGAN example does); False: the G step draws fresh noise and runs G again (as the seed does).
    g_reuses_fake: bool = True
    # True: the D step's fakes come from G in inference mode (BatchNorm on its running
    # statistics, which it leaves alone), as Keras' ``generator.predict`` makes them; the G step
    # still runs G in training mode. Only with ``g_reuses_fake`` False.
    d_fakes_from_eval_g: bool = False
    # True: g_loss returns one bce / lsgan / hinge call's loss as it is, so the iteration's
    # metrics are added by that call (ops.gan_loss_stats: one kernel less on triton).
    g_loss_single: bool = False
    # How the D step's real images are drawn: "random" (independent indices, with replacement)
    # or "slice" (a contiguous run of the data set at a random offset, as seed 001 does).
    real_draw: str = "random"
    # Keys of ``generate_train`` output that the D step must see detached.
    gen_keys: Tuple[str, ...] = ("fake",)
    # How the losses reduce over the batch: "mean" or "sum". Data-parallel training averages
    # the ranks' gradients for mean losses and sums them for summed ones.
    loss_reduction: str = "mean"

    @classmethod
    def bench_settings(cls) -> BenchSettings:
        return cls.bench or BenchSettings(tiny_batch=min(8, cls.hyper.batch_size))

    # ---- construction -------------------------------------------------------------------
    def build(self, cfg: Dict[str, object]) -> Dict[str, nn.Module]:
        """Return the networks by role: "G" and "D", and "E" where the variant has an encoder."""
        raise NotImplementedError

    def param_roles(self) -> Dict[str, List[str]]:
        """Which networks each optimizer trains: {"D": [...], "G": [...]}."""
        return {"D": ["D"], "G": ["G"]}

    def check_image_size(self, image_size: int, channels: int) -> None:
        """Raise ValueError with a clear message when the networks cannot make this size."""
        seed = type(self).hyper  # the MLP/conv variants have one fixed architecture
        if (image_size, channels) != (seed.image_size, seed.channels):
            raise ValueError(
                f"variant {self.name!r} makes {seed.channels}x{seed.image_size}x"
                f"{seed.image_size} images, not {channels}x{image_size}x{image_size}; "
                f"use --image-size {seed.image_size} --channels {seed.channels} or the dcgan "
                "variant")

    # ---- batches ------------------------------------------------------------------------
    def batch_sizes(self, batch_size: int) -> Tuple[int, int]:
        """(real images per D step, noise vectors per D step)."""
        return batch_size, batch_size

    def g_batch_size(self, batch_size: int) -> int:
        """Noise vectors per G step when ``g_reuses_fake`` is False."""
        return batch_size

    def step_counts(self, batch_size: int) -> Tuple[int, ...]:
        """Every per-step count: real images and noise vectors of the D step, and the G step's
        own noise vectors when it draws fresh ones."""
        counts = self.batch_sizes(batch_size)
        return counts if self.g_reuses_fake else counts + (self.g_batch_size(batch_size),)

    def fill_noise(self, z: torch.Tensor, labels: Optional[torch.Tensor],
                   generator: Optional[torch.Generator]) -> None:
        """Draw sampling noise (grids, metrics) into ``z`` in place (labels for conditional G)."""
        z.normal_(generator=generator)

    def fill_train_noise(self, z: torch.Tensor, labels: Optional[torch.Tensor],
                         generator: Optional[torch.Generator]) -> None:
        """Draw the training steps' noise into the static buffer ``z`` in place; the sampling
        noise unless the seed trains on another distribution."""
        self.fill_noise(z, labels, generator)

    def condition_noise(self, z: torch.Tensor, labels: torch.Tensor) -> None:
        """Write ``labels`` into noise drawn without them (conditional G only)."""

    def noise_shape(self, n: int) -> Tuple[int, ...]:
        return (n, self.hyper.z_dim)

    def image_view(self, images: torch.Tensor) -> torch.Tensor:
        """Layout the networks take: NCHW by default; flat vectors for the MLP variants."""
        return images

    # ---- the two losses -----------------------------------------------------------------
    # G accepts ``out=``: in the D step (no grad) it writes its fakes into Batch.fake_out, right
    # below the real images, so that D reads [real; fake] as a view.
    g_writes_out = False

    def generate_train(self, nets, batch: Batch) -> Dict[str, torch.Tensor]:
        """The generators' outputs for one step (with grad). Keys in ``gen_keys`` get detached
        for the D step."""
        if self.g_writes_out and batch.fake_out is not None and not torch.is_grad_enabled():
            return {"fake": nets["G"](batch.z, out=batch.fake_out)}
        return {"fake": nets["G"](batch.z)}

    def d_loss(self, nets, batch: Batch, gen: Dict[str, torch.Tensor], real_target
               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, D(real) logits, D(fake) logits)."""
        raise NotImplementedError

    def g_loss(self, nets, batch: Batch, gen: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor,
                                                                                torch.Tensor]:
        """(loss, D(fake) logits as seen by the G step)."""
        raise NotImplementedError

    def supports_r1(self) -> bool:
        """Whether D scores images alone (R1 differentiates its logits with respect to them);
        a D that also takes labels or codes (gancls, bigan) does not."""
        roles = self.param_roles()
        return not self.needs_labels and len(roles["G"]) == 1 and len(roles["D"]) == 1

    def real_logits(self, nets, batch: Batch, x: torch.Tensor) -> torch.Tensor:
        """D's logits for real images ``x`` (``supports_r1`` variants)."""
        return nets["D"](x)

    def split_targets(self, like: torch.Tensor, n: int, first, second,
                      dim: int = 0) -> torch.Tensor:
        """A target per element of ``like``: ``first`` (a float or a device scalar) on the
        first ``n`` rows (``dim`` 1: columns), ``second`` on the rest, so one loss call covers
        both groups of one D pass. Built once and kept (a device scalar target: while it is the
        same tensor, unchanged)."""
        def tkey(t):
            return ("t", id(t), t._version) if torch.is_tensor(t) else ("f", float(t))
        key = (tuple(like.shape), like.dtype, like.device, n, dim, tkey(first), tkey(second))
        cache = self.__dict__.setdefault("_split_targets", {})
        hit = cache.get(key)
        if hit is None:
            dt = like.dtype if like.dtype in (torch.float32, torch.float64) else torch.float32
            t = torch.empty(like.shape, dtype=dt, device=like.device)
            for part, value in ((t.narrow(dim, 0, n), first),
                                (t.narrow(dim, n, like.shape[dim] - n), second)):
                part.copy_(value) if torch.is_tensor(value) else part.fill_(float(value))
            if is_fake(t):   # the roofline's shape-only pass: nothing kept
                return t
            if len(cache) > 8:
                cache.clear()
            hit = cache[key] = (t, first, second)   # the tensors kept: their ids stay theirs
        return hit[0]

    # ---- sampling -----------------------------------------------------------------------
    def sample(self, nets, z: torch.Tensor, labels: Optional[torch.Tensor] = None
               ) -> torch.Tensor:
        """Images in [0, 1], NCHW, for grids and metrics (G in eval mode is the caller's job)."""
        x = nets["G"](z)
        if self.hyper.data_range == "tanh":
            x = (x + 1) / 2
        return x.reshape(x.shape[0], self.hyper.channels, self.hyper.image_size,
                         self.hyper.image_size).clamp(0, 1)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def count_bn_buffers(module: nn.Module) -> int:
    return sum(b.numel() for n, b in module.named_buffers()
               if n.endswith("running_mean") or n.endswith("running_var"))
