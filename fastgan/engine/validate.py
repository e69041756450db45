"""Every check of a training run's input, in one place and before anything is written: the
config, the resumed checkpoint, the process group, the device, the backend, the variant, the
data, the batch split, CUDA graphs, the run directory and the evaluation. Each failure is a
UserError (one line, exit code 2)."""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
from types import SimpleNamespace
from typing import Iterator, Optional

import torch

from fastgan import backends, ops
from fastgan.nn.sync_bn import convert_sync_bn
from fastgan.variants import get_variant

from . import checkpoint as ckpt
from . import distributed as ddp
from . import train_options
from .config import DEFAULTS, TrainConfig, UserError, check_tensorboard, merge_resumed
from .graphs import CudaGraphsUnavailable, check_capture
from .host_loader import fits_on_device
from .iteration import Engine, EngineOptions
from .loop import evaluation
from .optim import triton_adam
from fastgan.variants.sampling import fixed_noise


@contextlib.contextmanager
def user_errors(*more: type) -> Iterator[None]:
    """The libraries' input errors as a UserError: ValueError (DistributedSetupError and
    CheckpointError among them), BackendUnavailable, CudaGraphsUnavailable, and ``more`` (the
    data's and the quality metrics' errors). Only a checkpoint's detail (torch's own text) is
    kept, for --verbose."""
    try:
        yield
    except (ValueError, ops.BackendUnavailable, CudaGraphsUnavailable) + more as e:
        detail = e.detail if isinstance(e, ckpt.CheckpointError) else None
        raise UserError(str(e), detail) from None


def check_settings(cfg: TrainConfig, h) -> None:
    """Numbers that would otherwise fail deep inside torch, or silently do something odd."""
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise UserError(what)
    need(h.batch_size >= 1, f"--batch-size must be at least 1, not {h.batch_size}")
    need(h.d_steps >= 1, f"--d-steps must be at least 1 (D updates per G update), not {h.d_steps}")
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
    try:
        triton_adam(torch.device("cpu"))    # reads FASTGAN_ADAM_KERNEL: a bad value raises
    except ValueError as e:
        raise UserError(str(e)) from None


def check_batch_statistics(variant, nets, cfg: TrainConfig, world: int) -> None:
    """Training-mode BatchNorm needs two or more samples in every forward pass."""
    from fastgan.nn import uses_batch_statistics
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
        open(probe, "w").close()
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


def check_precision(precision: str) -> None:
    if precision not in ("fp32", "bf16"):
        raise UserError(f"unknown precision {precision!r}; use fp32 or bf16")


def choose_memory_format(requested: str, variant_name: str, nets, device: torch.device) -> str:
    """--memory-format resolved: "nchw" or "channels_last". auto = channels_last on CUDA (cuDNN's
    NHWC tensor-core kernels; not yet measured against NCHW for dcgan: make gpu-check has both
    rows), nchw on CPU; a variant without convolutions has no image layout (auto: nchw, and an
    explicit choice is an error)."""
    from fastgan.nn.conv import MEMORY_FORMATS, has_convolutions
    if requested not in ("auto",) + MEMORY_FORMATS:
        raise UserError(f"--memory-format must be auto, nchw or channels_last, not {requested!r}")
    convs = has_convolutions(nets.values())
    if requested != "auto":
        if not convs:
            raise UserError(f"--memory-format {requested}: {variant_name} has no convolutions "
                            "(its images are flat vectors), so a layout means nothing there; "
                            "drop --memory-format")
        return requested
    return "channels_last" if convs and device.type == "cuda" else "nchw"


def check_data_on(data_on: str) -> Optional[bool]:
    """--data-on as Engine's ``resident`` (None: decided by the data set's size)."""
    if data_on not in ("auto", "device", "host"):
        raise UserError(f"--data-on must be auto, device or host, not {data_on!r}")
    return None if data_on == "auto" else data_on == "device"


def choose_graphs(requested: Optional[bool], device: torch.device, host_resident: bool = False,
                  unroll: int = 1, d_steps: int = 1) -> "tuple[bool, str]":
    """(capture the iteration in a CUDA graph?, why). ``requested``: True (--cuda-graphs), False
    (--no-cuda-graphs), None (the default: the graph on a CUDA device, where it can apply). An
    explicit --cuda-graphs that cannot apply is a UserError; the default then trains eagerly,
    and the reason is what `fastgan train` says on a GPU (on CPU it says nothing)."""
    if requested is False:
        return False, "--no-cuda-graphs"
    if requested is None and device.type != "cuda":
        return False, "CUDA graphs need a GPU"
    try:
        check_capture(device, host_resident, unroll, d_steps)
    except CudaGraphsUnavailable as e:
        if requested:
            raise UserError(str(e)) from None
        return False, str(e)
    return True, "--cuda-graphs" if requested else "the default on a CUDA device"


def check_eval(eval_every: int, eval_n: int) -> None:
    if eval_every < 0 or eval_n < 10:
        raise UserError(f"--eval-every must be >= 0 and --eval-n >= 10 (got {eval_every} and "
                        f"{eval_n})")


def check_total(cfg: TrainConfig, n_images: int, n_real: int) -> int:
    """The run's total number of steps (--steps, else --epochs, else 1000)."""
    if cfg.steps is not None:
        total = int(cfg.steps)
    elif cfg.epochs is not None:
        total = int(math.ceil(cfg.epochs * n_images / n_real))
    else:
        total = 1000
    if total <= 0:
        raise UserError(f"--steps/--epochs must give at least one step, not {total}")
    return total


def main_check(r: SimpleNamespace, check, *args) -> None:
    """Run a check of rank 0's file system (the only writer) and stop every rank on its
    UserError."""
    problem = None
    if r.main:
        try:
            check(*args)
        except UserError as e:
            problem = str(e)
    if r.dist is not None:
        problem = r.dist.agree(problem)
    if problem:
        raise UserError(problem)


# ---- the run, checked step by step (each step fills in ``r``) ------------------------------

def _resume(r: SimpleNamespace, cfg: TrainConfig) -> None:
    r.state, r.changes = None, []
    if cfg.resume:
        with user_errors():
            r.state = ckpt.load_checkpoint(cfg.resume)
        saved = r.state["variant"]
        if cfg.variant is not None and cfg.variant != saved:
            raise UserError(f"the checkpoint in {cfg.resume!r} is of variant {saved!r}, not "
                            f"{cfg.variant!r}; drop --variant or use --variant {saved}")
        r.changes = merge_resumed(cfg, r.state)
        if cfg.out is None:
            cfg.out = os.path.dirname(ckpt.checkpoint_path(cfg.resume))
    for k, v in DEFAULTS.items():
        if getattr(cfg, k) is None:
            setattr(cfg, k, v)


def _place(r: SimpleNamespace, cfg: TrainConfig) -> None:
    """The process group (None in one process), the device and the backend."""
    with user_errors():
        r.dist = ddp.setup(cfg.device, cfg.dist_timeout)
    r.main = r.dist is None or r.dist.is_main
    r.device = r.dist.device if r.dist is not None else pick_device(cfg.device)
    check_precision(cfg.precision)
    if cfg.cuda_graphs and r.device.type != "cuda":   # refused before the data set loads
        choose_graphs(True, r.device)
    backends.prepare(cfg.backend, r.device.type)   # e.g. Triton on CPU = its interpreter
    with user_errors():   # auto for the run's mode and variant; again if no graph (_engine)
        r.backend = ops.resolve_backend(cfg.backend, r.device.type,
                                        graph=cfg.cuda_graphs is not False, variant=cfg.variant)
    if cfg.tensorboard:     # ---- --tensorboard (issue 23): rank 0 writes, so needs the package
        main_check(r, check_tensorboard)


def _variant(r: SimpleNamespace, cfg: TrainConfig) -> None:
    with user_errors():
        r.variant = get_variant(
            cfg.variant, batch_size=cfg.batch_size, d_steps=cfg.d_steps,
            label_smoothing=cfg.label_smoothing, lr_d=cfg.lr_d, lr_g=cfg.lr_g,
            image_size=cfg.image_size, channels=cfg.channels, **cfg.variant_options)
    check_settings(cfg, r.variant.hyper)
    if r.dist is not None:
        with user_errors():
            ddp.check_batch(r.variant, r.variant.hyper.batch_size, r.dist.world)


def _data(r: SimpleNamespace, cfg: TrainConfig) -> None:
    """Data first: a dataset that cannot be found or read fails before anything is written."""
    # Looked up when called (tests replace fastgan.data.load_dataset).
    from fastgan.data import DataError, load_dataset
    h = r.variant.hyper
    with user_errors(DataError):
        r.data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, split="train",
                              image_size=h.image_size, channels=cfg.channels,
                              download=cfg.download, max_images=cfg.max_images)
    if cfg.channels is None:
        h.channels = int(r.data.images.shape[1])
    with user_errors():
        r.variant.check_image_size(int(r.data.images.shape[-1]), int(r.data.images.shape[1]))


def _engine(r: SimpleNamespace, cfg: TrainConfig) -> None:
    """The networks, the CUDA-graph choice and the Engine (restored from the checkpoint)."""
    h, world = r.variant.hyper, r.dist.world if r.dist else 1
    torch.manual_seed(cfg.seed)
    if r.device.type == "cuda":
        # Fixed shapes every iteration: let cuDNN pick its fastest algorithms once (during
        # the first iterations, or the warm-up before a graph capture).
        torch.backends.cudnn.benchmark = True
    r.nets = {k: m.to(r.device) for k, m in r.variant.build({}).items()}
    # ---- training options (issue 22): spectral norm before the optimizers and the checkpoint;
    # lazy R1 under a graph: the captured unroll holds whole R1 periods
    if cfg.spectral_norm:
        ckpt.spectral_norm_nets(r.variant, r.nets, cfg.seed, r.device)
    if cfg.r1:
        cfg.graph_unroll = train_options.graph_unroll(cfg.graph_unroll, h.d_steps, cfg.r1_every)
    # ---- end of the training options
    check_batch_statistics(r.variant, r.nets, cfg, world)
    r.memory_format = choose_memory_format(cfg.memory_format, r.variant.name, r.nets, r.device)
    if cfg.sync_bn and r.dist is not None:
        convert_sync_bn(r.nets.values())
    resident = check_data_on(cfg.data_on)
    if resident is None:    # decided here (as Engine would), for the CUDA-graph choice
        resident = fits_on_device(r.data.images, r.device)
    decide_graphs(r, cfg, not resident, h.d_steps)
    r.engine_options = EngineOptions(
        batch_size=h.batch_size, d_steps=h.d_steps, label_smoothing=h.label_smoothing,
        precision=cfg.precision, seed=cfg.seed, capturable=r.graphs,
        memory_format=r.memory_format,
        rank=r.dist.rank if r.dist else 0, world=world)
    # ---- training options (issue 22), checked with the backend this run trains with
    r.backend = train_options.r1_backend(cfg, r.nets, r.backend,
                                         ops.available_backends(r.device.type))
    with user_errors():
        r.engine_options = dataclasses.replace(
            r.engine_options, **train_options.engine_fields(cfg, r.variant, r.nets, r.backend))
    # ---- end of the training options
    with user_errors():
        build_engine(r, resident)
    r.step = 0
    if r.state is not None:
        with user_errors():
            r.step = ckpt.restore_into(r.state, r.engine)
    r.last_saved = r.step if r.state is not None else None
    if r.dist is not None:
        r.dist.broadcast_state(r.nets.values())
        if r.engine.ema is not None:    # training options: every rank's average from rank 0's
            r.dist.broadcast_state([r.engine.ema.module])


def decide_graphs(r, cfg: TrainConfig, host_resident: bool, d_steps: int) -> None:
    """``r.graphs``; where the default graph cannot apply on CUDA, one line saying why and, with
    --backend auto, the eager mode's backend (``r.backend`` was resolved for the graph)."""
    r.graphs, why = choose_graphs(cfg.cuda_graphs, r.device, host_resident, cfg.graph_unroll,
                                  d_steps)
    if cfg.cuda_graphs is None and r.device.type == "cuda" and not r.graphs:
        old = r.backend
        r.backend = eager_backend(r, cfg)
        switched = f", backend {r.backend} (auto, eager)" if r.backend != old else ""
        if r.main and not cfg.quiet:
            print(f"fastgan: training eagerly (no CUDA graph{switched}): {why}",
                  file=sys.stderr, flush=True)


def eager_backend(r, cfg: TrainConfig) -> str:
    """The backend of an eager run: --backend auto's choice for eager mode, else the one given."""
    auto = cfg.backend == "auto"
    return ops.resolve_backend("auto", r.device.type, False, cfg.variant) if auto else r.backend


def build_engine(r, resident: bool, capturable: Optional[bool] = None) -> None:
    """``r.engine`` from the run's networks, data and options (``capturable``: another choice
    than the options'), attached to the process group. Also the eager rebuild after a failed
    CUDA-graph capture (engine/loop/fast_path.py), which then restores the state."""
    opts = r.engine_options
    if capturable is not None:
        opts = r.engine_options = dataclasses.replace(opts, capturable=capturable)
    r.engine = None     # the old engine's device copy of the data can go first
    r.engine = Engine(r.variant, r.nets, r.data.images, r.data.labels, opts, r.device,
                      resident=resident)
    if r.dist is not None:
        ddp.attach(r.engine, r.dist, r.variant)


def _real_stats(r: SimpleNamespace, cfg: TrainConfig) -> None:
    """The real data's feature statistics (cached on disk), computed up front by rank 0, the
    only evaluator (every rank stops on its error), so a run the metrics cannot judge fails
    before it trains."""
    check_eval(cfg.eval_every, cfg.eval_n)
    with backends.tf32(cfg.tf32):
        main_check(r, evaluation.real_side, r, cfg)


def _outputs(r: SimpleNamespace, cfg: TrainConfig) -> None:
    """The total, the run directory and the evaluation's real statistics; the directory is
    made last (bad input leaves nothing behind)."""
    n_real = r.variant.batch_sizes(r.variant.hyper.batch_size)[0]
    r.total = check_total(cfg, r.data.images.shape[0], n_real)
    r.out = cfg.out or os.path.join("runs", cfg.variant)
    main_check(r, check_out_dir, r.out, cfg.resume, cfg.overwrite)
    r.real_stats, r.inception, r.last_eval = None, None, None
    if cfg.eval_every:
        _real_stats(r, cfg)
    elif cfg.inception_weights:     # kept for `fastgan eval`: checked and made absolute now
        main_check(r, evaluation.inception_path, cfg)
    main_check(r, make_out_dir, r.out)
    if r.main:
        # Leftovers of saves killed mid-write (SIGKILL): as large as a checkpoint each.
        gone = ckpt.remove_stale_temps(r.out)
        if gone and not cfg.quiet:
            print(f"fastgan: removed {len(gone)} temporary file(s) of interrupted saves from "
                  f"{r.out}", file=sys.stderr, flush=True)


def prepare(cfg: TrainConfig) -> SimpleNamespace:
    """Check everything a run needs and build it: the state a Run holds (``cfg`` completed
    with the resumed run's settings and the defaults). Nothing is written before the run
    directory is made, at the very end."""
    r = SimpleNamespace(cfg=cfg)
    for stage in (_resume, _place, _variant, _data, _engine, _outputs):
        stage(r, cfg)
    del r.state             # restored into the engine: the loaded tensors can go
    return r
