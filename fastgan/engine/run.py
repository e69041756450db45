"""A training run: built by the validation (validate.prepare), trained by the loop
(engine/loop), inside the run's backend, thread count and TF32 setting."""
from __future__ import annotations

import os
import signal
import sys
from typing import Any, Dict, Optional

import torch

from fastgan import backends, ops

from . import checkpoint as ckpt
from . import distributed as ddp
from .config import TrainConfig
from .loop import checkpoints, evaluation, train_loop
from .loop.metrics import write_failed
from .validate import prepare


class Run:
    """Everything a training run holds once its inputs are checked."""

    def __init__(self, cfg: TrainConfig):
        self.progress = None        # the progress line, while the loop runs
        self.governor = None        # the CPU threads following the load, while the loop runs
        self.__dict__.update(vars(prepare(cfg)))

    def _log(self, msg: str) -> None:
        if not self.cfg.quiet and self.main:
            if self.progress is not None:
                self.progress.message(msg)      # above the progress line on a terminal
            else:
                print(msg, file=sys.stderr, flush=True)

    def _finite_state(self) -> bool:
        return checkpoints.finite_state(self)

    def evaluate(self) -> Dict[str, Any]:
        return evaluation.evaluate(self)

    def save(self) -> Optional[str]:
        return checkpoints.save(self)

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
        # The run's backend, thread count and TF32 setting for its duration only: the caller's
        # come back.
        threads = torch.get_num_threads()
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        self.governor = None
        # Not under torchrun: there the ranks share the cores by design, and one rank moving
        # its thread count while the others wait on it in a collective only adds jitter.
        if self.cfg.threads_adapt and self.device.type == "cpu" and self.dist is None:
            from fastgan.threads import ThreadGovernor
            self.governor = ThreadGovernor(torch.get_num_threads(), torch.set_num_threads)
        with ops.use_backend(self.backend), backends.tf32(self.cfg.tf32):
            try:
                return train_loop(self)
            except OSError as e:        # disk full, read-only, ...: one line, not a traceback
                raise write_failed(self, e) from None
            finally:
                torch.set_num_threads(threads)
                if self.progress is not None:
                    self.progress.close()


def train(cfg: TrainConfig) -> Dict[str, Any]:
    clean = False
    try:
        res = Run(cfg).train()
        clean = True
        return res
    finally:
        ddp.shutdown(clean)     # leave the process group (no-op in one process)
