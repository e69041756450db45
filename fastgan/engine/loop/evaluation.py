"""Quality metrics while training (--eval-every): eval.jsonl and a line per evaluation. The
real data's statistics are computed up front by the validation."""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Dict

from ..config import Diverged, UserError
from .metrics import _cut_log
from .samples import sampling_nets


def inception_path(cfg):
    """The weights file of --inception-weights (or the resumed run's), else, for a run that
    evaluates, $FASTGAN_INCEPTION_WEIGHTS; recorded in the config as an absolute path."""
    from fastgan.quality.inception import InceptionError, weights_path
    source = "--inception-weights" + (" (given, or the resumed run's)" if cfg.resume else "")
    try:
        path = weights_path(cfg.inception_weights, source)
    except InceptionError as e:
        raise UserError(str(e)) from None
    if path is not None and (cfg.inception_weights or cfg.eval_every):
        cfg.inception_weights = str(path)
    return path


def real_side(r, cfg) -> None:
    """``r.real_stats`` and ``r.inception`` (the InceptionV3 of ``inception_path``, else None)
    for the evaluations; a UserError when no metric applies or the weights are unusable."""
    from fastgan.quality.classifier import ClassifierError
    from fastgan.quality.inception import InceptionError, load_inception
    from fastgan.quality.metrics import QualityError, inception_hint, real_stats
    path = inception_path(cfg)
    try:
        channels = r.variant.hyper.channels
        if path is None and channels != 1:
            raise UserError(f"--eval-every: the digit classifier judges 1-channel images and this "
                            f"run makes {channels}-channel images: {inception_hint()}; or drop "
                            "--eval-every")
        if path is not None and not r.cfg.quiet:
            print(f"fastgan: standard FID with {path}; the real images' Inception features are "
                  "computed once (then cached): other ranks wait for it (--dist-timeout)",
                  file=sys.stderr, flush=True)
        r.inception = load_inception(path, r.device) if path is not None else None
        r.real_stats = real_stats(r.data.images, r.device, inception=r.inception)
    except (QualityError, ClassifierError, InceptionError, ValueError) as e:
        raise UserError(str(e)) from None


def evaluate(run) -> Dict[str, Any]:
    from fastgan.quality.metrics import QualityError, evaluate_generator
    try:
        return evaluate_generator(run.variant, sampling_nets(run), run.real_stats,
                                  n=run.cfg.eval_n, seed=run.cfg.seed + 1234,
                                  inception=run.inception)
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
