"""Quality metrics while training (--eval-every): eval.jsonl and a line per evaluation. The
real data's statistics are computed up front by the validation."""
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict

from ..config import Diverged
from .metrics import _cut_log
from .samples import sampling_nets


def evaluate(run) -> Dict[str, Any]:
    from fastgan.quality.metrics import QualityError, evaluate_generator
    try:
        return evaluate_generator(run.variant, sampling_nets(run), run.real_stats, n=run.cfg.eval_n,
                                  seed=run.cfg.seed + 1234)
    except QualityError as e:   # e.g. NaN samples: report it as divergence
        raise Diverged(f"evaluation at step {run.step}: {e}") from None


class Evaluation:
    def __init__(self, run):
        self.run = run
        self.path = os.path.join(run.out, "eval.jsonl")
        if run.cfg.eval_every and run.main:    # a resumed run forgets evaluations after it
            _cut_log(self.path, run.step if run.cfg.resume else 0)

    def write(self) -> float:
        """Evaluate, append to eval.jsonl, say it; the seconds it took."""
        from fastgan.quality.metrics import format_metrics
        run = self.run
        t0 = time.perf_counter()
        m = run.evaluate()
        m = {"step": run.step, **m, "seconds": time.perf_counter() - t0}
        with open(self.path, "a") as f:
            f.write(json.dumps(m) + "\n")
        run._log(f"eval step {run.step}: {format_metrics(m)}")
        run.last_eval = m
        return time.perf_counter() - t0
