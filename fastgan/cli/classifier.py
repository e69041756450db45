"""`fastgan classifier train | info`: the digit classifier behind the quality metrics."""
from __future__ import annotations

import argparse
import sys
import time

from .errors import fail

NAME = "classifier"
HELP = "the digit classifier behind the quality metrics: train | info"


def add_parser(sub) -> argparse.ArgumentParser:
    c = sub.add_parser(NAME, help=HELP)
    csub = c.add_subparsers(dest="classifier_cmd", metavar="COMMAND")
    t = csub.add_parser("train", help="train it on the real MNIST digits found (reproducible)")
    t.add_argument("--data-dir", help="folder with the MNIST IDX files (default: $FASTGAN_DATA, "
                   "then the user cache)")
    t.add_argument("--epochs", type=int, default=15)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default="lenet_mnist.pt", help="weights file to write (the "
                   "packaged one is fastgan/quality/assets/lenet_mnist.pt)")
    t.set_defaults(classifier_fn=_train)
    i = csub.add_parser("info", help="what the packaged classifier was trained and evaluated "
                        "on; with the data present, measure its accuracy again")
    i.add_argument("--weights", help="a weights file (default: the packaged one)")
    i.add_argument("--data-dir")
    i.set_defaults(classifier_fn=_info)
    c.set_defaults(classifier_help=c.print_help)
    return c


def run(a) -> int:
    if a.classifier_cmd is None:
        a.classifier_help()
        return 2
    return a.classifier_fn(a)


def _train(a) -> int:
    import torch

    from fastgan.data import DataError
    from fastgan.quality.classifier import (ClassifierTrainConfig, accuracy, round_trip,
                                            save_classifier, train_classifier)
    from fastgan.quality.classifier_data import classifier_data, data_digest
    if a.epochs < 1:
        return fail(f"--epochs must be at least 1, not {a.epochs}")
    try:
        d = classifier_data(a.data_dir)
    except DataError as e:
        return fail(str(e))
    print(f"fastgan: classifier on {d.train_desc}; evaluated on {d.eval_desc}", file=sys.stderr)
    cfg = ClassifierTrainConfig(epochs=a.epochs, seed=a.seed)
    t0 = time.perf_counter()
    model = round_trip(train_classifier(d.train_x, d.train_y, cfg,
                                        log=lambda s: print(s, file=sys.stderr)))
    acc = accuracy(model, d.eval_x, d.eval_y)
    meta = {"protocol": d.protocol, "trained_on": d.train_desc, "evaluated_on": d.eval_desc,
            "eval_accuracy": acc, "train_digest": data_digest(d.train_x),
            "eval_digest": data_digest(d.eval_x), "epochs": cfg.epochs, "seed": cfg.seed,
            "batch_size": cfg.batch_size, "lr": cfg.lr, "augment": cfg.augment,
            "torch": torch.__version__, "train_seconds": round(time.perf_counter() - t0, 1),
            "date": time.strftime("%Y-%m-%d")}
    save_classifier(model, meta, a.out)
    print(f"fastgan: accuracy {acc:.4f} on {d.eval_desc}; weights in {a.out}", file=sys.stderr)
    return 0


def _info(a) -> int:
    from fastgan.data import DataError

    from fastgan.quality.classifier import ClassifierError, accuracy, load_classifier
    from fastgan.quality.classifier_data import classifier_data, data_digest
    try:
        model, meta = load_classifier("cpu", a.weights)
    except ClassifierError as e:
        return fail(str(e))
    for k in ("protocol", "trained_on", "evaluated_on", "eval_accuracy", "epochs", "seed",
              "torch", "date", "digest"):
        print(f"{k:>14}: {meta.get(k)}")
    try:
        d = classifier_data(a.data_dir)
    except DataError as e:
        print(f"(accuracy not re-measured: {e})")
        return 0
    same = data_digest(d.eval_x) == meta.get("eval_digest")
    acc = accuracy(model, d.eval_x, d.eval_y)
    print(f"{'measured now':>14}: {acc:.4f} on {d.eval_desc}"
          f"{'' if same else ' (NOT the data it was evaluated on when trained)'}")
    return 0
