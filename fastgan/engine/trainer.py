"""The training loop: set-up checks, the iteration (eager or graph-replayed), logging, sample
grids, checkpoints, resume, Ctrl-C and divergence handling."""
from __future__ import annotations

import dataclasses
import errno
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
from .progress import Progress
from .sampling import fixed_noise, generate


# Settings a resumed run takes from its checkpoint unless given again (None: not given). The
# others (--device, --data-on, --cuda-graphs, --graph-unroll, --no-tf32, --sync-bn,
# --dist-timeout, --quiet) say where and how this process runs, and come from its command line.
RESUMED_FIELDS = ("variant", "dataset", "data_dir", "image_size", "channels", "variant_options",
                  "batch_size", "seed", "precision", "backend", "d_steps", "label_smoothing",
                  "lr_d", "lr_g", "max_images", "steps", "epochs", "log_every", "sample_every",
                  "checkpoint_every", "n_samples", "eval_every", "eval_n")
# Of those, the ones a resumed run cannot change: its random streams continue from the
# checkpoint (seed), its batches are drawn from its data set at its batch size. (The variant and
# the architecture are checked against the checkpoint itself.)
FIXED_ON_RESUME = {
    "batch_size": "the optimizer state and the batch stream belong to that batch size",
    "seed": "the random streams continue from the checkpoint, so a new seed cannot take effect",
    "dataset": "the batches are drawn from the run's data set",
    "max_images": "the batches are drawn from the run's images",
}
# Defaults of the settings that are None until resolved (None: the resumed run's value, if any).
DEFAULTS = {"variant": DEFAULT_VARIANT, "dataset": "mnist", "backend": "auto",
            "precision": "fp32", "seed": 0, "log_every": 50, "sample_every": 500,
            "checkpoint_every": 1000, "n_samples": 64, "eval_every": 0, "eval_n": 10000}
HYPER_FIELDS = ("batch_size", "d_steps", "label_smoothing", "lr_d", "lr_g")


def _opt(k: str) -> str:
    return "--" + k.replace("_", "-")


class UserError(Exception):
    """Bad input: the CLI prints the message as one line and exits with code 2 (``detail``:
    the underlying library's text, printed with --verbose)."""

    def __init__(self, msg: str, detail: Optional[str] = None):
        super().__init__(msg)
        self.detail = detail


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
    seed: Optional[int] = None            # None: the resumed run's, else 0
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
    # None: the resumed run's, else DEFAULTS (50, 500, 1000, 64, 0, 10000)
    log_every: Optional[int] = None
    sample_every: Optional[int] = None
    checkpoint_every: Optional[int] = None
    n_samples: Optional[int] = None
    eval_every: Optional[int] = None     # FID-MNIST etc. every N steps and at the end (0: off)
    eval_n: Optional[int] = None         # generated samples per evaluation
    quiet: bool = False
    # CPU threads for tensor work (None: torch's current setting). The CLI passes its choice
    # (fastgan/threads.py: one per free core, or --threads) and the reason, for the start-up line.
    threads: Optional[int] = None
    threads_reason: Optional[str] = None
    threads_adapt: bool = False     # follow the free cores while training (fastgan.threads)
    # Data-parallel (torchrun): synchronized BatchNorm, and the collectives' timeout in seconds.
    sync_bn: bool = False
    dist_timeout: float = ddp.DEFAULT_TIMEOUT_S

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def merge_resumed(cfg: TrainConfig, state: Dict[str, Any]) -> List[str]:
    """Fill every resumed setting not given (None) from the checkpoint's config; refuse a given
    one that cannot change; return "name old -> new" for each given one that changes."""
    saved, hyper = state.get("config") or {}, state.get("hyper") or {}
    where = cfg.resume

    def old_value(k):
        if k in HYPER_FIELDS and hyper.get(k) is not None:
            return hyper[k]                       # the value the run really used
        v = saved.get(k)
        return DEFAULTS.get(k) if v is None else v

    given = {k for k in RESUMED_FIELDS if getattr(cfg, k) not in (None, {})}
    changes = []
    for k in sorted(given):
        if k in ("variant", "image_size", "channels", "variant_options"):
            continue          # checked against the checkpoint's own variant and networks
        new, old = getattr(cfg, k), old_value(k)
        same = (float(new) == float(old) if isinstance(new, (int, float))
                and isinstance(old, (int, float)) and not isinstance(new, bool) else new == old)
        if same:
            continue
        moved = k == "dataset" and f"{old}{new}".count("folder:") == 2   # the data moved
        if k in FIXED_ON_RESUME and not moved:
            raise UserError(f"{_opt(k)} {new}: the run in {where!r} was trained with "
                            f"{_opt(k)} {old}, and it cannot change on resume "
                            f"({FIXED_ON_RESUME[k]}); drop {_opt(k)}, or start a new run with "
                            "another --out")
        if k not in ("steps", "epochs"):        # the total is said in the progress line
            changes.append(f"{_opt(k)} {old} -> {new}")
    # --steps and --epochs are one setting: either given replaces the saved total.
    skip = {"steps", "epochs"} if given & {"steps", "epochs"} else set()
    for k in RESUMED_FIELDS:
        if k not in given and k not in skip and saved.get(k) not in (None, {}):
            setattr(cfg, k, saved[k])
    return changes


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
    need(cfg.threads is None or cfg.threads >= 1,
         f"--threads must be at least 1 (CPU threads), not {cfg.threads}")
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
        self.progress = None        # the progress line, while the loop runs
        state = None
        self.changes: List[str] = []
        if cfg.resume:
            try:
                state = ckpt.load_checkpoint(cfg.resume)
            except ckpt.CheckpointError as e:
                raise UserError(str(e), e.detail) from None
            if cfg.variant is not None and cfg.variant != state["variant"]:
                raise UserError(f"the checkpoint in {cfg.resume!r} is of variant "
                                f"{state['variant']!r}, not {cfg.variant!r}; drop --variant or "
                                f"use --variant {state['variant']}")
            self.changes = merge_resumed(cfg, state)
            if cfg.out is None:
                cfg.out = os.path.dirname(ckpt.checkpoint_path(cfg.resume))
        for k, v in DEFAULTS.items():
            if getattr(cfg, k) is None:
                setattr(cfg, k, v)
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
                raise UserError(str(e), e.detail) from None
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
        if self.main:
            # Leftovers of saves killed mid-write (SIGKILL): as large as a checkpoint each.
            gone = ckpt.remove_stale_temps(self.out)
            if gone:
                self._log(f"fastgan: removed {len(gone)} temporary file(s) of interrupted saves "
                          f"from {self.out}")

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
            if self.progress is not None:
                self.progress.message(msg)      # above the progress line on a terminal
            else:
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
            try:
                path = ckpt.save_checkpoint(self.out, self.engine, self.step, self.cfg.to_dict())
            except ckpt.SaveError as e:
                raise UserError(f"{e} (training stopped at step {self.step})", e.detail) from None
        self.last_saved = self.step
        return path

    def _write_failed(self, e: OSError) -> UserError:
        """Any other file of the run that cannot be written (metrics, samples, config): one
        line naming the folder, the space needed and the checkpoint on disk."""
        import shutil
        try:
            free = shutil.disk_usage(self.out).free
        except OSError:
            free = 0
        need = ckpt._nbytes({"n": self.engine.state_tensors()}) if hasattr(
            self.engine, "state_tensors") else 0
        step = ckpt.peek_step(self.out)
        full = e.errno in (errno.ENOSPC, errno.EDQUOT)
        name = os.path.basename(str(e.filename or ""))
        m = ckpt._TEMP.match(name)
        name = m.group("base") if m else name         # the file, not its temporary
        return UserError(
            f"cannot write {name or 'a file'} in {self.out} "
            f"({'the disk is full' if full else e.strerror}"
            + (f": the next checkpoint needs about {ckpt._mb(need)}, {ckpt._mb(free)} are free"
               if full else "") + f"); training stopped at step {self.step}; "
            + (f"the last checkpoint (step {step}) is intact, continue with --resume {self.out} "
               "once there is room" if step is not None else "no checkpoint had been written"),
            repr(e))

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
            self._ignore_term()
            raise ddp.RankFailure(self._failure_message(str(e)), quiet=not self.main) from None
        except RuntimeError as e:
            if not ddp.is_peer_failure(e):
                raise                    # this rank's own error: its traceback is the cause
            self._ignore_term()
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

    def _ignore_term(self) -> None:
        """This rank is about to report and exit: torchrun's SIGTERM must not end it first.
        A recording handler is not enough, because Python puts the default action back while
        the interpreter shuts down (where the process group's teardown can take a while), and
        the SIGTERM landing there ended the survivor with 143 instead of 4."""
        self._signalled = True
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def _failure_message(self, why: str) -> str:
        # What is on disk, read back: rank 0 may have died in the middle of the save this rank
        # took part in, and a rank on another node may not see rank 0's folder at all.
        on_disk = ckpt.peek_step(self.out)
        if on_disk is not None:
            where = (f"the last checkpoint (step {on_disk}) is in {self.out}; continue with "
                     f"`torchrun --nproc-per-node N -m fastgan train --resume {self.out}` (any "
                     "N, or plain `fastgan train --resume`)")
        elif not os.path.isdir(self.out):
            where = (f"{self.out} is not visible from this rank: rank 0's node holds the run's "
                     "checkpoint, if one was written")
        else:
            where = f"there is no readable checkpoint in {self.out}"
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
        # The run's backend and thread count for its duration only: the caller's come back.
        threads = torch.get_num_threads()
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        self.governor = None
        if self.cfg.threads_adapt and self.device.type == "cpu":
            from fastgan.threads import ThreadGovernor
            self.governor = ThreadGovernor(torch.get_num_threads(), torch.set_num_threads)
        with ops.use_backend(self.backend):
            try:
                return self._train_loop()
            except OSError as e:        # disk full, read-only, ...: one line, not a traceback
                raise self._write_failed(e) from None
            finally:
                torch.set_num_threads(threads)
                if self.progress is not None:
                    self.progress.close()

    def _train_loop(self) -> Dict[str, Any]:
        cfg, eng = self.cfg, self.engine
        start_step = self.step
        if self.step >= self.total:
            # Nothing to train (--steps is the run's total): write nothing at all.
            return {"step": self.step, "start_step": start_step, "total": self.total,
                    "out": self.out, "interrupted": False, "signal": None, "last": None,
                    "eval": None}
        if self.changes:
            self._log(f"fastgan: resuming {self.out} at step {self.step} with "
                      f"{', '.join(self.changes)} (every other setting as saved)")
        if self.main:
            os.makedirs(self.out, exist_ok=True)
            _atomic_write_text(os.path.join(self.out, "config.json"), json.dumps(
                {**cfg.to_dict(), "resolved_backend": self.backend,
                 "device": str(self.device), "dataset_source": self.data.source,
                 "world_size": self.dist.world if self.dist else 1,
                 "hyper": dataclasses.asdict(self.variant.hyper)}, indent=2))
        if self.dist is not None:
            self._log(f"fastgan: data-parallel over {self.dist.world} processes "
                      f"({self.dist.backend}), {self.variant.hyper.batch_size // self.dist.world}"
                      f" of the batch per rank, BatchNorm "
                      f"{'synchronized' if cfg.sync_bn else 'per rank'}")
        h = self.variant.hyper
        cpu = (f", {torch.get_num_threads()} CPU thread(s)"
               + (f" ({cfg.threads_reason})" if cfg.threads_reason else "")
               if self.device.type == "cpu" else "")
        self._log(f"fastgan: {self.variant.name} on {self.device}{cpu} with backend "
                  f"{self.backend}{' + CUDA graphs' if cfg.cuda_graphs else ''}, batch "
                  f"{h.batch_size} of {h.channels}x{h.image_size}x{h.image_size}, "
                  f"{self.data.images.shape[0]} images from {self.data.source}; steps "
                  f"{self.step}->{self.total}; out {self.out}")
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

        def due(every: int) -> bool:
            # Each cadence on its own: a step that is a multiple of it (with K iterations per
            # graph replay, the replay that reaches or passes the multiple).
            return bool(every) and self.step % every < unroll

        stop = StopSignals(self.dist is not None, self)
        old_int = signal.signal(signal.SIGINT, stop)
        old_term = signal.signal(signal.SIGTERM, stop)
        metrics_path = os.path.join(self.out, "metrics.jsonl")
        # A resumed run forgets what was logged after its checkpoint (atomically: a kill at any
        # moment leaves the whole old history or the cut one).
        rows: List[Dict[str, Any]] = (_cut_log(metrics_path, self.step if cfg.resume else 0)
                                      if self.main else [])
        eval_path = os.path.join(self.out, "eval.jsonl")
        if cfg.eval_every and self.main:
            _cut_log(eval_path, self.step if cfg.resume else 0)
        last_good = self.step if cfg.resume else None
        t_last, s_last = time.perf_counter(), self.step
        if self.main and not cfg.quiet:
            power = None
            if self.device.type == "cuda":     # NVML: read on the host, no CUDA sync
                from fastgan.benchmark.telemetry import Nvml
                power = Nvml(self.device).power_w
            self.progress = Progress(self.total, start=self.step, power=power)
        interrupted = False
        try:
            while self.step < self.total:
                runner()
                self.step += unroll
                if self.progress is not None:
                    self.progress.tick(self.step)
                if self.governor is not None:
                    note = self.governor.poll()
                    if note:
                        self._log(note)
                if stop.now:
                    self._stop_now(stop.now)
                    interrupted = True
                    break
                at_end = self.step >= self.total
                if self.step % log_every == 0 or at_end or stop.first:
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
                    if self.progress is not None:
                        self.progress.log(self.step, its, st)
                if due(cfg.checkpoint_every) or at_end or stop.first:
                    if not self._finite_state():
                        raise Diverged(f"parameters became NaN/inf by step {self.step}; "
                                       f"the last good checkpoint (step {last_good}) is "
                                       f"kept in {self.out}")
                    self.save()
                    last_good = self.step
                # Data-parallel: rank 0 evaluates alone (G's BN is per-rank there, no collective).
                if self.main and (due(cfg.eval_every) or (cfg.eval_every and at_end)):
                    from fastgan.quality.metrics import format_metrics
                    t_eval = time.perf_counter()
                    m = self.evaluate()
                    m = {"step": self.step, **m, "seconds": time.perf_counter() - t_eval}
                    with open(eval_path, "a") as f:
                        f.write(json.dumps(m) + "\n")
                    self._log(f"eval step {self.step}: {format_metrics(m)}")
                    self.last_eval = m
                    t_last += time.perf_counter() - t_eval    # keep it out of it/s
                if self.main and (due(cfg.sample_every) or at_end):
                    self.write_samples(z_fixed, labels_fixed, nrow, f"step_{self.step:07d}.png")
                if stop.first:
                    interrupted = True
                    break
        finally:
            if self.main:    # before the handlers go: a signal now must not become a traceback
                from fastgan.viz import save_loss_curve
                try:
                    save_loss_curve(rows, os.path.join(self.out, "loss_curve.svg"))
                except OSError:
                    pass     # a full disk: the error that stopped the run is the one to report
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
        return {"step": self.step, "start_step": start_step, "total": self.total,
                "out": self.out, "interrupted": interrupted,
                "signal": stop.first or stop.now, "last": rows[-1] if rows else None,
                "eval": self.last_eval}


class StopSignals:
    """SIGINT and SIGTERM during training (kill, Docker, Slurm and Kubernetes send SIGTERM).

    One process: the first one stops the run at the next iteration boundary with a checkpoint
    (exit 130 / 143); a second one exits at once with the same codes, removing this process's
    temporary files first (the previous checkpoint is intact). It calls os._exit rather than
    raising: an exception raised inside torch.save's write callback comes out of it as a bare
    RuntimeError ("unexpected pos"), and unwinding would finish work the user asked to skip.

    Data-parallel (torchrun passes Ctrl-C on as SIGINT, then SIGTERM, and stops the survivors of
    a failed rank with SIGTERM): every signal stops after the current iteration, where rank 0
    saves without any collective (every rank's state after an iteration is the global state)."""

    def __init__(self, distributed: bool, run: "Run"):
        self.distributed, self.run = distributed, run
        self.first: Optional[str] = None    # one process: stop at the next boundary
        self.now: Optional[str] = None      # data-parallel: stop at the next boundary, no log

    def __call__(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.distributed:
            self.now = self.now or name
            self.run._signalled = True
            return
        if self.first is None:
            self.first = name
            return
        step = self.run.last_saved     # one process: set only once a save has completed
        where = (f"the last checkpoint (step {step}) is in {self.run.out}" if step is not None
                 else "no checkpoint had been written")
        if self.run.main:
            ckpt.remove_stale_temps(self.run.out, own=True)
        os.write(2, f"fastgan: stopped at once by a second {name}; {where}\n".encode())
        self._exit(128 + signum)

    _exit = staticmethod(os._exit)


def _atomic_write_text(path: str, text: str) -> None:
    tmp = ckpt.temp_name(path)
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _cut_log(path: str, step: int) -> List[Dict[str, Any]]:
    """The rows of a JSON-lines log up to ``step``; the file is rewritten (temporary file and
    rename, so a kill leaves the old history or the new one, never a truncated one) only when
    rows after ``step`` or a torn last line must go."""
    if not os.path.exists(path):
        _atomic_write_text(path, "")
        return []
    with open(path) as f:
        text = f.read()
    rows, keep, dropped = [], [], False
    for line in text.splitlines(keepends=True):
        try:
            r = json.loads(line)
        except ValueError:
            dropped = True
            continue
        if not line.endswith("\n") or not isinstance(r, dict) or r.get("step", 0) > step:
            dropped = True
            continue
        rows.append(r)
        keep.append(line)
    if dropped:
        _atomic_write_text(path, "".join(keep))
    return rows


def train(cfg: TrainConfig) -> Dict[str, Any]:
    clean = False
    try:
        res = Run(cfg).train()
        clean = True
        return res
    finally:
        ddp.shutdown(clean)     # leave the process group (no-op in one process)
