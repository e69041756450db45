"""What a run says and logs: config.json, the start-up lines, the progress line, metrics.jsonl
(with it/s and the divergence check on the logged losses), the loss curve, and the one line for
a run file that cannot be written."""
from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import time
from typing import Any, Dict, List, Optional

import torch

from .. import checkpoint as ckpt
from ..config import Diverged, UserError
from ..progress import Progress


def announce(run) -> None:
    """The resume line, config.json (rank 0) and the start-up lines, once training starts."""
    cfg, h = run.cfg, run.variant.hyper
    if run.changes:
        run._log(f"fastgan: resuming {run.out} at step {run.step} with "
                 f"{', '.join(run.changes)} (every other setting as saved)")
    if run.main:
        os.makedirs(run.out, exist_ok=True)
        _atomic_write_text(os.path.join(run.out, "config.json"), json.dumps(
            {**cfg.to_dict(), "resolved_backend": run.backend,
             "device": str(run.device), "dataset_source": run.data.source,
             "world_size": run.dist.world if run.dist else 1,
             "hyper": dataclasses.asdict(h)}, indent=2))
    if run.dist is not None:
        run._log(f"fastgan: data-parallel over {run.dist.world} processes "
                 f"({run.dist.backend}), {h.batch_size // run.dist.world} of the batch per "
                 f"rank, BatchNorm {'synchronized' if cfg.sync_bn else 'per rank'}")
    cpu = (f", {torch.get_num_threads()} CPU thread(s)"
           + (f" ({cfg.threads_reason})" if cfg.threads_reason else "")
           if run.device.type == "cpu" else "")
    run._log(f"fastgan: {run.variant.name} on {run.device}{cpu} with backend "
             f"{run.backend}{' + CUDA graphs' if run.graphs else ''}, batch "
             f"{h.batch_size} of {h.channels}x{h.image_size}x{h.image_size}, "
             f"{run.data.images.shape[0]} images from {run.data.source}; steps "
             f"{run.step}->{run.total}; out {run.out}")
    if not run.engine.resident:
        gb = run.data.images.numel() / 2**30
        run._log(f"fastgan: the data set ({gb:.2f} GiB) stays in pinned host memory"
                 f"{' (too large for the GPU)' if cfg.data_on == 'auto' else ''}: batches "
                 "are gathered on the host, double-buffered, and copied in each iteration")


def start_progress(run) -> None:
    """The progress line (rank 0, unless --quiet), with the GPU's power draw on CUDA."""
    if run.main and not run.cfg.quiet:
        power = None
        if run.device.type == "cuda":     # NVML: read on the host, no CUDA sync
            from fastgan.benchmark.telemetry import Nvml
            power = Nvml(run.device).power_w
        run.progress = Progress(run.total, start=run.step, power=power)


class Metrics:
    """metrics.jsonl: a row of mean losses every ``log_every`` steps (and at the end or a stop),
    each checked for divergence."""

    def __init__(self, run, unroll: int):
        self.run, cfg = run, run.cfg
        # With K iterations per graph replay, a multiple of K.
        self.every = max(unroll, cfg.log_every - cfg.log_every % unroll)
        self.path = os.path.join(run.out, "metrics.jsonl")
        # A resumed run forgets what was logged after its checkpoint (atomically: a kill at any
        # moment leaves the whole old history or the cut one).
        self.rows: List[Dict[str, Any]] = (_cut_log(self.path, run.step if cfg.resume else 0)
                                           if run.main else [])
        self.start()

    def start(self) -> None:
        """it/s counts from here."""
        self.t_last, self.s_last = time.perf_counter(), self.run.step

    def due(self) -> bool:
        return self.run.step % self.every == 0

    def pause(self, seconds: float) -> None:
        """Keep ``seconds`` of other work (an evaluation) out of it/s."""
        self.t_last += seconds

    def write(self, last_good: Optional[int]) -> None:
        run = self.run
        st = run.engine.read_stats()
        now = time.perf_counter()
        its = (run.step - self.s_last) / max(now - self.t_last, 1e-9)
        self.t_last, self.s_last = now, run.step
        row = {"step": run.step, **st, "it_s": its,
               "img_s": its * run.variant.hyper.batch_size, "time": time.time()}
        if not all(math.isfinite(st[k]) for k in ("d_loss", "g_loss")):
            raise Diverged(
                f"training diverged at step {run.step}: d_loss={st['d_loss']} "
                f"g_loss={st['g_loss']}; " + (
                    f"the last good checkpoint (step {last_good}) is kept in {run.out}"
                    if last_good is not None else "no checkpoint had been written yet") +
                "; try a lower learning rate (--lr-d/--lr-g) or fp32")
        self.rows.append(row)
        if run.main:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
        if run.progress is not None:
            run.progress.log(run.step, its, st)

    def save_curve(self) -> None:
        if self.run.main:
            from fastgan.viz import save_loss_curve
            try:
                save_loss_curve(self.rows, os.path.join(self.run.out, "loss_curve.svg"))
            except OSError:
                pass     # a full disk: the error that stopped the run is the one to report


def write_failed(run, e: OSError) -> UserError:
    """Any other file of the run that cannot be written (metrics, samples, config): one
    line naming the folder, the space needed and the checkpoint on disk."""
    import shutil
    try:
        free = shutil.disk_usage(run.out).free
    except OSError:
        free = 0
    need = ckpt._nbytes({"n": run.engine.state_tensors()}) if hasattr(
        run.engine, "state_tensors") else 0
    step = ckpt.peek_step(run.out)
    full = e.errno in (errno.ENOSPC, errno.EDQUOT)
    name = os.path.basename(str(e.filename or ""))
    m = ckpt._TEMP.match(name)
    name = m.group("base") if m else name         # the file, not its temporary
    return UserError(
        f"cannot write {name or 'a file'} in {run.out} "
        f"({'the disk is full' if full else e.strerror}"
        + (f": the next checkpoint needs about {ckpt._mb(need)}, {ckpt._mb(free)} are free"
           if full else "") + f"); training stopped at step {run.step}; "
        + (f"the last checkpoint (step {step}) is intact, continue with --resume {run.out} "
           "once there is room" if step is not None else "no checkpoint had been written"),
        repr(e))


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
