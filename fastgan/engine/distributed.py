"""Data-parallel training over several processes (``torchrun``): NCCL on GPUs, gloo on CPU.

How it works (and why not ``DistributedDataParallel``):

* **One global batch, split.** ``--batch-size B`` is the global batch. Every rank draws the same
  global stream of real indices, mismatched labels and noise from the same seeded device
  generator and keeps its own disjoint slice ``[r*B/N, (r+1)*B/N)``; only its slice of images is
  gathered. So N ranks at B/N see exactly the samples one process at B would see, and the RNG state
  in a checkpoint does not depend on the world size (a run resumes on any number of ranks).
* **Gradients: one explicit all-reduce per optimizer step.** Right after each backward the engine
  calls ``GradSync``: the gradients of the parameters about to be stepped are packed into one
  static flat buffer, all-reduced (sum), scaled (1/N for mean-reduced losses, 1 for the summed
  LSGAN losses of ``gancls``) and copied back. It is plain tensor work plus one collective, so it
  runs eagerly with gloo and is captured inside the CUDA graph with NCCL. DDP's reducer is not
  used: its autograd hooks and bucket bookkeeping fight the G step's ``backward(inputs=G)``
  (D's parameters never get gradients in the G step, which DDP reports as unused parameters or
  waits for) and its host-side bucket logic is what makes DDP awkward to capture.
* **BatchNorm** is per rank by default (each rank normalizes its B/N samples, as in the DCGAN
  paper's multi-GPU setting). ``--sync-bn`` swaps every ``BatchNormAct`` for
  ``fastgan.nn.SyncBatchNormAct``: global mean/variance through a differentiable all-reduce (one
  per BN layer), then normalize + activation (the op ``sync_bn_act``, whose only implementation
  is the reference: the fused bn_act kernels compute batch statistics themselves; the other fused
  ops stay). Synchronization happens only inside the training iteration (``GradSync.collectives``):
  sampling on rank 0 alone uses local statistics and never waits for the other ranks.
* **Rank 0 writes** logs, samples, metrics and checkpoints; the logged losses are averaged over
  the ranks. Checkpoints hold the plain (unwrapped) state dicts and the global batch size.
* **Failures.** Collectives time out after ``--dist-timeout`` seconds; torchrun stops the other
  workers when one fails; a surviving rank turns the collective error (or torchrun's SIGTERM)
  into one line saying where the last checkpoint is (``RankFailure``, exit code 4).
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
import torch.distributed as dist

from fastgan.nn.sync_bn import sync_scope

DEFAULT_TIMEOUT_S = 300.0
# Exit code of a run that stopped because another rank failed (2 bad input, 3 diverged, 130 ^C).
EXIT_RANK_FAILURE = 4


class DistributedSetupError(ValueError):
    """Bad distributed set-up (the trainer reports it as a UserError)."""


class RankFailure(Exception):
    """The distributed run stopped because a rank failed or the job was torn down. ``quiet``:
    a rank other than 0 that was merely told to stop (rank 0 reports)."""

    def __init__(self, msg: str, quiet: bool = False):
        super().__init__(msg)
        self.quiet = quiet


class Stopped(Exception):
    """SIGTERM (torchrun stops the surviving workers with it) ended the run at an iteration
    boundary; rank 0 has saved a checkpoint."""


_PEER_WORDS = ("gloo", "nccl", "connection", "peer", "timed out", "timeout", "socket",
               "broken pipe", "process group", "processgroup", "watchdog")


def is_peer_failure(e: BaseException) -> bool:
    """Whether an exception comes from a collective whose peers failed (gloo raises a plain
    RuntimeError naming its transport; NCCL/c10d raise DistError subclasses), as opposed to this
    rank's own error (out of memory, a bug), whose traceback should be shown as it is."""
    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    if isinstance(e, torch.OutOfMemoryError):
        return False
    msg = str(e).lower()
    return any(w in msg for w in _PEER_WORDS)


def env_world() -> Optional[Dict[str, int]]:
    """rank, world size and local rank from torchrun's environment, or None when this process
    was not started by torchrun (or was started with one process)."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    try:
        world = int(os.environ["WORLD_SIZE"])
        rank = int(os.environ["RANK"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        return None
    if world <= 1:
        return None
    return {"rank": rank, "world": world, "local_rank": local}


@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int
    backend: str
    device: torch.device
    _flags: Dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def agree(self, problem: Optional[str]) -> Optional[str]:
        """Rank 0's verdict on a check only it can make (its run directory), for every rank, so
        all stop together instead of the others waiting on a rank that has left."""
        box = [problem]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_state(self, modules) -> None:
        """Make every rank start from rank 0's parameters and buffers (they are equal already
        when all ranks seed alike or load the same checkpoint; this makes it a guarantee)."""
        with torch.no_grad():
            for m in modules:
                for t in list(m.parameters()) + list(m.buffers()):
                    dist.broadcast(t.data, src=0)


def setup(device_name: Optional[str], timeout_s: Optional[float]) -> Optional[Dist]:
    """Join the process group when started by torchrun with more than one process; None
    otherwise (single-process training is unchanged). NCCL for CUDA devices, gloo for CPU."""
    w = env_world()
    if w is None:
        return None
    if not dist.is_available():
        raise DistributedSetupError("this PyTorch build has no torch.distributed; "
                                    "run without torchrun")
    timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else float(timeout_s)
    if timeout_s <= 0:
        raise DistributedSetupError(f"--dist-timeout must be positive seconds, not {timeout_s}")
    want_cuda = (device_name in (None, "auto") and torch.cuda.is_available()) or \
        (device_name is not None and device_name.startswith("cuda"))
    if want_cuda:
        if device_name not in (None, "auto", "cuda"):
            raise DistributedSetupError(
                f"--device {device_name}: under torchrun each rank uses cuda:LOCAL_RANK; "
                "pass --device cuda (choose GPUs with CUDA_VISIBLE_DEVICES)")
        if not torch.cuda.is_available():
            raise DistributedSetupError(
                "--device cuda was asked for but no CUDA GPU is available; use --device cpu "
                "(gloo) or run on GPU nodes")
        n = torch.cuda.device_count()
        if w["local_rank"] >= n:
            raise DistributedSetupError(
                f"local rank {w['local_rank']} has no GPU: this node has {n} visible GPU(s); "
                f"use torchrun --nproc-per-node {n} (or fewer)")
        device = torch.device("cuda", w["local_rank"])
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device_name not in (None, "auto", "cpu"):
        raise DistributedSetupError(f"unknown device {device_name!r}; use cpu or cuda")
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if backend == "gloo" and not dist.is_gloo_available():
        raise DistributedSetupError("this PyTorch build has no gloo backend for CPU training")
    if backend == "nccl" and not dist.is_nccl_available():
        raise DistributedSetupError("this PyTorch build has no NCCL backend for GPU training")
    if not dist.is_initialized():
        kw = {}
        if backend == "nccl":
            kw["device_id"] = device
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s), **kw)
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=w["local_rank"],
                backend=backend, device=device)


def shutdown(clean: bool = True) -> None:
    """Leave the process group. After a failure the group is left to process exit (destroying
    a communicator whose peer is gone can block)."""
    if clean and dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:
            pass


# ---- the global batch, split -------------------------------------------------------------

def check_batch(variant, batch_size: int, world: int) -> None:
    """Raise DistributedSetupError unless every per-step count divides by the world size (the
    trainer's validation and the Engine both call it)."""
    if world <= 1:
        return

    def splits(b):
        return all(c % world == 0 and c > 0 for c in variant.step_counts(b))

    if splits(batch_size):
        return
    ok = next((b for b in range(world, 64 * world * max(1, batch_size) + 1, world)
               if b >= batch_size and splits(b)), None)
    n_real, n_noise = variant.batch_sizes(batch_size)
    hint = f"; use --batch-size {ok} (the global batch, split over the ranks)" if ok else ""
    raise DistributedSetupError(
        f"batch size {batch_size} does not split over {world} ranks: variant {variant.name!r} "
        f"draws {n_real} real images and {n_noise} noise vectors per step, and each must be a "
        f"multiple of the number of ranks{hint}")


# ---- gradients and logged statistics ----------------------------------------------------

class GradSync:
    """The engine's distributed hook: gradient all-reduce after each backward, averaged logged
    statistics, and synchronized BN switched on for the duration of an iteration."""

    def __init__(self, d: Dist, loss_reduction: str = "mean"):
        if loss_reduction not in ("mean", "sum"):
            raise ValueError(f"loss_reduction must be mean or sum, not {loss_reduction!r}")
        self.d = d
        self.world = d.world
        # Mean losses: the global loss is the mean of the ranks' losses, so its gradient is the
        # mean of theirs. Summed losses (gancls LSGAN): the global loss is the sum.
        self.grad_scale = 1.0 / d.world if loss_reduction == "mean" else 1.0
        self.loss_reduction = loss_reduction
        self._bufs: Dict[tuple, torch.Tensor] = {}

    def sync_grads(self, params: List[torch.nn.Parameter]) -> None:
        """All-reduce the gradients of ``params`` through one static flat buffer per dtype."""
        by_dtype: Dict[torch.dtype, List[torch.Tensor]] = {}
        for p in params:
            if p.grad is not None:
                by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
        for dt, grads in by_dtype.items():
            n = sum(g.numel() for g in grads)
            key = (id(params), dt)
            buf = self._bufs.get(key)
            if buf is None or buf.numel() != n or buf.device != grads[0].device:
                buf = torch.empty(n, dtype=dt, device=grads[0].device)
                self._bufs[key] = buf
            torch.cat([g.reshape(-1) for g in grads], out=buf)
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            if self.grad_scale != 1.0:
                buf.mul_(self.grad_scale)
            chunks = buf.split([g.numel() for g in grads])
            torch._foreach_copy_(grads, [c.view_as(g) for c, g in zip(chunks, grads)])

    def reduce_stats(self, stats: torch.Tensor, loss_slots=(0, 1)) -> None:
        """In place: the ranks' accumulated statistics -> the global run's. Mean-type entries
        (and the step count) are averaged; the losses are averaged for mean-reduced losses and
        summed for summed ones, which is what one process at the global batch would log."""
        dist.all_reduce(stats, op=dist.ReduceOp.SUM)
        scale = torch.full_like(stats, 1.0 / self.world)
        if self.loss_reduction == "sum":
            for i in loss_slots:
                scale[i] = 1.0
        stats.mul_(scale)

    @contextlib.contextmanager
    def collectives(self):
        """Inside one training iteration: synchronized BN (when converted) all-reduces."""
        with sync_scope(None):
            yield


def attach(engine, d: Dist, variant) -> GradSync:
    hook = GradSync(d, getattr(variant, "loss_reduction", "mean"))
    engine.dist = hook
    return hook

