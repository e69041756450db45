"""One training iteration as static, sync-free device work.

The dataset lives on the device as uint8; every iteration draws indices and noise on the device
into static buffers, runs the D step(s) and the G step, and accumulates the losses into a device
buffer that the host reads only when it logs. Nothing in ``step()`` reads a value back to the
host or allocates a tensor whose size depends on data, so the same code runs eagerly (CPU and
GPU) and is captured into a CUDA graph by ``graphs.GraphedIteration``. The engine knows
nothing of any one variant: it calls the Variant interface only.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from fastgan import ops
from fastgan.nn.conv import to_memory_format
from fastgan.nn import losses
from fastgan.variants import Batch, Variant

from . import train_options as extras
from .distributed import check_batch
from .host_loader import HostBatchLoader, fits_on_device
from .optim import make_optimizer, variant_optimizers  # noqa: F401 (re-exported)

# Indices into Engine.stats (sums since the host last read them).
STAT_NAMES = ("d_loss", "g_loss", "d_real", "d_fake")
STAT_COUNT = len(STAT_NAMES)          # the last entry: iterations summed


@dataclass
class EngineOptions:
    batch_size: int
    d_steps: int = 1
    label_smoothing: float = 0.0
    precision: str = "fp32"        # "fp32" or "bf16" (autocast; parameters stay fp32)
    seed: int = 0
    # Optimizer state and lr on the device, so the step can be captured in a CUDA graph.
    # Eager training on a GPU runs the (faster) fused Adam that counts steps on the host.
    capturable: bool = True
    # Data-parallel training: ``batch_size`` is the global batch; this rank draws the global
    # stream and trains on its slice ``rank`` of ``world`` (see engine/distributed.py).
    rank: int = 0
    world: int = 1
    memory_format: str = "nchw"    # or "channels_last": 4-D parameters, image buffers, data set
    # --ema (G's EMA decay, None: off), --augment, --r1 (gamma) every r1_every D steps, --loss
    ema_decay: Optional[float] = None
    augment: str = ""
    r1_gamma: float = 0.0
    r1_every: int = 16
    loss: str = "default"


@contextlib.contextmanager
def _frozen(params: List[nn.Parameter]):
    """D's parameters out of the G step's autograd graph: ``backward(inputs=G's)`` leaves their
    gradients alone, but the layers would still compute them (a weight-gradient matmul each)."""
    was = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, w in zip(params, was):
            p.requires_grad_(w)


def _shard(n: int, rank: int, world: int) -> slice:
    k = n // world
    return slice(rank * k, (rank + 1) * k)


class Engine:
    def __init__(self, variant: Variant, nets: Dict[str, nn.Module], images: torch.Tensor,
                 labels: Optional[torch.Tensor], opts: EngineOptions,
                 device: torch.device, resident: Optional[bool] = None):
        if variant.needs_labels and labels is None:
            raise ValueError(f"variant {variant.name!r} needs class labels; "
                             "the dataset has none")
        self.variant, self.nets, self.opts, self.device = variant, nets, opts, device
        h = variant.hyper
        roles = variant.param_roles()
        # Memory format: the networks before any optimizer sees them (4-D image batches only).
        self.channels_last = opts.memory_format == "channels_last" and variant.image_view(
            torch.empty((1,) + tuple(images.shape[1:]), device="meta")).dim() == 4
        if self.channels_last:
            to_memory_format(nets.values(), opts.memory_format)
        self.d_params = [p for r in roles["D"] for p in nets[r].parameters()]
        self.g_params = [p for r in roles["G"] for p in nets[r].parameters()]
        self.opt_d, self.opt_g = variant_optimizers(variant, self.d_params, self.g_params, device,
                                                    opts.capturable)
        extras.attach(self)     # self.ema, self.augment, self.d_count (lazy R1's phase)

        # The dataset, resident on the device as uint8 (MNIST: 47 MB), unless it is too large
        # for the GPU: then it stays in pinned host memory (HostBatchLoader).
        n_real, n_noise = variant.batch_sizes(opts.batch_size)
        W, R = max(1, opts.world), opts.rank
        check_batch(variant, opts.batch_size, W)
        # This rank's slices of the global batch (the whole batch in one process).
        sl_real, sl_noise = _shard(n_real, R, W), _shard(n_noise, R, W)
        if variant.real_draw not in ("random", "slice"):
            raise ValueError(f"real_draw must be 'random' or 'slice', not {variant.real_draw!r}")
        if variant.real_draw == "slice" and images.shape[0] <= n_real:
            raise ValueError(f"variant {variant.name!r} draws a contiguous slice of {n_real} "
                             f"images; the data set has only {images.shape[0]}")
        if variant.d_fakes_from_eval_g and variant.g_reuses_fake:
            raise ValueError("d_fakes_from_eval_g needs a G step that draws its own fakes")
        self.resident = fits_on_device(images, device) if resident is None else resident
        self.host = None
        if self.resident:
            self.images = images.to(device)
            if self.channels_last:   # NHWC once: the gather is then a contiguous row copy
                self.images = self.images.permute(0, 2, 3, 1).contiguous()
        else:
            self.images = images
            self.host = HostBatchLoader(images, n_real, device, opts.seed + 3, sl_real,
                                        contiguous=variant.real_draw == "slice")
        # Seed 001 (lines 170-171): x[o : o + n] with o = randint(0, len(x) - n).
        self.slice_offset = self.slice_arange = None
        if variant.real_draw == "slice":
            self.slice_high = images.shape[0] - n_real
            self.slice_offset = torch.zeros((), dtype=torch.long, device=device)
            self.slice_arange = torch.arange(n_real, device=device)
        self.labels_all = labels.to(device) if labels is not None else None
        self.n_images = images.shape[0]
        # Graph mode with a host loader fetches outside the graph (GraphedIteration does it).
        self.fetch_outside = False

        # Static buffers: every draw writes into these in place.
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(opts.seed + 1)
        n_g_all = n_noise if variant.g_reuses_fake else variant.g_batch_size(opts.batch_size)
        if variant.needs_labels and not n_real == n_noise == n_g_all:
            raise ValueError("conditional variants need as many noise vectors as real images")
        # Indices, labels and noise are drawn for the global batch (the same stream on every
        # rank, independent of the world size); images are gathered for this rank's slice only.
        self._idx = torch.zeros(n_real, dtype=torch.long, device=device)
        self.idx_local = self._idx[sl_real]
        n_local = sl_real.stop - sl_real.start
        # A slice draw from a resident data set: the data set seen as its runs of n_real images
        # (row o: images o + this rank's slice), one gather at the offset, no index vector.
        self._runs = None
        if self.slice_offset is not None and self.resident and self.images.is_contiguous():
            px = self.images[0].numel()
            self._runs = self.images.as_strided(
                (self.slice_high + 1, n_local * px), (px, 1),
                self.images.storage_offset() + sl_real.start * px)
        # Only a host-resident data set needs its batch as uint8 (copied in, converted in draw);
        # on the device the gather writes the floats directly (ops.gather_scale).
        u8_shape = (n_local,) + tuple(images.shape[1:])
        self.real_u8 = (torch.zeros(u8_shape, dtype=torch.uint8, device=device)
                        if self.host is not None else None)
        # The real images sit right above room for the D step's fakes: a generator that writes
        # its output there (Batch.fake_out) lets D score [real; fake] without a cat.
        real_shape = variant.image_view(torch.empty(u8_shape, device="meta")).shape
        n_fake = sl_noise.stop - sl_noise.start
        self.d_input = torch.zeros((n_local + n_fake,) + tuple(real_shape[1:]), device=device)
        if self.channels_last:
            self.d_input = self.d_input.contiguous(memory_format=torch.channels_last)
        self.real, self.fake_out = self.d_input[:n_local], self.d_input[n_local:]
        # Unconditional noise for both steps in one buffer, drawn by one kernel (draw()): the
        # G step's rows right after the D step's.
        n_g = 0 if variant.g_reuses_fake else variant.g_batch_size(opts.batch_size)
        self._z_both = None
        if n_g and not variant.needs_labels:
            self._z_both = torch.zeros(variant.noise_shape(n_noise + n_g), device=device)
            self.z = self._z_both[:n_noise]
        else:
            self.z = torch.zeros(variant.noise_shape(n_noise), device=device)
        self.batch_labels = self.mis_idx = self.mis_labels = None
        if variant.needs_labels:
            self.batch_labels = torch.zeros(n_real, dtype=torch.long, device=device)
            self.mis_idx = torch.zeros(n_real, dtype=torch.long, device=device)
            self.mis_labels = torch.zeros(n_real, dtype=torch.long, device=device)
        self.z_local = self.z[sl_noise]
        self.labels_local = None if self.batch_labels is None else self.batch_labels[sl_real]
        self.mis_local = None if self.mis_labels is None else self.mis_labels[sl_real]
        self.z_g = self.z_g_local = None
        if n_g:
            self.z_g = (self._z_both[n_noise:] if self._z_both is not None
                        else torch.zeros(variant.noise_shape(n_g), device=device))
            self.z_g_local = self.z_g[_shard(n_g, R, W)]
        # Scalars that may change during training live on the device (capture-safe).
        self.real_target = torch.tensor(1.0 - opts.label_smoothing, device=device)
        self.stats = torch.zeros(5, device=device)
        self._one = ops.unit_grad(device)   # the backward seed the fused losses recognise
        # Images in uint8 -> the variant's range: x * scale + shift.
        if h.data_range == "tanh":
            self.scale, self.shift = 2.0 / 255.0, -1.0
        else:
            self.scale, self.shift = 1.0 / 255.0, 0.0
        # When False, step() does not draw: a caller (a parity test) fills the static buffers.
        self.draw_inside = True
        # Data-parallel hook (distributed.GradSync) or None in one process.
        self.dist = None

    # ---- drawing ------------------------------------------------------------------------
    def fetch(self) -> None:
        """Draw the real images' indices and gather them: on the device from its RNG, straight
        into ``real`` as x * scale + shift (one kernel, ops.gather_scale), or on the host into
        ``real_u8`` for a data set kept in host memory (draw() converts it)."""
        if self.host is not None:
            self.host.fetch_into(self.real_u8, self._idx)
            return
        if self.slice_offset is not None:
            self.slice_offset.random_(0, self.slice_high, generator=self.gen)
            if self._runs is not None:
                ops.gather_scale(self._runs, self.slice_offset.view(1), self.scale, self.shift,
                                 self.real.view(1, -1))
                return
            torch.add(self.slice_arange, self.slice_offset, out=self._idx)
        else:
            self._idx.random_(0, self.n_images, generator=self.gen)
        out = self.real.permute(0, 2, 3, 1) if self.channels_last else self.real
        ops.gather_scale(self.images, self.idx_local, self.scale, self.shift, out)

    @property
    def idx(self) -> torch.Tensor:
        """The real images' indices last drawn (global batch); computed for a run's gather."""
        if self._runs is not None:
            return self.slice_arange + self.slice_offset
        return self._idx

    def draw(self) -> None:
        """Fill the static batch buffers, in place (device work only, unless the data set is
        host-resident and ``fetch_outside`` is False)."""
        if not self.fetch_outside:
            self.fetch()
        if self.host is not None:
            # The uint8 -> float conversion happens inside the multiply (the same float32
            # x * scale as a copy then a multiply); the shift only where there is one.
            torch.mul(self.variant.image_view(self.real_u8), self.scale, out=self.real)
            if self.shift:
                self.real.add_(self.shift)
        if self.batch_labels is not None:
            torch.index_select(self.labels_all, 0, self.idx, out=self.batch_labels)
            # Mismatched labels: the labels of another random batch (as the seed does).
            self.mis_idx.random_(0, self.n_images, generator=self.gen)
            torch.index_select(self.labels_all, 0, self.mis_idx, out=self.mis_labels)
        both = self._z_both is not None
        self.variant.fill_train_noise(self._z_both if both else self.z, self.batch_labels,
                                      self.gen)

    def draw_g_noise(self) -> None:
        """The G step's own noise, for the D step's labels (conditional G, as seed 002); drawn
        by draw() already where the noise is unconditional."""
        if self._z_both is None:
            self.variant.fill_train_noise(self.z_g, self.batch_labels, self.gen)

    def batch(self) -> Batch:
        return Batch(real=self.real, z=self.z_local, labels=self.labels_local,
                     mis_labels=self.mis_local)

    @contextlib.contextmanager
    def _g_eval(self):
        """The generators in inference mode for the D step's fakes, when the variant says so."""
        if not self.variant.d_fakes_from_eval_g:
            yield
            return
        mods = [self.nets[r] for r in self.variant.param_roles()["G"]]
        was = [m.training for m in mods]
        for m in mods:
            m.eval()
        try:
            yield
        finally:
            for m, t in zip(mods, was):
                m.train(t)

    # ---- the iteration ------------------------------------------------------------------
    def _autocast(self):
        if self.opts.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(self) -> None:
        """One iteration: ``d_steps`` D updates then one G update. No host sync."""
        if self.dist is None:
            self._step()
        else:
            with self.dist.collectives():
                self._step()

    def _step(self) -> None:
        v, nets = self.variant, self.nets
        reuse = v.g_reuses_fake
        gen = None
        for i in range(self.opts.d_steps):
            last = i == self.opts.d_steps - 1
            if self.draw_inside:
                self.draw()
            batch = self.batch()
            with self._autocast():
                with torch.set_grad_enabled(reuse and last), self._g_eval():
                    gen = v.generate_train(nets, batch if reuse and last else dataclasses.replace(
                        batch, fake_out=self.fake_out))
                detached = {k: (t.detach() if k in v.gen_keys else t) for k, t in gen.items()}
                batch, detached = extras.augment_d(self, batch, detached)
                self.opt_d.zero_grad(set_to_none=True)
                with losses.override(self.opts.loss, generator=False):
                    loss_d, d_real, d_fake = v.d_loss(nets, batch, detached, self.real_target)
                loss = loss_d + extras.r1_term(self, batch) if extras.r1_due(self) else loss_d
            loss.backward(self._grad_seed(loss), inputs=self.d_params)
            if self.dist is not None:
                self.dist.sync_grads(self.d_params)
            self.opt_d.step()

        batch = self.batch()
        if not reuse:
            if self.draw_inside:
                self.draw_g_noise()
            batch = Batch(real=self.real, z=self.z_g_local, labels=self.labels_local,
                          mis_labels=self.mis_local)
            with self._autocast():
                gen = v.generate_train(nets, batch)
        # The G step differentiates with respect to G's parameters only (``inputs=``): D is
        # frozen without toggling requires_grad, and which gradients exist is fixed at capture.
        self.opt_g.zero_grad(set_to_none=True)
        # [d_loss, g_loss, D(x), D(G(z)), 1] into stats: by the G loss's kernel where it can
        sink = losses.StatsSink(self.stats, loss_d, d_real, d_fake, v.g_loss_single)
        with self._autocast(), _frozen(self.d_params):
            gen = extras.augment_g(self, gen)
            with losses.override(self.opts.loss, generator=True), losses.stats_into(sink):
                loss_g, _ = v.g_loss(nets, batch, gen)
        loss_g.backward(self._grad_seed(loss_g), inputs=self.g_params)
        if self.dist is not None:
            self.dist.sync_grads(self.g_params)
        self.opt_g.step()
        if self.ema is not None:    # inside the captured iteration: no host work
            self.ema.update()
        sink.close(loss_g)   # else the one gan_stats kernel

    def _grad_seed(self, loss: torch.Tensor) -> Optional[torch.Tensor]:
        """d(loss)/d(loss) = 1 from a constant, not a fill kernel per backward."""
        one = self._one
        return one if loss.dtype == one.dtype and loss.device == one.device else None

    def read_stats(self) -> Dict[str, float]:
        """Means since the last read (one host sync), then reset the accumulators."""
        if self.dist is not None:   # every rank's, combined as one process would log them
            self.dist.reduce_stats(self.stats)
        vals = self.stats.tolist()
        self.stats.zero_()
        n = max(vals[STAT_COUNT], 1.0)
        return {k: vals[i] / n for i, k in enumerate(STAT_NAMES)}

    # ---- state --------------------------------------------------------------------------
    def state_tensors(self) -> List[torch.Tensor]:
        """Every tensor that training changes in place: parameters, buffers, Adam state."""
        out: List[torch.Tensor] = []
        for net in self.nets.values():
            out += [t for t in net.parameters()] + [t for t in net.buffers()]
        for opt in (self.opt_d, self.opt_g):
            for st in opt.state.values():
                out += [t for t in st.values() if torch.is_tensor(t)]
        out += extras.state_tensors(self) + [self.stats]
        return out

    def rng_state(self) -> Dict[str, torch.Tensor]:
        st = {"device": self.gen.get_state()}
        if self.host is not None:
            st["host"] = self.host.gen.get_state()
        return st

    def set_rng_state(self, st: Dict[str, torch.Tensor]) -> None:
        self.gen.set_state(st["device"])
        if self.host is not None and "host" in st:
            self.host.gen.set_state(st["host"])

    def snapshot(self):
        """Copies of all training state and the RNG, restored in place by ``restore``, so that
        warm-up iterations before a capture leave no trace in training."""
        tensors = self.state_tensors()
        return tensors, [t.detach().clone() for t in tensors], self.rng_state(), self.d_count

    def restore(self, snap) -> None:
        tensors, copies, rng, self.d_count = snap
        live = {id(t) for t in self.state_tensors()}
        with torch.no_grad():
            for t, c in zip(tensors, copies):
                t.copy_(c)
        # Optimizer state created after the snapshot (first-ever steps) is reset to Adam's
        # initial values, which is what a fresh optimizer would start from.
        snap_ids = {id(t) for t in tensors}
        for opt in (self.opt_d, self.opt_g):
            for st in opt.state.values():
                for t in st.values():
                    if torch.is_tensor(t) and id(t) not in snap_ids and id(t) in live:
                        t.zero_()
        self.set_rng_state(rng)
