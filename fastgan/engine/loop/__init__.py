"""The training loop: iterate (eagerly or by replaying a CUDA graph) and, at each piece's
cadence, log, checkpoint, evaluate and write samples; stop cleanly on SIGINT/SIGTERM."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from .checkpoints import Checkpoints
from .evaluation import Evaluation
from .fast_path import runner as _runner
from .metrics import Metrics, announce, start_progress
from .samples import Samples
from .signals import StopSignals
from .tensorboard import open_writer


def _tick(run) -> None:
    if run.progress is not None:
        run.progress.tick(run.step)
    if run.governor is not None:
        note = run.governor.poll()
        if note:
            run._log(note)


def _result(run, start_step: int, interrupted: bool, sig: Optional[str],
            rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {"step": run.step, "start_step": start_step, "total": run.total, "out": run.out,
            "interrupted": interrupted, "signal": sig, "last": rows[-1] if rows else None,
            "eval": run.last_eval}


def train_loop(run) -> Dict[str, Any]:
    cfg, start_step = run.cfg, run.step
    if run.step >= run.total:
        # Nothing to train (--steps is the run's total): write nothing at all.
        return _result(run, start_step, False, None, [])
    announce(run)
    samples = Samples(run)
    runner, unroll = _runner(run)

    def due(every: int) -> bool:
        # Each cadence on its own: a step that is a multiple of it (with K iterations per
        # graph replay, the replay that reaches or passes the multiple).
        return bool(every) and run.step % every < unroll

    stop = StopSignals(run.dist is not None, run)
    interrupted = False
    with stop.installed():
        log, evals, ckpts = Metrics(run, unroll), Evaluation(run), Checkpoints(run)
        tb = open_writer(run)     # --tensorboard: rank 0's writer, else None
        log.start()
        start_progress(run)
        try:
            while run.step < run.total:
                runner()
                run.step += unroll
                _tick(run)
                if stop.now:
                    run._stop_now(stop.now)
                    interrupted = True
                    break
                at_end = run.step >= run.total
                if log.due() or at_end or stop.first:
                    log.write(ckpts.last_good)
                    if tb is not None:
                        tb.scalars(log.rows[-1])
                if due(cfg.checkpoint_every) or at_end or stop.first:
                    ckpts.save()
                # Data-parallel: rank 0 evaluates alone (G's BN is per-rank there, no collective).
                if run.main and (due(cfg.eval_every) or (cfg.eval_every and at_end)):
                    log.pause(evals.write())
                    if tb is not None:
                        tb.evaluation(run.last_eval)
                if run.main and (due(cfg.sample_every) or at_end):
                    path = samples.write()
                    if tb is not None:
                        tb.image(path)
                if stop.first:
                    interrupted = True
                    break
        finally:
            log.save_curve()    # before the handlers go: a signal now must not be a traceback
            if tb is not None:
                tb.close()
    return _result(run, start_step, interrupted, stop.first or stop.now, log.rows)
