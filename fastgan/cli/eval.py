"""`fastgan eval`: the quality metrics of a checkpoint's generator."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .errors import fail, fail_from, missing_folder

NAME = "eval"
HELP = ("FID-MNIST, KID, precision/recall, conditional accuracy, confidence and mode coverage "
        "of a checkpoint's generator; standard FID/KID with --inception-weights (offline)")


def add_parser(sub) -> argparse.ArgumentParser:
    e = sub.add_parser(NAME, help=HELP)
    e.add_argument("--checkpoint", required=True, help="run directory or checkpoint.pt")
    e.add_argument("--n", type=int, default=10000, help="generated samples (default 10000)")
    e.add_argument("--seed", type=int, default=1234, help="noise seed of the samples")
    e.add_argument("--data-dir", help="where the run's data set is now (default: the run's)")
    e.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    e.add_argument("--json", help="also write the metrics to this JSON file")
    e.add_argument("--inception-weights", metavar="FILE",
                   help="InceptionV3 weights (pt_inception-2015-12-05-6726825d.pth, as pytorch-fid "
                   "and torch-fidelity use) for standard FID, KID and precision/recall, gray or "
                   "colour images (default: the file the run's own evaluations used, else "
                   "$FASTGAN_INCEPTION_WEIGHTS; needs fastgan[fid])")
    e.add_argument("--no-ema", dest="ema", action="store_false",
                   help="the raw generator, not the moving average (--ema runs keep both)")
    e.add_argument("--verbose", action="store_true",
                   help="with an error, also print the underlying library's own message")
    return e


def run_real_data(cfg: dict, data_dir=None):
    """The real images a run was trained on (uint8), from its saved config."""
    from fastgan.data import DataError, load_dataset
    from fastgan.engine.config import UserError
    try:
        return load_dataset(cfg.get("dataset") or "mnist", data_dir=data_dir or cfg.get("data_dir"),
                            split="train", image_size=cfg.get("image_size"),
                            channels=cfg.get("channels"), max_images=cfg.get("max_images"))
    except DataError as e:
        raise UserError(f"{e} (the run's real data is needed for FID; point --data-dir at it)"
                        ) from None


def run(a) -> int:
    from fastgan.engine import checkpoint as ckpt
    from fastgan.engine.config import UserError
    from fastgan.engine.validate import pick_device
    from fastgan.quality.classifier import ClassifierError
    from fastgan.quality.inception import InceptionError, load_inception, weights_path
    from fastgan.quality.metrics import (QualityError, evaluate_generator, format_metrics,
                                         inception_hint, real_stats)
    try:
        if a.n < 10:
            raise UserError(f"--n must be at least 10, not {a.n}")
        if problem := missing_folder("--json", a.json):
            raise UserError(problem)      # before the evaluation, not after it
        device = pick_device(a.device)
        # the option (a bad path fails before any work), else the run's own, else $FASTGAN_...
        weights = weights_path(a.inception_weights) if a.inception_weights else None
        state, v, nets = ckpt.load_networks(a.checkpoint, device, ema=a.ema)
        saved = state["config"].get("inception_weights")
        if weights is None and saved:
            if Path(saved).is_file():
                weights = Path(saved)
            else:
                print(f"fastgan eval: the run's --inception-weights {saved} is gone; pass "
                      "--inception-weights FILE for standard FID", file=sys.stderr)
        weights = weights or weights_path(None)
        if weights is None and v.hyper.channels != 1:
            raise UserError(f"{v.name} makes {v.hyper.channels}-channel images, which the digit "
                            f"classifier cannot judge: {inception_hint()}")
        data = run_real_data(state["config"], a.data_dir)
        t0 = time.perf_counter()
        net = load_inception(weights, device) if weights is not None else None
        real = real_stats(data.images, device, inception=net)
        m = evaluate_generator(v, nets, real, n=a.n, seed=a.seed, inception=net)
    except (UserError, ckpt.CheckpointError, ClassifierError, QualityError, InceptionError) as e:
        return fail_from(e, a)
    m.update(variant=v.name, step=int(state["step"]), data=data.source, real_n=real["n"],
             seconds=round(time.perf_counter() - t0, 2), device=str(device))
    print(f"{v.name} at step {m['step']} ({a.n} samples vs {real['n']} real images): "
          f"{format_metrics(m)}")
    if "class_hist" in m:
        print("class histogram: " + " ".join(f"{k}:{p:.3f}" for k, p in enumerate(m["class_hist"])))
    if a.json:
        try:
            with open(a.json, "w") as f:
                json.dump(m, f, indent=1)
        except OSError as e:
            return fail(f"cannot write --json {a.json} ({e.strerror}); the metrics are printed "
                         "above")
    return 0
