"""Quality metrics while training (--eval-every): eval.jsonl and a line per evaluation. The
real data's statistics are computed up front by the validation."""
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict

from ..config import Diverged, UserError
from .metrics import _cut_log
from .samples import sampling_nets


def real_side(r, cfg) -> None:
    """``r.real_stats`` and ``r.inception`` (the InceptionV3 of --inception-weights or
    $FASTGAN_INCEPTION_WEIGHTS, else None) for the evaluations; a UserError when no metric
    applies or the weights are unusable."""
    from fastgan.quality.classifier import ClassifierError
    from fastgan.quality.inception import InceptionError, load_inception, weights_path
    from fastgan.quality.metrics import QualityError, inception_hint, real_stats
    try:
        path = weights_path(cfg.inception_weights)
        channels = r.variant.hyper.channels
        if path is None and channels != 1:
            raise UserError(f"--eval-every: the digit classifier judges 1-channel images and this "
                            f"run makes {channels}-channel images: {inception_hint()}; or drop "
                            "--eval-every")
        if cfg.inception_weights:     # config.json keeps a path that works from anywhere
            cfg.inception_weights = str(path.resolve())
        r.inception = load_inception(path, r.device) if path is not None else None
        r.real_stats = real_stats(r.data.images, r.device, inception=r.inception)
    except (QualityError, ClassifierError, InceptionError, ValueError) as e:
        raise UserError(str(e)) from None


def evaluate(run) -> Dict[str, Any]:
    from fastgan.quality.metrics import QualityError, evaluate_generator
    try:
        m = evaluate_generator(run.variant, sampling_nets(run), run.real_stats, n=run.cfg.eval_n,
                               seed=run.cfg.seed + 1234, inception=run.inception)
    except QualityError as e:   # e.g. NaN samples: report it as divergence
        raise Diverged(f"evaluation at step {run.step}: {e}") from None
    if run.inception is not None:
        m["inception_weights"] = str(run.inception.path)
    return m


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
