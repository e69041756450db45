"""A training run's settings: the config, what a resumed run takes from its checkpoint, the
defaults, and the two errors a run ends with (bad input, divergence)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from fastgan.variants import DEFAULT_VARIANT

from .distributed import DEFAULT_TIMEOUT_S


# Settings a resumed run takes from its checkpoint unless given again (None: not given). The
# others (--device, --data-on, --cuda-graphs/--no-cuda-graphs, --graph-unroll, --no-tf32,
# --sync-bn, --dist-timeout, --quiet) say where and how this process runs, and come from its
# command line: a run captured in a CUDA graph resumes eagerly on a CPU, and the reverse.
RESUMED_FIELDS = ("variant", "dataset", "data_dir", "image_size", "channels", "variant_options",
                  "batch_size", "seed", "precision", "backend", "d_steps", "label_smoothing",
                  "lr_d", "lr_g", "max_images", "steps", "epochs", "log_every", "sample_every",
                  "checkpoint_every", "n_samples", "eval_every", "eval_n", "memory_format")
# Of those, the ones a resumed run cannot change: its random streams continue from the
# checkpoint (seed), its batches are drawn from its data set at its batch size. (The variant and
# the architecture are checked against the checkpoint itself.)
FIXED_ON_RESUME = {
    "batch_size": "the optimizer state and the batch stream belong to that batch size",
    "seed": "the random streams continue from the checkpoint, so a new seed cannot take effect",
    "dataset": "the batches are drawn from the run's data set",
    "max_images": "the batches are drawn from the run's images",
}
# Defaults of the settings that are None until resolved (None: the resumed run's value, if any).
DEFAULTS = {"variant": DEFAULT_VARIANT, "dataset": "mnist", "backend": "auto",
            "precision": "fp32", "seed": 0, "log_every": 50, "sample_every": 500,
            "checkpoint_every": 1000, "n_samples": 64, "eval_every": 0, "eval_n": 10000,
            "memory_format": "auto"}
HYPER_FIELDS = ("batch_size", "d_steps", "label_smoothing", "lr_d", "lr_g")

# ---- training options (issue 22: --ema, --augment, --r1, --r1-every, --loss, --spectral-norm):
# resumed from the checkpoint unless given again; spectral norm changes D's tensors, so it
# cannot change on resume. (--ema has no default: None is off.)
TRAIN_OPTION_FIELDS = ("ema", "augment", "r1", "r1_every", "loss", "spectral_norm")
RESUMED_FIELDS = RESUMED_FIELDS + TRAIN_OPTION_FIELDS
FIXED_ON_RESUME["spectral_norm"] = ("it reparametrises D's weights, whose saved tensors are "
                                    "those of the run")
DEFAULTS.update({"augment": "", "r1": 0.0, "r1_every": 16, "loss": "default",
                 "spectral_norm": False})
# ---- end of the training options

# ---- --tensorboard, --inception-weights (issue 23): outputs like the log cadence, resumed with
# the run
RESUMED_FIELDS = RESUMED_FIELDS + ("tensorboard", "inception_weights")
DEFAULTS["tensorboard"] = False
# ---- end of --tensorboard


def _opt(k: str) -> str:
    return "--" + k.replace("_", "-")


class UserError(Exception):
    """Bad input: the CLI prints the message as one line and exits with code 2 (``detail``:
    the underlying library's text, printed with --verbose)."""

    def __init__(self, msg: str, detail: Optional[str] = None):
        super().__init__(msg)
        self.detail = detail


def check_tensorboard() -> None:
    """--tensorboard (issue 23) needs the tensorboard package (torch.utils.tensorboard imports
    it): one line before anything is written."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard "
                        "(or pip install fastgan[tensorboard]), or drop --tensorboard") from None


class Diverged(Exception):
    """A NaN or inf loss: the run stops and the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    variant: Optional[str] = None        # None: the resumed run's, else DEFAULT_VARIANT
    dataset: Optional[str] = None        # None: the resumed run's, else "mnist"
    data_dir: Optional[str] = None
    download: bool = False
    max_images: Optional[int] = None
    batch_size: Optional[int] = None
    steps: Optional[int] = None
    epochs: Optional[float] = None
    backend: Optional[str] = None        # None: the resumed run's, else "auto"
    device: Optional[str] = None          # None: cuda when available, else cpu
    seed: Optional[int] = None            # None: the resumed run's, else 0
    out: Optional[str] = None
    resume: Optional[str] = None
    overwrite: bool = False              # start over in an ``out`` that holds another run
    data_on: str = "auto"                # "device", "host" (pinned, double-buffered) or "auto"
    # True: --cuda-graphs (an error where it cannot apply), False: --no-cuda-graphs, None: the
    # default, the graph on a CUDA device where it can apply (validate.choose_graphs).
    cuda_graphs: Optional[bool] = None
    graph_unroll: int = 1
    graph_warmup: int = 3
    precision: Optional[str] = None      # None: the resumed run's, else "fp32"
    # --memory-format: "auto", "nchw" or "channels_last" (None: the resumed run's, else auto);
    # validate.choose_memory_format resolves auto per device.
    memory_format: Optional[str] = None
    tf32: bool = True
    d_steps: Optional[int] = None
    label_smoothing: Optional[float] = None
    lr_d: Optional[float] = None
    lr_g: Optional[float] = None
    image_size: Optional[int] = None
    channels: Optional[int] = None
    variant_options: Dict[str, Any] = field(default_factory=dict)  # e.g. dcgan ngf/kernel
    # None: the resumed run's, else DEFAULTS (50, 500, 1000, 64, 0, 10000)
    log_every: Optional[int] = None
    sample_every: Optional[int] = None
    checkpoint_every: Optional[int] = None
    n_samples: Optional[int] = None
    eval_every: Optional[int] = None     # FID-MNIST etc. every N steps and at the end (0: off)
    eval_n: Optional[int] = None         # generated samples per evaluation
    quiet: bool = False
    # CPU threads for tensor work (None: torch's current setting). The CLI passes its choice
    # (fastgan/threads.py: one per free core, or --threads) and the reason, for the start-up line.
    threads: Optional[int] = None
    threads_reason: Optional[str] = None
    threads_adapt: bool = False     # follow the free cores while training (fastgan.threads)
    # Data-parallel (torchrun): synchronized BatchNorm, and the collectives' timeout in seconds.
    sync_bn: bool = False
    dist_timeout: float = DEFAULT_TIMEOUT_S
    # ---- training options (None: the resumed run's, else DEFAULTS; --ema None: off)
    ema: Optional[float] = None           # G's EMA: a half-life in images (>= 1) or a decay
    augment: Optional[str] = None         # DiffAugment policy, e.g. "translation,cutout,color"
    r1: Optional[float] = None            # R1 gamma (0: off)
    r1_every: Optional[int] = None        # lazy R1: every K D steps
    loss: Optional[str] = None            # "default" (the variant's) or "hinge"
    spectral_norm: Optional[bool] = None  # spectral normalisation of D's weights
    # --tensorboard (issue 23): the log steps as TensorBoard events (None: the resumed run's,
    # else off)
    tensorboard: Optional[bool] = None
    # InceptionV3 weights for standard FID/KID in the evaluations (None: the resumed run's, else
    # $FASTGAN_INCEPTION_WEIGHTS, else none)
    inception_weights: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def merge_resumed(cfg: TrainConfig, state: Dict[str, Any]) -> List[str]:
    """Fill every resumed setting not given (None) from the checkpoint's config; refuse a given
    one that cannot change; return "name old -> new" for each given one that changes."""
    saved, hyper = state.get("config") or {}, state.get("hyper") or {}
    where = cfg.resume

    def old_value(k):
        if k in HYPER_FIELDS and hyper.get(k) is not None:
            return hyper[k]                       # the value the run really used
        v = saved.get(k)
        return DEFAULTS.get(k) if v is None else v

    given = {k for k in RESUMED_FIELDS if getattr(cfg, k) not in (None, {})}
    changes = []
    for k in sorted(given):
        if k in ("variant", "image_size", "channels", "variant_options"):
            continue          # checked against the checkpoint's own variant and networks
        new, old = getattr(cfg, k), old_value(k)
        same = (float(new) == float(old) if isinstance(new, (int, float))
                and isinstance(old, (int, float)) and not isinstance(new, bool) else new == old)
        if same:
            continue
        moved = k == "dataset" and f"{old}{new}".count("folder:") == 2   # the data moved
        if k in FIXED_ON_RESUME and not moved:
            raise UserError(f"{_opt(k)} {new}: the run in {where!r} was trained with "
                            f"{_opt(k)} {old}, and it cannot change on resume "
                            f"({FIXED_ON_RESUME[k]}); drop {_opt(k)}, or start a new run with "
                            "another --out")
        if k not in ("steps", "epochs"):        # the total is said in the progress line
            changes.append(f"{_opt(k)} {old} -> {new}")
    # --steps and --epochs are one setting: either given replaces the saved total.
    skip = {"steps", "epochs"} if given & {"steps", "epochs"} else set()
    for k in RESUMED_FIELDS:
        if k not in given and k not in skip and saved.get(k) not in (None, {}):
            setattr(cfg, k, saved[k])
    return changes


# ---- --config FILE (issue 23): a new run from a saved run's config.json ----------------------
# Not taken from the file: the old run's directory and how it was started (a new run needs its
# own --out, and --overwrite never carries over, so no run is lost by mistake), and what this
# machine and command decide (--device: the file holds the one the run resolved, e.g. cuda:0; the
# threads; --quiet, which has no off switch to type).
CONFIG_FILE_SKIPPED = ("out", "resume", "overwrite", "download", "device", "threads",
                       "threads_reason", "threads_adapt", "quiet")
# What the run recorded beside its settings (engine/loop/metrics.announce): read, not used.
CONFIG_FILE_RECORDS = ("resolved_backend", "dataset_source", "world_size", "hyper")


def _type_ok(value: Any, hint: Any) -> bool:
    import typing
    if hint is Any:
        return True
    if typing.get_origin(hint) is typing.Union:
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:      # JSON writes 300.0 as 300.0, a person may write 300
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if typing.get_origin(hint) in (dict, Dict):
        return isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, (bool, int, float, str))
            for k, v in value.items())
    return False


def _type_name(hint: Any) -> str:
    import typing
    if typing.get_origin(hint) in (dict, Dict):
        return "an object of numbers, strings or booleans"
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    name = getattr(args[0] if args else hint, "__name__", str(hint))
    return {"str": "a string", "int": "an integer", "float": "a number",
            "bool": "true or false"}.get(name.lower(), name)


def load_config_file(path: str) -> Dict[str, Any]:
    """The settings of a saved config.json (plain JSON: nothing in it runs), by TrainConfig
    field, without CONFIG_FILE_SKIPPED; a UserError for a file that cannot be read or parsed, an
    unknown key or a value of the wrong type."""
    import json
    import typing
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise UserError(f"--config {path}: cannot read it ({e.strerror}); pass the "
                        "config.json of a run directory") from None
    except UnicodeDecodeError:
        raise UserError(f"--config {path}: not a text file; pass the config.json of a run "
                        "directory") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise UserError(f"--config {path}: not valid JSON ({e}); pass the config.json of a "
                        "run directory") from None
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a JSON object of settings, not "
                        f"{type(data).__name__}")
    hints = typing.get_type_hints(TrainConfig)
    unknown = sorted(k for k in data if k not in hints and k not in CONFIG_FILE_RECORDS)
    if unknown:
        raise UserError(f"--config {path}: unknown setting(s) {', '.join(map(repr, unknown))}; "
                        f"the settings are those of fastgan train ({', '.join(sorted(hints))})")
    for k, v in data.items():
        if k in hints and not _type_ok(v, hints[k]):
            raise UserError(f"--config {path}: {k!r} must be {_type_name(hints[k])}"
                            f"{' or null' if _type_ok(None, hints[k]) else ''}, not "
                            f"{json.dumps(v)}")
    return {k: v for k, v in data.items() if k in hints and k not in CONFIG_FILE_SKIPPED}
# ---- end of --config
