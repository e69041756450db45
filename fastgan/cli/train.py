"""`fastgan train`: the options of a run, and how it ends (messages and exit codes)."""
from __future__ import annotations

import argparse
import sys

from fastgan import backends

from .errors import OneLineParser, fail

NAME = "train"
HELP = "train a variant"

_UNSET = object()


class _Parser(OneLineParser):
    """Also records the options the command line gave (``a.given``, argparse dests): --config's
    values yield to those only, never to argparse defaults."""

    def parse_known_args(self, args=None, namespace=None):
        a, rest = super().parse_known_args(args, namespace)
        # Parsed again into a namespace that already holds every dest: argparse then sets no
        # default, only what was typed.
        probe = argparse.Namespace(**{x.dest: _UNSET for x in self._actions
                                      if x.dest != argparse.SUPPRESS})
        super().parse_known_args(args, probe)
        a.given = {k for k, v in vars(probe).items() if v is not _UNSET}
        return a, rest


def add_parser(sub) -> argparse.ArgumentParser:
    from fastgan.variants import DEFAULT_VARIANT, VARIANTS, cli_options
    p = sub.add_parser(NAME, help=HELP)
    p.__class__ = _Parser     # subparsers build plain ArgumentParsers
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
    for o in cli_options():   # the variants' own flags (e.g. dcgan's widths)
        g.add_argument(o.flag, dest=o.key, type=o.type, choices=o.choices, help=o.help)
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
    g = p.add_argument_group("training options (inside the captured iteration; resumed with "
                             "the run unless given again)")
    g.add_argument("--ema", type=float, metavar="HALF_LIFE_IMG",
                   help="keep an exponential moving average of G (half-life in images, e.g. "
                   "10000; or a decay in (0, 1)); samples and evaluations use it")
    g.add_argument("--augment", metavar="POLICY",
                   help="DiffAugment on real and fake images before D: a comma list of "
                   "translation, cutout, color")
    g.add_argument("--r1", type=float, metavar="GAMMA",
                   help="R1 penalty gamma on real images (default 0: off)")
    g.add_argument("--r1-every", type=int, metavar="K",
                   help="lazy R1: every K D steps, weighted by K (default 16)")
    g.add_argument("--loss", choices=("default", "hinge"),
                   help="default: the variant's own (BCE or LSGAN); hinge for D and G")
    g.add_argument("--spectral-norm", action="store_true", default=None,
                   help="spectral normalisation of D's weights")
    g = p.add_argument_group("where it runs")
    g.add_argument("--backend", choices=("auto",) + backends.names(),
                   help="ops implementation (default auto: per device and path, graph or eager; "
                   "see `fastgan doctor`)")
    g.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    g.add_argument("--precision", choices=("fp32", "bf16"), help="bf16 = autocast (default fp32)")
    g.add_argument("--memory-format", choices=("auto", "nchw", "channels_last"),
                   help="image layout of the convolutional variants: channels_last (NHWC) runs "
                   "every conv, BN and activation in NHWC (default auto: channels_last on CUDA, "
                   "nchw on CPU, or the resumed run's)")
    g.add_argument("--no-tf32", dest="tf32", action="store_false",
                   help="keep fp32 matmuls/convs in full fp32 on the GPU")
    g.add_argument("--threads", type=int,
                   help="CPU threads (default: one per free core, following the load; OMP_NUM_THREADS also works)")
    g.add_argument("--data-on", choices=("auto", "device", "host"), default="auto",
                   help="keep the data set on the GPU (default when it fits in a quarter of "
                   "free GPU memory) or in pinned host memory")
    g.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None,
                   help="capture the iteration in a CUDA graph and replay it: the default on a "
                   "CUDA device, eager where it cannot apply (with a line saying why); "
                   "--cuda-graphs insists (an error on a CPU), --no-cuda-graphs trains eagerly")
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
    g.add_argument("--config", metavar="FILE",
                   help="start a new run with the settings of a saved config.json (options "
                   "given here override it; not with --resume)")
    g.add_argument("--overwrite", action="store_true",
                   help="start over in an --out that already holds another run's checkpoint "
                   "(refused without it, so no run is lost by mistake)")
    # No argparse defaults here: None means "not given", so --resume keeps the run's own.
    g.add_argument("--log-every", type=int, help="default 50")
    g.add_argument("--sample-every", type=int, help="0: only at the end (default 500)")
    g.add_argument("--checkpoint-every", type=int, help="0: only at the end (default 1000)")
    g.add_argument("--n-samples", type=int, help="default 64")
    g.add_argument("--eval-every", type=int, help="every N steps and at the end: "
                   "FID-MNIST, KID, precision/recall, conditional accuracy, confidence, mode "
                   "coverage (1-channel images), standard FID/KID with --inception-weights (to "
                   "eval.jsonl; default 0: off)")
    g.add_argument("--inception-weights", metavar="FILE",
                   help="InceptionV3 weights (pt_inception-2015-12-05-6726825d.pth) for standard "
                   "FID, KID and precision/recall in the evaluations, gray or colour images "
                   "(default: $FASTGAN_INCEPTION_WEIGHTS; needs fastgan[fid])")
    g.add_argument("--eval-n", type=int, help="generated samples per evaluation (default 10000)")
    g.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                   help="also write the log steps, evaluations and sample grids as TensorBoard "
                   "events in <out>/tensorboard/ (needs pip install tensorboard)")
    g.add_argument("--quiet", action="store_true")
    g.add_argument("--verbose", action="store_true",
                   help="with an error, also print the underlying library's own message")
    return p


def _apply_config_file(cfg, a) -> None:
    """--config FILE: the file's settings where the command line gave none."""
    from fastgan.engine import UserError
    from fastgan.engine.config import load_config_file
    if a.resume is not None:
        raise UserError("--config starts a new run from a saved run's settings and --resume "
                        "continues a run with its own; use one of them")
    given = set(getattr(a, "given", ()))
    if given & {"steps", "epochs"}:    # one setting, the run's total: either typed replaces it
        given |= {"steps", "epochs"}
    for k, v in load_config_file(a.config).items():
        if k == "variant_options":    # per key: a variant flag typed here wins
            cfg.variant_options = {**v, **cfg.variant_options}
        elif k not in given:
            setattr(cfg, k, v)


def run(a) -> int:
    from fastgan.engine import Diverged, TrainConfig, UserError, train
    from fastgan.variants import cli_options
    vopts = {o.key: getattr(a, o.key) for o in cli_options() if getattr(a, o.key) is not None}
    cfg = TrainConfig(
        variant=a.variant, dataset=a.dataset, data_dir=a.data_dir, download=a.download,
        max_images=a.max_images, batch_size=a.batch_size, steps=a.steps, epochs=a.epochs,
        backend=a.backend, device=a.device, seed=a.seed, out=a.out, resume=a.resume,
        overwrite=a.overwrite,
        data_on=a.data_on, cuda_graphs=a.cuda_graphs, graph_unroll=a.graph_unroll, precision=a.precision,
        memory_format=a.memory_format,
        tf32=a.tf32, d_steps=a.d_steps, label_smoothing=a.label_smoothing, lr_d=a.lr_d,
        lr_g=a.lr_g, image_size=a.image_size, channels=a.channels, variant_options=vopts,
        log_every=a.log_every, sample_every=a.sample_every,
        checkpoint_every=a.checkpoint_every, n_samples=a.n_samples,
        eval_every=a.eval_every, eval_n=a.eval_n, quiet=a.quiet,
        sync_bn=a.sync_bn, dist_timeout=a.dist_timeout,
        ema=a.ema, augment=a.augment, r1=a.r1, r1_every=a.r1_every, loss=a.loss,
        spectral_norm=a.spectral_norm, tensorboard=a.tensorboard,
        inception_weights=a.inception_weights)
    if a.config is not None:
        try:
            _apply_config_file(cfg, a)
        except UserError as e:
            return fail(str(e))
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
        return fail(str(e) if rank == 0 else f"[rank {rank}] {e}", e.detail, a.verbose)
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
