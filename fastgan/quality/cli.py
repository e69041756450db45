"""`fastgan eval` and `fastgan classifier train | info`."""
from __future__ import annotations

import json
import sys
import time

import torch

from fastgan.cli import _fail, fail_from, missing_folder


# ------------------------------------------------------------------------------- eval

def add_eval_parser(sub) -> None:
    e = sub.add_parser("eval", help="FID-MNIST, conditional accuracy, confidence and mode "
                       "coverage of a checkpoint's generator (offline)")
    e.add_argument("--checkpoint", required=True, help="run directory or checkpoint.pt")
    e.add_argument("--n", type=int, default=10000, help="generated samples (default 10000)")
    e.add_argument("--seed", type=int, default=1234, help="noise seed of the samples")
    e.add_argument("--data-dir", help="where the run's data set is now (default: the run's)")
    e.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    e.add_argument("--json", help="also write the metrics to this JSON file")
    e.add_argument("--verbose", action="store_true",
                   help="with an error, also print the underlying library's own message")
    e.set_defaults(fn=cmd_eval)


def run_real_data(cfg: dict, data_dir=None):
    """The real images a run was trained on (uint8), from its saved config."""
    from fastgan.data import DataError, load_dataset
    from fastgan.engine.trainer import UserError
    try:
        return load_dataset(cfg.get("dataset") or "mnist", data_dir=data_dir or cfg.get("data_dir"),
                            split="train", image_size=cfg.get("image_size"),
                            channels=cfg.get("channels"), max_images=cfg.get("max_images"))
    except DataError as e:
        raise UserError(f"{e} (the run's real data is needed for FID; point --data-dir at it)"
                        ) from None


def cmd_eval(a) -> int:
    from fastgan.engine import checkpoint as ckpt
    from fastgan.engine.trainer import UserError, pick_device

    from .classifier import ClassifierError
    from .metrics import QualityError, evaluate_generator, format_metrics, real_stats
    try:
        if a.n < 10:
            raise UserError(f"--n must be at least 10, not {a.n}")
        if problem := missing_folder("--json", a.json):
            raise UserError(problem)      # before the evaluation, not after it
        device = pick_device(a.device)
        state, v, nets = ckpt.load_networks(a.checkpoint, device)
        data = run_real_data(state["config"], a.data_dir)
        t0 = time.perf_counter()
        real = real_stats(data.images, device)
        m = evaluate_generator(v, nets, real, n=a.n, seed=a.seed)
    except (UserError, ckpt.CheckpointError, ClassifierError, QualityError) as e:
        return fail_from(e, a)
    m.update(variant=v.name, step=int(state["step"]), data=data.source, real_n=real["n"],
             seconds=round(time.perf_counter() - t0, 2), device=str(device))
    print(f"{v.name} at step {m['step']} ({a.n} samples vs {real['n']} real images): "
          f"{format_metrics(m)}")
    print("class histogram: " + " ".join(f"{k}:{p:.3f}" for k, p in enumerate(m["class_hist"])))
    if a.json:
        try:
            with open(a.json, "w") as f:
                json.dump(m, f, indent=1)
        except OSError as e:
            return _fail(f"cannot write --json {a.json} ({e.strerror}); the metrics are printed "
                         "above")
    return 0


# ------------------------------------------------------------------------------- classifier

def add_classifier_parser(sub) -> None:
    c = sub.add_parser("classifier", help="the digit classifier behind the quality metrics: "
                       "train | info")
    csub = c.add_subparsers(dest="classifier_cmd", metavar="COMMAND")
    t = csub.add_parser("train", help="train it on the real MNIST digits found (reproducible)")
    t.add_argument("--data-dir", help="folder with the MNIST IDX files (default: $FASTGAN_DATA, "
                   "then the user cache)")
    t.add_argument("--epochs", type=int, default=15)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default="lenet_mnist.pt", help="weights file to write (the "
                   "packaged one is fastgan/quality/assets/lenet_mnist.pt)")
    t.set_defaults(fn=cmd_classifier_train)
    i = csub.add_parser("info", help="what the packaged classifier was trained and evaluated "
                        "on; with the data present, measure its accuracy again")
    i.add_argument("--weights", help="a weights file (default: the packaged one)")
    i.add_argument("--data-dir")
    i.set_defaults(fn=cmd_classifier_info)
    c.set_defaults(fn=lambda a: (c.print_help(), 2)[1])


def cmd_classifier_train(a) -> int:
    from fastgan.data import DataError

    from .classifier import (ClassifierTrainConfig, accuracy, round_trip, save_classifier,
                             train_classifier)
    from .classifier_data import classifier_data, data_digest
    if a.epochs < 1:
        return _fail(f"--epochs must be at least 1, not {a.epochs}")
    try:
        d = classifier_data(a.data_dir)
    except DataError as e:
        return _fail(str(e))
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


def cmd_classifier_info(a) -> int:
    from fastgan.data import DataError

    from .classifier import ClassifierError, accuracy, load_classifier
    from .classifier_data import classifier_data, data_digest
    try:
        model, meta = load_classifier("cpu", a.weights)
    except ClassifierError as e:
        return _fail(str(e))
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
