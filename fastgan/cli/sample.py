"""`fastgan sample`: a grid of samples from a checkpoint."""
from __future__ import annotations

import argparse
import sys

from .errors import fail, fail_from

NAME = "sample"
HELP = "write a grid of samples from a checkpoint"


def add_parser(sub) -> argparse.ArgumentParser:
    s = sub.add_parser(NAME, help=HELP)
    s.add_argument("--checkpoint", required=True, help="run directory or checkpoint.pt")
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--out", default="samples.png")
    s.add_argument("--label", type=int, help="gancls: generate this class only")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device")
    s.add_argument("--bn", choices=("batch", "running"), default="batch",
                   help="BatchNorm statistics: the sample batch's (default) or the running ones")
    s.add_argument("--no-ema", dest="ema", action="store_false",
                   help="the raw generator, not the moving average (--ema runs keep both)")
    s.add_argument("--verbose", action="store_true",
                   help="with an error, also print the underlying library's own message")
    return s


def run(a) -> int:
    import torch

    from fastgan.engine import checkpoint as ckpt
    from fastgan.engine.config import UserError
    from fastgan.engine.validate import pick_device
    from fastgan.nn import uses_batch_statistics
    from fastgan.variants import labelled_variants
    from fastgan.variants.sampling import fixed_noise, generate
    from fastgan.viz import save_grid
    try:
        device = pick_device(a.device)
        state, v, nets = ckpt.load_networks(a.checkpoint, device, ema=a.ema)
        if a.label is not None:
            if not v.needs_labels:
                raise UserError(f"--label: variant {v.name!r} is not conditional (only "
                                f"{', '.join(labelled_variants())} takes a label)")
            if not 0 <= a.label <= 9:
                raise UserError(f"--label must be a class 0..9, not {a.label}")
        if a.n < 1:
            raise UserError(f"--n must be at least 1, not {a.n}")
        z, labels, nrow = fixed_noise(v, a.n, a.seed, device, a.label)
        if a.bn == "batch" and z.shape[0] < 2 and uses_batch_statistics(nets["G"]):
            raise UserError(f"--n {a.n}: {v.name}'s BatchNorm needs at least 2 samples for "
                            "batch statistics; use --n 2 or more, or --bn running")
    except (UserError, ckpt.CheckpointError) as e:
        return fail_from(e, a)
    with torch.no_grad():
        imgs = generate(v, nets, z, labels, bn=a.bn)
    try:
        save_grid(imgs, a.out, nrow)
    except OSError as e:
        return fail(f"cannot write {a.out!r} ({e.strerror}); pass --out PATH somewhere writable")
    print(f"fastgan: wrote {imgs.shape[0]} samples of {v.name} (step {state['step']}) to "
          f"{a.out}", file=sys.stderr)
    return 0
