"""SIGINT and SIGTERM while the loop runs."""
from __future__ import annotations

import contextlib
import os
import signal
from typing import Iterator, Optional

from .. import checkpoint as ckpt


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

    @contextlib.contextmanager
    def installed(self) -> Iterator["StopSignals"]:
        """The handler for both signals while the block runs; the caller's come back."""
        old_int = signal.signal(signal.SIGINT, self)
        old_term = signal.signal(signal.SIGTERM, self)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
