"""The training loop: set-up checks, the iteration (eager or graph-replayed), logging, sample
grids, checkpoints, resume, Ctrl-C and divergence handling."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from fastgan import ops
from fastgan.variants import DEFAULT_VARIANT, get_variant

from . import checkpoint as ckpt
from . import distributed as ddp
from .iteration import Engine, EngineOptions
from .sampling import fixed_noise, generate


# Settings a resumed run takes from its checkpoint unless given again.
RESUMED_FIELDS = ("variant", "dataset", "data_dir", "image_size", "channels", "variant_options",
                  "batch_size", "seed", "precision", "backend", "d_steps", "label_smoothing",
                  "lr_d", "lr_g", "max_images")


class UserError(Exception):
    """Bad input: the CLI prints the message as one line and exits with code 2."""


class Diverged(Exception):
    """A NaN or inf loss: the run stops and the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    variant: Optional[str] = None        # None: the resumed run's, else DEFAULT_VARIANT
    dataset: Optional[str] = None        # None: the resumed run's, else "mnist"
    data_dir: Optional[str] = None
    download: bool = False
    max_images: Optional[int] = None
    batch_size: Optional[int] = None
    steps: Optional[int] = None
    epochs: Optional[float] = None
    backend: Optional[str] = None        # None: the resumed run's, else "auto"
    device: Optional[str] = None          # None: cuda when available, else cpu
    seed: int = 0
    out: Optional[str] = None
    resume: Optional[str] = None
    overwrite: bool = False              # start over in an ``out`` that holds another run
    data_on: str = "auto"                # "device", "host" (pinned, double-buffered) or "auto"
    cuda_graphs: bool = False
    graph_unroll: int = 1
    graph_warmup: int = 3
    precision: Optional[str] = None      # None: the resumed run's, else "fp32"
    tf32: bool = True
    d_steps: Optional[int] = None
    label_smoothing: Optional[float] = None
    lr_d: Optional[float] = None
    lr_g: Optional[float] = None
    image_size: Optional[int] = None
    channels: Optional[int] = None
    variant_options: Dict[str, Any] = field(default_factory=dict)  # e.g. dcgan ngf/kernel
    log_every: int = 50
    sample_every: int = 500
    checkpoint_every: int = 1000
    n_samples: int = 64
    eval_every: int = 0                  # FID-MNIST etc. every N steps and at the end (0: off)
    eval_n: int = 10000                  # generated samples per evaluation
    quiet: bool = False
    # Data-parallel (torchrun): synchronized BatchNorm, and the collectives' timeout in seconds.
    sync_bn: bool = False
    dist_timeout: float = ddp.DEFAULT_TIMEOUT_S

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def check_settings(cfg: TrainConfig, h) -> None:
    """Numbers that would otherwise fail deep inside torch, or silently do something odd."""
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise UserError(what)
    need(h.batch_size >= 1, f"--batch-size must be at least 1, not {h.batch_size}")
    need(h.d_steps >= 1, f"--d-steps must be at least 1 (D updates per G update), "
         f"not {h.d_steps}")
    need(0.0 <= h.label_smoothing < 1.0, f"--label-smoothing must be in [0, 1) (the real "
         f"target is 1 - it), not {h.label_smoothing}")
    for opt, lr in (("--lr-d", h.lr_d), ("--lr-g", h.lr_g)):
        need(math.isfinite(lr) and lr > 0, f"{opt} must be a positive number, not {lr}")
    need(cfg.graph_unroll >= 1, f"--graph-unroll must be at least 1, not {cfg.graph_unroll}")
    need(cfg.log_every >= 1, f"--log-every must be at least 1, not {cfg.log_every}")
    for opt, n in (("--sample-every", cfg.sample_every),
                   ("--checkpoint-every", cfg.checkpoint_every)):
        need(n >= 0, f"{opt} must be >= 0 (0: only at the end), not {n}")
    need(cfg.n_samples >= 1, f"--n-samples must be at least 1, not {cfg.n_samples}")
    need(cfg.dist_timeout > 0, f"--dist-timeout must be a positive number of seconds, "
         f"not {cfg.dist_timeout}")


def check_batch_statistics(variant, nets, cfg: TrainConfig, world: int) -> None:
    """Training-mode BatchNorm needs two or more samples in every forward pass."""
    from fastgan.nn.layers import uses_batch_statistics
    if not any(uses_batch_statistics(m) for m in nets.values()):
        return
    split = 1 if cfg.sync_bn else world

    def smallest_pass(b: int) -> int:     # per process
        return min(variant.step_counts(b)) // split

    b = variant.hyper.batch_size
    if smallest_pass(b) < 2:
        enough = next(n for n in range(b + 1, 8 * (b + split) + 8) if smallest_pass(n) >= 2)
        where = "" if split == 1 else f" per process ({world} processes)"
        raise UserError(f"--batch-size {b} gives {variant.name} forward passes of "
                        f"{smallest_pass(b)} sample(s){where}, and its BatchNorm needs at least "
                        f"2 to compute batch statistics; use --batch-size {enough} or more")
    fixed = fixed_noise(variant, cfg.n_samples, 0, torch.device("cpu"))[0].shape[0]
    if fixed < 2:
        raise UserError(f"--n-samples {cfg.n_samples}: the sample grid's BatchNorm needs at "
                        "least 2 samples to compute batch statistics; use --n-samples 2 or more")


def check_out_dir(out: str, resume: Optional[str], overwrite: bool) -> None:
    """Never lose work: a run directory that holds another run's checkpoint is only reused
    when continuing that run (--resume) or when told to (--overwrite)."""
    existing = os.path.join(out, ckpt.CHECKPOINT_NAME)
    if os.path.isfile(existing) and not overwrite:
        same = resume is not None and os.path.samefile(ckpt.checkpoint_path(resume), existing)
        if not same:
            raise UserError(f"{out!r} already holds a run's checkpoint; continue it with "
                            f"--resume {out}, write this run elsewhere with --out DIR, or pass "
                            "--overwrite to start over there")


def make_out_dir(out: str) -> None:
    """Create the run directory and prove it writable, after every other check (bad input
    leaves nothing behind), so a run cannot train for hours and then fail to save."""
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f".write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"cannot write the run directory {out!r} ({e.strerror}); pass --out "
                        "DIR somewhere writable") from None


def pick_device(name: Optional[str]) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UserError(f"unknown device {name!r}; use cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is available "
                        f"(torch {torch.__version__}, torch.cuda.is_available() is False); "
                        "use --device cpu")
    return torch.device(name)


class Run:
    """Everything a training run holds once its inputs are checked."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        state = None
        if cfg.resume:
            try:
                state = ckpt.load_checkpoint(cfg.resume)
            except ckpt.CheckpointError as e:
                raise UserError(str(e)) from None
            saved = state["config"]
            # A resumed run keeps its variant and architecture unless told otherwise.
            for k in RESUMED_FIELDS:
                if getattr(cfg, k) in (None, {}) and saved.get(k) is not None:
                    setattr(cfg, k, saved[k])
            if cfg.variant is not None and cfg.variant != state["variant"]:
                raise UserError(f"the checkpoint in {cfg.resume!r} is of variant "
                                f"{state['variant']!r}, not {cfg.variant!r}; drop --variant or "
                                f"use --variant {state['variant']}")
            if cfg.out is None:
                cfg.out = os.path.dirname(ckpt.checkpoint_path(cfg.resume))
        cfg.variant = cfg.variant or DEFAULT_VARIANT
        cfg.dataset = cfg.dataset or "mnist"
        cfg.backend = cfg.backend or "auto"
        cfg.precision = cfg.precision or "fp32"
        # Under torchrun with several processes: join the process group (None in one process).
        try:
            self.dist = ddp.setup(cfg.device, cfg.dist_timeout)
        except ddp.DistributedSetupError as e:
            raise UserError(str(e)) from None
        self.main = self.dist is None or self.dist.is_main
        self.device = self.dist.device if self.dist is not None else pick_device(cfg.device)
        if cfg.cuda_graphs and self.device.type != "cuda":
            raise UserError("--cuda-graphs needs a CUDA GPU and --device cuda "
                            f"(this run is on {self.device.type}); drop --cuda-graphs")
        if cfg.precision not in ("fp32", "bf16"):
            raise UserError(f"unknown precision {cfg.precision!r}; use fp32 or bf16")
        if self.device.type == "cpu" and cfg.backend == "triton":
            os.environ.setdefault("TRITON_INTERPRET", "1")  # Triton on CPU = its interpreter
        try:
            self.backend = ops.resolve_backend(cfg.backend, self.device.type)
        except (ValueError, ops.BackendUnavailable) as e:
            raise UserError(str(e)) from None

        try:
            self.variant = get_variant(
                cfg.variant, batch_size=cfg.batch_size, d_steps=cfg.d_steps,
                label_smoothing=cfg.label_smoothing, lr_d=cfg.lr_d, lr_g=cfg.lr_g,
                image_size=cfg.image_size, channels=cfg.channels, **cfg.variant_options)
        except ValueError as e:
            raise UserError(str(e)) from None
        h = self.variant.hyper
        check_settings(cfg, h)
        if self.dist is not None:
            try:
                ddp.check_batch(self.variant, h.batch_size, self.dist.world)
            except ddp.DistributedSetupError as e:
                raise UserError(str(e)) from None

        # Data first: a dataset that cannot be found or read fails before anything is written.
        from fastgan.data import DataError, load_dataset
        channels = cfg.channels
        try:
            data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, split="train",
                                image_size=h.image_size, channels=channels,
                                download=cfg.download, max_images=cfg.max_images)
        except DataError as e:
            raise UserError(str(e)) from None
        if cfg.channels is None:
            h.channels = int(data.images.shape[1])
        try:
            self.variant.check_image_size(int(data.images.shape[-1]), int(data.images.shape[1]))
        except ValueError as e:
            raise UserError(str(e)) from None
        self.data = data

        torch.manual_seed(cfg.seed)
        if self.device.type == "cuda":
            # Fixed shapes every iteration: let cuDNN pick its fastest algorithms once (during
            # the first iterations, or the warm-up before a graph capture).
            torch.backends.cudnn.benchmark = True
            if cfg.tf32:
                torch.backends.cuda.matmul.allow_tf32 = True
                torch.backends.cudnn.allow_tf32 = True
        self.nets = {k: m.to(self.device) for k, m in self.variant.build({}).items()}
        check_batch_statistics(self.variant, self.nets, cfg, self.dist.world if self.dist else 1)
        if cfg.sync_bn and self.dist is not None:
            ddp.convert_sync_bn(self.nets.values())
        opts = EngineOptions(batch_size=h.batch_size, d_steps=h.d_steps,
                             label_smoothing=h.label_smoothing, precision=cfg.precision,
                             seed=cfg.seed, capturable=cfg.cuda_graphs,
                             rank=self.dist.rank if self.dist else 0,
                             world=self.dist.world if self.dist else 1)
        try:
            if cfg.data_on not in ("auto", "device", "host"):
                raise ValueError(f"--data-on must be auto, device or host, not {cfg.data_on!r}")
            resident = None if cfg.data_on == "auto" else cfg.data_on == "device"
            self.engine = Engine(self.variant, self.nets, data.images, data.labels, opts,
                                 self.device, resident=resident)
        except ValueError as e:
            raise UserError(str(e)) from None
        self.step = 0
        if state is not None:
            try:
                self.step = ckpt.restore_into(state, self.engine)
            except ckpt.CheckpointError as e:
                raise UserError(str(e)) from None
        self.last_saved = self.step if state is not None else None
        if self.dist is not None:
            ddp.attach(self.engine, self.dist, self.variant)
            self.dist.broadcast_state(self.nets.values())

        n_real = self.variant.batch_sizes(h.batch_size)[0]
        if cfg.steps is not None:
            self.total = int(cfg.steps)
        elif cfg.epochs is not None:
            self.total = int(math.ceil(cfg.epochs * data.images.shape[0] / n_real))
        else:
            self.total = 1000
        if self.total <= 0:
            raise UserError(f"--steps/--epochs must give at least one step, not {self.total}")
        self.out = cfg.out or os.path.join("runs", cfg.variant)
        self._main_check(check_out_dir, self.out, cfg.resume, cfg.overwrite)
        self.real_stats, self.last_eval = None, None
        if cfg.eval_every:
            self.real_stats = self._real_stats()
        self._main_check(make_out_dir, self.out)

    def _main_check(self, check, *args) -> None:
        """Run a check of rank 0's file system (the only writer) and stop every rank on its
        UserError."""
        problem = None
        if self.main:
            try:
                check(*args)
            except UserError as e:
                problem = str(e)
        if self.dist is not None:
            problem = self.dist.agree(problem)
        if problem:
            raise UserError(problem)

    def _real_stats(self):
        """The real data's classifier-feature statistics (cached on disk), checked up front so
        a run whose images the digit classifier cannot judge fails before it trains."""
        from fastgan.quality.classifier import ClassifierError
        from fastgan.quality.metrics import QualityError, real_stats
        if self.cfg.eval_every < 0 or self.cfg.eval_n < 10:
            raise UserError(f"--eval-every must be >= 0 and --eval-n >= 10 (got "
                            f"{self.cfg.eval_every} and {self.cfg.eval_n})")
        try:
            if self.variant.hyper.channels != 1:
                raise QualityError(
                    f"--eval-every: the quality metrics judge 1-channel digits, and this run "
                    f"makes {self.variant.hyper.channels}-channel images; drop --eval-every or "
                    "train on gray data (--channels 1)")
            # Data-parallel: every rank checks, rank 0 alone evaluates.
            return real_stats(self.data.images, self.device) if self.main else None
        except (QualityError, ClassifierError) as e:
            raise UserError(str(e)) from None

    # ---- helpers ------------------------------------------------------------------------
    def _log(self, msg: str) -> None:
        if not self.cfg.quiet and self.main:
            print(msg, file=sys.stderr, flush=True)

    def _finite_state(self) -> bool:
        with torch.no_grad():
            flags = [torch.isfinite(p).all() for net in self.nets.values()
                     for p in net.parameters()]
            return bool(torch.stack(flags).all())

    def evaluate(self) -> Dict[str, Any]:
        from fastgan.quality.metrics import QualityError, evaluate_generator
        try:
            return evaluate_generator(self.variant, self.nets, self.real_stats,
                                      n=self.cfg.eval_n, seed=self.cfg.seed + 1234)
        except QualityError as e:   # e.g. NaN samples: report it as divergence
            raise Diverged(f"evaluation at step {self.step}: {e}") from None

    def save(self) -> Optional[str]:
        path = None
        if self.main:    # data-parallel: rank 0 writes, the state is the same on every rank
            path = ckpt.save_checkpoint(self.out, self.engine, self.step, self.cfg.to_dict())
        self.last_saved = self.step
        return path

    def write_samples(self, z, labels, nrow, name: str) -> str:
        from fastgan.viz import save_grid
        imgs = generate(self.variant, self.nets, z, labels)
        path = os.path.join(self.out, "samples", name)
        save_grid(imgs, path, nrow)
        save_grid(imgs, os.path.join(self.out, "samples", "latest.png"), nrow)
        return path

    # ---- the loop -----------------------------------------------------------------------
    def train(self) -> Dict[str, Any]:
        if self.dist is None:
            return self._train()
        # Data-parallel: a collective that fails (a rank died, a timeout) or torchrun's SIGTERM
        # becomes one line saying where the last checkpoint is. torchrun sends SIGTERM as soon
        # as it sees a rank die, which may be after the loop has ended on the collective's
        # error: outside the loop SIGTERM is only recorded, so it cannot kill this process
        # before the line is printed (it did, about one run in 20). On a failure that handler
        # stays installed: the process is about to report and exit.
        old_term = signal.signal(signal.SIGTERM, self._record_signal)
        try:
            res = self._train()
        except ddp.Stopped as e:
            raise ddp.RankFailure(self._failure_message(str(e)), quiet=not self.main) from None
        except RuntimeError as e:
            if not ddp.is_peer_failure(e):
                raise                    # this rank's own error: its traceback is the cause
            first = (str(e).strip().splitlines() or [""])[0][:300]
            raise ddp.RankFailure(self._failure_message(
                f"another rank failed or the job was stopped ({type(e).__name__}: {first})"),
                quiet=not self.main and getattr(self, "_signalled", False)) from None
        if not res["interrupted"]:
            self.dist.barrier()          # rank 0 has written its last checkpoint
        signal.signal(signal.SIGTERM, old_term)
        return res

    def _record_signal(self, signum, frame) -> None:
        self._signalled = True

    def _failure_message(self, why: str) -> str:
        where = (f"the last checkpoint (step {self.last_saved}) is in {self.out}; continue with "
                 f"`torchrun --nproc-per-node N -m fastgan train --resume {self.out}` (any N, "
                 "or plain `fastgan train --resume`)" if self.last_saved is not None else
                 "no checkpoint had been written yet")
        return (f"rank {self.dist.rank} of {self.dist.world}: the distributed run stopped at "
                f"step {self.step}: {why}; {where}")

    def _stop_now(self, sig: str) -> None:
        """Data-parallel stop at an iteration boundary: rank 0 saves (no collective)."""
        if self._finite_state():
            self.save()
        if sig != "SIGINT":
            raise ddp.Stopped(f"stopped by {sig} (torchrun stops every worker when one fails, "
                              "or the job was cancelled)")

    def _train(self) -> Dict[str, Any]:
        # The run's backend for its duration only: the caller's active backend comes back.
        with ops.use_backend(self.backend):
            return self._train_loop()

    def _train_loop(self) -> Dict[str, Any]:
        cfg, eng = self.cfg, self.engine
        if self.main:
            os.makedirs(self.out, exist_ok=True)
            with open(os.path.join(self.out, "config.json"), "w") as f:
                json.dump({**cfg.to_dict(), "resolved_backend": self.backend,
                           "device": str(self.device), "dataset_source": self.data.source,
                           "world_size": self.dist.world if self.dist else 1,
                           "hyper": dataclasses.asdict(self.variant.hyper)}, f, indent=2)
        if self.dist is not None:
            self._log(f"fastgan: data-parallel over {self.dist.world} processes "
                      f"({self.dist.backend}), {self.variant.hyper.batch_size // self.dist.world}"
                      f" of the batch per rank, BatchNorm "
                      f"{'synchronized' if cfg.sync_bn else 'per rank'}")
        self._log(f"fastgan: {self.variant.name} on {self.device} with backend "
                  f"{self.backend}{' + CUDA graphs' if cfg.cuda_graphs else ''}, batch "
                  f"{self.variant.hyper.batch_size}, {self.data.images.shape[0]} images "
                  f"from {self.data.source}; steps {self.step}->{self.total}; out {self.out}")
        if not eng.resident:
            gb = self.data.images.numel() / 2**30
            self._log(f"fastgan: the data set ({gb:.2f} GiB) stays in pinned host memory"
                      f"{' (too large for the GPU)' if cfg.data_on == 'auto' else ''}: batches "
                      "are gathered on the host, double-buffered, and copied in each iteration")
        z_fixed, labels_fixed, nrow = fixed_noise(self.variant, cfg.n_samples, cfg.seed + 2,
                                                  self.device)
        unroll = max(1, cfg.graph_unroll) if cfg.cuda_graphs else 1
        runner = eng.step
        if cfg.cuda_graphs:
            from .graphs import GraphedIteration
            g = GraphedIteration(eng, warmup=cfg.graph_warmup, unroll=unroll)
            runner = g.replay
            self._log(f"fastgan: captured {unroll} iteration(s) in a CUDA graph in "
                      f"{g.capture_seconds:.2f}s")
        log_every = max(unroll, cfg.log_every - cfg.log_every % unroll)

        stop = {"sig": False}

        def on_sigint(signum, frame):
            stop["sig"] = True

        def on_signal_dist(signum, frame):
            # Data-parallel (torchrun passes Ctrl-C on as SIGINT, then SIGTERM, and stops the
            # survivors of a failed rank with SIGTERM): stop after the current iteration. Every
            # rank's state after an iteration is the global state, so rank 0 saves it without
            # any collective.
            stop.setdefault("now", signal.Signals(signum).name)
            self._signalled = True

        old_handler = signal.signal(signal.SIGINT, on_sigint if self.dist is None
                                    else on_signal_dist)
        old_term = signal.signal(signal.SIGTERM, on_signal_dist) if self.dist else None
        metrics_path = os.path.join(self.out, "metrics.jsonl")
        # A resumed run forgets what was logged after its checkpoint.
        rows: List[Dict[str, Any]] = [r for r in _read_rows(metrics_path)
                                      if r.get("step", 0) <= self.step] if self.main else []
        if self.main:
            with open(metrics_path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
        eval_path = os.path.join(self.out, "eval.jsonl")
        if cfg.eval_every and self.main:
            kept = [r for r in _read_rows(eval_path) if r.get("step", 0) <= self.step]
            with open(eval_path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)
        last_good = self.step if cfg.resume else None
        start_step = self.step
        t_last, s_last = time.perf_counter(), self.step
        interrupted = False
        try:
            while self.step < self.total:
                runner()
                self.step += unroll
                if stop.get("now"):
                    self._stop_now(stop["now"])
                    interrupted = True
                    break
                at_end = self.step >= self.total
                if self.step % log_every == 0 or at_end or stop["sig"]:
                    st = eng.read_stats()
                    now = time.perf_counter()
                    its = (self.step - s_last) / max(now - t_last, 1e-9)
                    t_last, s_last = now, self.step
                    row = {"step": self.step, **st, "it_s": its,
                           "img_s": its * self.variant.hyper.batch_size, "time": time.time()}
                    if not all(math.isfinite(st[k]) for k in ("d_loss", "g_loss")):
                        raise Diverged(
                            f"training diverged at step {self.step}: d_loss={st['d_loss']} "
                            f"g_loss={st['g_loss']}; " + (
                                f"the last good checkpoint (step {last_good}) is kept in "
                                f"{self.out}" if last_good is not None else
                                "no checkpoint had been written yet") +
                            "; try a lower learning rate (--lr-d/--lr-g) or fp32")
                    rows.append(row)
                    if self.main:
                        with open(metrics_path, "a") as f:
                            f.write(json.dumps(row) + "\n")
                    done = int(20 * self.step / self.total)
                    self._log(f"[{'#' * done}{'.' * (20 - done)}] step {self.step}/{self.total} | "
                              f"{its:8.1f} it/s | d_loss "
                              f"{st['d_loss']:.4f} g_loss {st['g_loss']:.4f} | D(x) "
                              f"{st['d_real']:.3f} D(G(z)) {st['d_fake']:.3f}")
                    want_ckpt = (cfg.checkpoint_every and self.step % cfg.checkpoint_every
                                 < log_every) or at_end or stop["sig"]
                    if want_ckpt:
                        if not self._finite_state():
                            raise Diverged(f"parameters became NaN/inf by step {self.step}; "
                                           f"the last good checkpoint (step {last_good}) is "
                                           f"kept in {self.out}")
                        self.save()
                        last_good = self.step
                # Data-parallel: rank 0 evaluates alone (G's BN is per-rank there, no collective).
                if (self.main and cfg.eval_every
                        and (self.step % cfg.eval_every < unroll or at_end)):
                    from fastgan.quality.metrics import format_metrics
                    t_eval = time.perf_counter()
                    m = self.evaluate()
                    m = {"step": self.step, **m, "seconds": time.perf_counter() - t_eval}
                    with open(eval_path, "a") as f:
                        f.write(json.dumps(m) + "\n")
                    self._log(f"eval step {self.step}: {format_metrics(m)}")
                    self.last_eval = m
                    t_last += time.perf_counter() - t_eval    # keep it out of it/s
                if self.main and ((cfg.sample_every and self.step % cfg.sample_every < unroll)
                                  or at_end):
                    self.write_samples(z_fixed, labels_fixed, nrow, f"step_{self.step:07d}.png")
                if stop["sig"]:
                    interrupted = True
                    break
        finally:
            signal.signal(signal.SIGINT, old_handler)
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
            if self.main:
                from fastgan.viz import save_loss_curve
                save_loss_curve(rows, os.path.join(self.out, "loss_curve.svg"))
        return {"step": self.step, "start_step": start_step, "total": self.total,
                "out": self.out, "interrupted": interrupted,
                "last": rows[-1] if rows else None, "eval": self.last_eval}


def _read_rows(path: str) -> List[Dict[str, Any]]:
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass
    return rows


def train(cfg: TrainConfig) -> Dict[str, Any]:
    clean = False
    try:
        res = Run(cfg).train()
        clean = True
        return res
    finally:
        ddp.shutdown(clean)     # leave the process group (no-op in one process)
