"""The training progress line: redrawn in place on a terminal, plain lines in a log or CI.

On a terminal one line is redrawn (at most every ``redraw_s``) with the step, it/s, ETA, the
losses of the last log step and, on a GPU, its power; other messages print above it. Elsewhere
(a file, a pipe, CI) every log step prints one line, as before. Nothing here reads the device:
it/s and the ETA come from the host clock and the step count, the losses from the log step's
existing read, so no host sync is added inside the iteration.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional


def _eta(seconds: float) -> str:
    if not (seconds >= 0) or seconds == float("inf"):
        return "?"
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    def __init__(self, total: int, start: int = 0, stream=None, tty: Optional[bool] = None,
                 redraw_s: float = 0.25, power: Optional[Callable[[], Optional[float]]] = None,
                 clock: Callable[[], float] = time.perf_counter):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
        self.total, self.redraw_s, self.power, self.clock = total, redraw_s, power, clock
        self.mark = (clock(), start)      # (time, step) of the last log step: the rate's window
        self.its = 0.0
        self.t_draw, self.step = -1e9, start
        self.losses = ""
        self.pending = False      # a redrawn line is on the screen without its newline

    def _text(self, step: int, its: float) -> str:
        done = int(20 * step / max(1, self.total))
        eta = (self.total - step) / its if its > 0 else float("inf")
        parts = [f"[{'#' * done}{'.' * (20 - done)}] step {step}/{self.total}",
                 f"{its:8.1f} it/s", f"ETA {_eta(eta)}"]
        if self.losses:
            parts.append(self.losses)
        w = self.power() if self.power else None
        if w is not None:
            parts.append(f"{w:.0f} W")
        return " | ".join(parts)

    def _rate(self, step: int) -> float:
        t, s = self.mark
        dt = self.clock() - t
        return (step - s) / dt if step > s and dt > 0 else self.its

    def tick(self, step: int) -> None:
        """After every iteration: on a terminal, redraw when ``redraw_s`` has passed."""
        self.step = step
        if self.tty and self.clock() - self.t_draw >= self.redraw_s:
            self._draw(self._text(step, self._rate(step)))

    def log(self, step: int, its: float, stats: dict) -> None:
        """At a log step: the losses and D outputs just read for metrics.jsonl."""
        self.step, self.its, self.mark = step, its, (self.clock(), step)
        self.losses = (f"d_loss {stats['d_loss']:.4f} g_loss {stats['g_loss']:.4f} | D(x) "
                       f"{stats['d_real']:.3f} D(G(z)) {stats['d_fake']:.3f}")
        if self.tty:
            self._draw(self._text(step, its))
        else:
            print(self._text(step, its), file=self.stream, flush=True)

    def message(self, msg: str) -> None:
        """A line of its own (eval, resume, ...), above the progress line on a terminal."""
        if self.tty and self.pending:
            self.stream.write("\r\033[K")
        print(msg, file=self.stream, flush=True)
        if self.tty and self.pending:
            self._draw(self._text(self.step, self._rate(self.step)))

    def close(self) -> None:
        if self.tty and self.pending:
            self.stream.write("\n")
            self.stream.flush()
            self.pending = False

    def _draw(self, text: str) -> None:
        self.stream.write("\r\033[K" + text)
        self.stream.flush()
        self.pending = True
        self.t_draw = self.clock()
