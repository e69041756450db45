"""`fastgan train | sample | eval | classifier | doctor | bench | data` — the command line.

Bad input ends with one line on stderr and exit code 2; a diverged run with exit code 3; Ctrl-C
(SIGINT) or SIGTERM saves a checkpoint and exits with 130 or 143; a data-parallel run (torchrun)
that stops because another rank failed exits with 4.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from fastgan.variants import DEFAULT_VARIANT, VARIANTS
    g = p.add_argument_group("what to train")
    g.add_argument("--variant", help=f"one of {', '.join(VARIANTS)} (default {DEFAULT_VARIANT}, "
                   "or the resumed run's)")
    g.add_argument("--dataset", help="mnist | fashion-mnist | demo | digits | folder:PATH "
                   "(default mnist)")
    g.add_argument("--data-dir", help="where the dataset files are (default: $FASTGAN_DATA, "
                   "then the user cache)")
    g.add_argument("--download", action="store_true", help="download the dataset if missing")
    g.add_argument("--max-images", type=int, help="use at most this many images")
    g.add_argument("--image-size", type=int, help="image size the networks make (dcgan)")
    g.add_argument("--channels", type=int, choices=(1, 3), help="1 gray, 3 RGB (default: data's)")
    g.add_argument("--ngf", type=int, help="dcgan: generator width")
    g.add_argument("--ndf", type=int, help="dcgan: discriminator width")
    g.add_argument("--kernel", type=int, choices=(4, 5), help="dcgan: 4 (PyTorch) or 5 (TF seed)")
    g.add_argument("--final", choices=("conv", "linear"), help="dcgan: D's last layer")
    g = p.add_argument_group("how long and how")
    g.add_argument("--batch-size", type=int, help="default: the seed's")
    g.add_argument("--steps", type=int, help="total iterations of the run (default 1000, or the "
                   "resumed run's)")
    g.add_argument("--epochs", type=float, help="passes over the data instead of --steps")
    g.add_argument("--d-steps", type=int, help="D updates per G update (default 1)")
    g.add_argument("--label-smoothing", type=float, help="real target = 1 - this (default 0)")
    g.add_argument("--lr-d", type=float, help="D learning rate (default: the seed's)")
    g.add_argument("--lr-g", type=float, help="G learning rate (default: the seed's)")
    g.add_argument("--seed", type=int, help="default 0, or the resumed run's")
    g = p.add_argument_group("where it runs")
    g.add_argument("--backend", choices=("auto", "reference", "triton", "cuda"),
                   help="ops implementation (default auto: see `fastgan doctor`)")
    g.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    g.add_argument("--precision", choices=("fp32", "bf16"), help="bf16 = autocast (default fp32)")
    g.add_argument("--no-tf32", dest="tf32", action="store_false",
                   help="keep fp32 matmuls/convs in full fp32 on the GPU")
    g.add_argument("--threads", type=int,
                   help="CPU threads (default: one per free core, following the load; OMP_NUM_THREADS also works)")
    g.add_argument("--data-on", choices=("auto", "device", "host"), default="auto",
                   help="keep the data set on the GPU (default when it fits in a quarter of "
                   "free GPU memory) or in pinned host memory")
    g.add_argument("--cuda-graphs", action="store_true",
                   help="capture the iteration in a CUDA graph and replay it (GPU only)")
    g.add_argument("--graph-unroll", type=int, default=1, help="iterations per captured graph")
    g = p.add_argument_group("several GPUs or nodes (under torchrun; --batch-size is the global "
                             "batch, split over the processes)")
    g.add_argument("--sync-bn", action="store_true",
                   help="BatchNorm statistics over all processes (default: per process)")
    g.add_argument("--dist-timeout", type=float, default=300.0,
                   help="seconds a collective waits for the other processes before the run "
                   "stops (default 300)")
    g = p.add_argument_group("outputs")
    g.add_argument("--out", help="run directory (default runs/<variant>)")
    g.add_argument("--resume", help="run directory (or checkpoint.pt) to continue from")
    g.add_argument("--overwrite", action="store_true",
                   help="start over in an --out that already holds another run's checkpoint "
                   "(refused without it, so no run is lost by mistake)")
    # No argparse defaults here: None means "not given", so --resume keeps the run's own.
    g.add_argument("--log-every", type=int, help="default 50")
    g.add_argument("--sample-every", type=int, help="0: only at the end (default 500)")
    g.add_argument("--checkpoint-every", type=int, help="0: only at the end (default 1000)")
    g.add_argument("--n-samples", type=int, help="default 64")
    g.add_argument("--eval-every", type=int, help="every N steps and at the end: "
                   "FID-MNIST, conditional accuracy, confidence, mode coverage (to eval.jsonl; "
                   "1-channel digits only; default 0: off)")
    g.add_argument("--eval-n", type=int, help="generated samples per evaluation (default 10000)")
    g.add_argument("--quiet", action="store_true")
    g.add_argument("--verbose", action="store_true",
                   help="with an error, also print the underlying library's own message")


def cmd_train(a) -> int:
    from fastgan.engine import Diverged, TrainConfig, UserError, train
    vopts = {k: getattr(a, k) for k in ("ngf", "ndf", "kernel", "final")
             if getattr(a, k) is not None}
    cfg = TrainConfig(
        variant=a.variant, dataset=a.dataset, data_dir=a.data_dir, download=a.download,
        max_images=a.max_images, batch_size=a.batch_size, steps=a.steps, epochs=a.epochs,
        backend=a.backend, device=a.device, seed=a.seed, out=a.out, resume=a.resume,
        overwrite=a.overwrite,
        data_on=a.data_on, cuda_graphs=a.cuda_graphs, graph_unroll=a.graph_unroll, precision=a.precision,
        tf32=a.tf32, d_steps=a.d_steps, label_smoothing=a.label_smoothing, lr_d=a.lr_d,
        lr_g=a.lr_g, image_size=a.image_size, channels=a.channels, variant_options=vopts,
        log_every=a.log_every, sample_every=a.sample_every,
        checkpoint_every=a.checkpoint_every, n_samples=a.n_samples,
        eval_every=a.eval_every, eval_n=a.eval_n, quiet=a.quiet,
        sync_bn=a.sync_bn, dist_timeout=a.dist_timeout)
    from fastgan.threads import choose_threads
    cfg.threads, cfg.threads_reason, cfg.threads_adapt = choose_threads(a.threads)
    from fastgan.engine import distributed as ddp
    rank = (ddp.env_world() or {}).get("rank", 0)
    try:
        res = train(cfg)
    except KeyboardInterrupt:   # Ctrl-C before the loop's handler is in place: nothing to save
        print("fastgan: interrupted while starting; nothing was trained"
              + (f" (the checkpoint in {cfg.out or cfg.resume} is unchanged)" if a.resume
                 else ""), file=sys.stderr)
        return 130
    except UserError as e:
        return _fail(str(e) if rank == 0 else f"[rank {rank}] {e}", e.detail, a.verbose)
    except ddp.RankFailure as e:
        if not e.quiet:
            print(f"fastgan: error: {e}", file=sys.stderr, flush=True)
        return ddp.EXIT_RANK_FAILURE
    except Diverged as e:
        if rank == 0:
            print(f"fastgan: error: {e}", file=sys.stderr)
        return 3
    code = 143 if res.get("signal") == "SIGTERM" else 130
    if rank != 0:   # data-parallel: rank 0 reports
        return code if res["interrupted"] else 0
    if res["interrupted"]:
        how = "stopped by SIGTERM" if code == 143 else "interrupted"
        print(f"fastgan: {how}; checkpoint at step {res['step']} saved in {res['out']} "
              f"(continue with --resume {res['out']})", file=sys.stderr)
        return code
    if res["start_step"] >= res["total"]:
        print(f"fastgan: nothing to train: the run in {res['out']} is already at step "
              f"{res['start_step']}, and --steps/--epochs give {res['total']} steps in all (the "
              f"run's total, not further steps); pass --steps N above {res['start_step']} to "
              "continue", file=sys.stderr)
        return 0
    print(f"fastgan: done at step {res['step']}; samples, metrics and checkpoint in "
          f"{res['out']}", file=sys.stderr)
    return 0


def cmd_sample(a) -> int:
    import torch

    from fastgan.engine import checkpoint as ckpt
    from fastgan.engine.sampling import fixed_noise, generate
    from fastgan.engine.trainer import UserError, pick_device
    from fastgan.nn.layers import uses_batch_statistics
    from fastgan.viz import save_grid
    try:
        device = pick_device(a.device)
        state, v, nets = ckpt.load_networks(a.checkpoint, device)
        if a.label is not None:
            if not v.needs_labels:
                raise UserError(f"--label: variant {v.name!r} is not conditional (only gancls "
                                "takes a label)")
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
        return _fail(f"cannot write {a.out!r} ({e.strerror}); pass --out PATH somewhere writable")
    print(f"fastgan: wrote {imgs.shape[0]} samples of {v.name} (step {state['step']}) to "
          f"{a.out}", file=sys.stderr)
    return 0


def cmd_doctor(a) -> int:
    from fastgan.doctor import report
    print(report())
    return 0


def cmd_bench(a) -> int:
    from fastgan.bench_cli import main as bench_main
    return bench_main(a)


def missing_folder(opt: str, path: Optional[str]) -> Optional[str]:
    """The error for an output file whose folder does not exist (checked before the work that
    would end in writing it), or None."""
    import os
    if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        return f"{opt} {path}: its folder does not exist; create it or pass another path"
    return None


def _fail(msg: str, detail: Optional[str] = None, verbose: bool = False) -> int:
    """One line; the underlying library's own text (e.g. PyTorch's zip errors) only with
    --verbose, on a second line."""
    print(f"fastgan: error: {msg}", file=sys.stderr)
    if verbose and detail:
        print(f"fastgan: detail: {' '.join(str(detail).split())}", file=sys.stderr)
    return 2


def fail_from(e: BaseException, a) -> int:
    return _fail(str(e), getattr(e, "detail", None), bool(getattr(a, "verbose", False)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastgan", description="Train GANs fast on NVIDIA GPUs.")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    t = sub.add_parser("train", help="train a variant")
    _add_train_args(t)
    t.set_defaults(fn=cmd_train)

    s = sub.add_parser("sample", help="write a grid of samples from a checkpoint")
    s.add_argument("--checkpoint", required=True, help="run directory or checkpoint.pt")
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--out", default="samples.png")
    s.add_argument("--label", type=int, help="gancls: generate this class only")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device")
    s.add_argument("--bn", choices=("batch", "running"), default="batch",
                   help="BatchNorm statistics: the sample batch's (default) or the running ones")
    s.add_argument("--verbose", action="store_true",
                   help="with an error, also print the underlying library's own message")
    s.set_defaults(fn=cmd_sample)

    from fastgan.quality.cli import add_classifier_parser, add_eval_parser
    add_eval_parser(sub)
    add_classifier_parser(sub)

    d = sub.add_parser("doctor", help="what is installed and which backend auto picks")
    d.set_defaults(fn=cmd_doctor)

    b = sub.add_parser("bench", help="iterations/s of fastgan vs eager PyTorch and torch.compile")
    b.add_argument("--variant", action="append", help="repeatable; default all")
    b.add_argument("--quick", action="store_true", help="fewer sizes and repetitions")
    b.add_argument("--batch-size", type=int, action="append")
    b.add_argument("--device")
    b.add_argument("--json", help="write results to this JSON file")
    b.add_argument("--md", help="write the table to this markdown file")
    b.add_argument("--paths", help="comma-separated subset of paths to run")
    b.add_argument("--gpu-check", action="store_true",
                   help="the quick matrix in make gpu-check's order (seed batches, then the "
                        "compiled rivals, then dcgan's precisions, then the rest)")
    b.add_argument("--jsonl", help="append each row to this JSON-lines file as it is measured")
    b.set_defaults(fn=cmd_bench)

    sub.add_parser("data", help="dataset utilities: download, info, where (fastgan data -h)",
                   add_help=False)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["data"]:   # the data layer owns its sub-commands
        from fastgan.data.cli import main as data_main
        return data_main(argv[1:])
    try:
        p = build_parser()
        a = p.parse_args(argv)
        if not getattr(a, "fn", None):
            p.print_help()
            return 2
        return a.fn(a)
    except KeyboardInterrupt:   # Ctrl-C while importing or loading: one line, not a traceback
        print("fastgan: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
