"""Checkpoints: everything a run needs to continue bit for bit, written atomically.

A checkpoint is one file ``checkpoint.pt`` in the run directory: the networks, both optimizers,
the step, every RNG state (the engine's device generator, torch's CPU and CUDA generators), the
variant's hyperparameters and architecture signature, and the run config. It is written to a
temporary file in the same directory, flushed to disk, then renamed over the old one, so a crash
or Ctrl-C at any moment leaves either the old or the new checkpoint, never half of one.

A checkpoint is data, never code: it is loaded with ``torch.load(weights_only=True)``, which
refuses any pickled object other than tensors and plain containers, so a crafted file cannot run
anything. Before that its zip CRCs are checked (``zipfile.testzip``: about 0.02 s per 100 MB once
the file is in the page cache), so flipped bytes anywhere in the tensor data are refused instead
of loading as garbage.
"""
from __future__ import annotations

import dataclasses
import errno
import os
import re
import shutil
import socket
import zipfile
from typing import Any, Dict, Optional, Tuple

import torch

import fastgan

from .train_options import spectral_norm_nets  # noqa: F401 (used by load_networks; re-exported)

CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(ValueError):
    """One line for the user; ``detail`` (PyTorch's or zipfile's own text) for --verbose."""

    def __init__(self, msg: str, detail: Optional[str] = None):
        super().__init__(msg)
        self.detail = detail


class SaveError(CheckpointError):
    """A checkpoint (or another run file) could not be written: disk full, read-only, ..."""


def arch_signature(nets: Dict[str, torch.nn.Module]) -> Dict[str, list]:
    """Names and shapes of every parameter and buffer: two runs agree on this iff their
    checkpoints are interchangeable."""
    return {role: [(k, list(v.shape)) for k, v in net.state_dict().items()]
            for role, net in nets.items()}


def temp_name(path: str) -> str:
    """The temporary file a save writes first: named after this host and process, so a later
    start can tell a dead process's leftover (removed) from a running save (kept)."""
    d, base = os.path.split(os.path.abspath(path))
    return os.path.join(d, f".{base}.tmp-{socket.gethostname()}-{os.getpid()}")


_TEMP = re.compile(r"^\.(?P<base>.+)\.tmp-(?:(?P<host>.+)-)?(?P<pid>\d+)$")


def remove_stale_temps(d: str, own: bool = False) -> list:
    """Remove the temporary files of saves whose process is gone (SIGKILL, power loss): each can
    be as large as a checkpoint. Files of other hosts, or of live processes, are kept. ``own``:
    this process's only (it is about to exit in the middle of a save)."""
    removed = []
    try:
        names = os.listdir(d)
    except OSError:
        return removed
    me = socket.gethostname()
    for name in names:
        m = _TEMP.match(name)
        if not m or (m.group("host") not in (None, me)):
            continue
        mine = int(m.group("pid")) == os.getpid()
        if not (mine if own else mine or not _pid_alive(int(m.group("pid")))):
            continue
        try:
            os.unlink(os.path.join(d, name))
            removed.append(name)
        except OSError:
            pass
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:       # EPERM: alive, someone else's
        return True
    return True


class _RecordingFile:
    """A file object that remembers the first OSError of a write: torch.save turns it into a
    RuntimeError ("inline_container.cc ... unexpected pos"), which says nothing about why."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, b):
        try:
            return self.f.write(b)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self):
        return self.f.flush()


def _open_for_write(path: str):
    return open(path, "wb")


def _nbytes(obj) -> int:
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def _mb(n: float) -> str:
    if n < 1e5:
        return f"{max(n, 1e3) / 1e3:.0f} kB"
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def atomic_save(obj: Any, path: str) -> None:
    """Write ``obj`` to ``path`` through a temporary file, fsync and rename. Raises SaveError
    (one line naming the folder and, when the disk is full, the space needed); the previous
    file at ``path`` is untouched and no temporary file is left."""
    d = os.path.dirname(os.path.abspath(path))
    tmp = temp_name(path)
    rec = None
    try:
        os.makedirs(d, exist_ok=True)
        with _open_for_write(tmp) as f:
            rec = _RecordingFile(f)
            torch.save(obj, rec)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        cause = (rec.error if rec is not None and rec.error is not None else e)
        if not isinstance(cause, OSError):
            raise                       # not a file-system problem: a bug, show it
        raise _save_error(path, d, cause, _nbytes(obj)) from None
    finally:
        if os.path.exists(tmp):
            try:
                os.unlink(tmp)
            except OSError:
                pass
    try:  # make the rename itself durable
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _save_error(path: str, d: str, e: OSError, need: int) -> SaveError:
    what = os.path.basename(path)
    keep = (f"the previous {what} is intact" if os.path.isfile(path) else
            f"no earlier {what} exists")
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = shutil.disk_usage(d).free
        except OSError:
            free = 0
        return SaveError(f"cannot save {what} in {d}: the disk is full (it needs about "
                         f"{_mb(need)} free, {_mb(free)} are); free space there and resume "
                         f"with --resume {d}; {keep}", detail=repr(e))
    why = e.strerror or str(e)
    return SaveError(f"cannot save {what} in {d} ({why}); make the folder writable and resume "
                     f"with --resume {d}; {keep}", detail=repr(e))


def _opt_state(opt: torch.optim.Optimizer) -> dict:
    sd = opt.state_dict()
    # lr may be a device tensor (capturable Adam): store plain floats, portable across devices.
    for g in sd["param_groups"]:
        if torch.is_tensor(g["lr"]):
            g["lr"] = float(g["lr"])
    return sd


def training_state(engine, step: int) -> Dict[str, Any]:
    """What ``restore_into`` loads: networks, optimizers, step and random streams (a checkpoint
    adds its format, version, hyper-parameters and config)."""
    return {
        "variant": engine.variant.name,
        "arch": arch_signature(engine.nets),
        "nets": {role: net.state_dict() for role, net in engine.nets.items()},
        "opt_d": _opt_state(engine.opt_d),
        "opt_g": _opt_state(engine.opt_g),
        "step": step,
        "memory_format": engine.opts.memory_format,
        "rng": {
            "engine": engine.rng_state(),
            "engine_device": engine.device.type,
            "torch_cpu": torch.get_rng_state(),
            "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        },
        # G's moving average (--ema): its weights and buffers, restored bit for bit
        **({"ema": engine.ema.state_dict()} if getattr(engine, "ema", None) is not None else {}),
    }


def save_checkpoint(run_dir: str, engine, step: int, config: Dict[str, Any]) -> str:
    state = {"format": 1, "fastgan_version": fastgan.__version__,
             "hyper": dataclasses.asdict(engine.variant.hyper),
             **training_state(engine, step), "config": config}
    path = os.path.join(run_dir, CHECKPOINT_NAME)
    atomic_save(state, path)
    return path


def checkpoint_path(path: str) -> str:
    """Accept a run directory or the checkpoint file itself."""
    p = os.path.join(path, CHECKPOINT_NAME) if os.path.isdir(path) else path
    if not os.path.isfile(p):
        raise CheckpointError(f"no checkpoint at {path!r} (expected a run directory holding "
                              f"{CHECKPOINT_NAME}); check the path given to --resume/--checkpoint")
    return p


def verify(p: str) -> None:
    """Refuse a file that is not an intact zip archive: every member's CRC is checked, so a
    truncated file or flipped bytes in the tensor data are found before anything is loaded."""
    what = ("restore it from a copy, or start a new run (--overwrite, or another --out)")
    try:
        with zipfile.ZipFile(p) as z:
            bad = z.testzip()
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"{p} is not a fastgan checkpoint, or it is truncated or corrupt "
                              f"(not a readable zip archive); {what}", detail=str(e)) from None
    except OSError as e:
        raise CheckpointError(f"{p} cannot be read ({e.strerror or e}); check the file and its "
                              "permissions", detail=repr(e)) from None
    except Exception as e:   # zipfile raises assorted errors on mangled headers
        raise CheckpointError(f"{p} is damaged (its zip structure is invalid: the file changed "
                              f"after it was written); {what}",
                              detail=f"{type(e).__name__}: {e}") from None
    if bad is not None:
        raise CheckpointError(f"{p} is damaged: the data of {bad!r} fails its CRC check (the "
                              f"file changed after it was written); {what}",
                              detail=f"zipfile.testzip: bad CRC in {bad}")


def load_checkpoint(path: str) -> Dict[str, Any]:
    p = checkpoint_path(path)
    verify(p)
    try:
        # weights_only: tensors and plain containers only; a pickled callable is refused
        # before it can run (fastgan's own checkpoints hold nothing else).
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        unsafe = "weights_only" in str(e) or "Unsupported global" in str(e)
        raise CheckpointError(
            f"{p} is not a fastgan checkpoint: " + (
                "it holds Python objects that a checkpoint never holds (refused, nothing in it "
                "was run)" if unsafe else "PyTorch cannot read it, it is corrupt") +
            "; pass a run directory written by `fastgan train`",
            detail=f"{type(e).__name__}: {e}") from None
    if not isinstance(state, dict) or state.get("format") != 1 or "variant" not in state:
        raise CheckpointError(f"{p} is not a fastgan checkpoint (no fastgan format marker); "
                              "pass a run directory written by `fastgan train`")
    return state


def peek_step(path: str) -> Optional[int]:
    """The step of the checkpoint really on disk at ``path`` (a run directory), or None when
    there is none or it cannot be read: what a failure message may promise."""
    try:
        return int(load_checkpoint(path)["step"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        return None


def check_compatible(state: Dict[str, Any], variant_name: str, nets) -> None:
    if state["variant"] != variant_name:
        raise CheckpointError(
            f"the checkpoint is of variant {state['variant']!r}, not {variant_name!r}; "
            f"use --variant {state['variant']} (or start a new run without --resume)")
    mine = arch_signature(nets)
    if _norm(state["arch"]) != _norm(mine):
        raise CheckpointError(
            f"the checkpoint's {variant_name} networks differ from these "
            f"({_first_difference(state['arch'], mine)}); resume with the same architecture "
            "options (image size, channels, ngf/ndf, kernel) it was trained with")


def load_networks(path: str, device, ema: bool = True
                  ) -> Tuple[Dict[str, Any], Any, Dict[str, torch.nn.Module]]:
    """(checkpoint state, its variant, its networks on ``device`` with the saved weights): what
    `fastgan sample` and `fastgan eval` need; G is the moving average where the run kept one,
    unless ``ema`` is False. Raises CheckpointError."""
    from fastgan.variants import get_variant
    state = load_checkpoint(path)
    h = state["hyper"]
    try:
        v = get_variant(state["variant"], image_size=h["image_size"], channels=h["channels"],
                        z_dim=h["z_dim"], **h["extra"])
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    nets = {k: m.to(device) for k, m in v.build({}).items()}
    if (state.get("config") or {}).get("spectral_norm"):
        spectral_norm_nets(v, nets, 0, device)
    check_compatible(state, v.name, nets)
    for role, net in nets.items():
        net.load_state_dict(state["nets"][role])
    if ema and "ema" in state:
        nets["G"].load_state_dict(state["ema"]["module"])
    return state, v, nets


def _norm(sig) -> Dict[str, list]:
    return {role: [(n, tuple(s)) for n, s in v] for role, v in sig.items()}


def _first_difference(a, b) -> str:
    a, b = _norm(a), _norm(b)
    for role in sorted(set(a) | set(b)):
        la, lb = a.get(role, []), b.get(role, [])
        for x, y in zip(la, lb):
            if x != y:
                return f"{role}.{x[0]} {list(x[1])} vs {role}.{y[0]} {list(y[1])}"
        if len(la) != len(lb):
            return f"{role} has {len(la)} tensors in the checkpoint, {len(lb)} here"
    return "unknown difference"


def _load_opt(opt: torch.optim.Optimizer, sd: dict) -> None:
    """The saved moments and step counts, with the learning rate the optimizer was built with:
    that is the run's (the resumed run's own unless --lr-d/--lr-g were given again)."""
    lrs = [g["lr"] for g in opt.param_groups]
    wanted = [float(lr) for lr in lrs]
    opt.load_state_dict(sd)
    for g, old, lr in zip(opt.param_groups, lrs, wanted):
        if torch.is_tensor(old):   # keep the device tensor (capture-safe), set its value
            old.fill_(lr)
            g["lr"] = old
        else:
            g["lr"] = lr


def _match_layouts(opt: torch.optim.Optimizer) -> None:
    """Adam's moments in their parameter's memory format: a checkpoint of an NCHW run resumed
    channels_last (or the reverse) loads moments with the other strides, and the fused Adam
    pairs elements by storage order."""
    for p, st in opt.state.items():
        for k, t in list(st.items()):
            if torch.is_tensor(t) and t.shape == p.shape and t.dim() == 4 \
                    and t.stride() != p.stride():
                st[k] = torch.empty_like(p, dtype=t.dtype).copy_(t)


def restore_into(state: Dict[str, Any], engine) -> int:
    """Load networks, optimizers and RNG states into a freshly built engine; return the step."""
    check_compatible(state, engine.variant.name, engine.nets)
    for role, net in engine.nets.items():
        net.load_state_dict(state["nets"][role])
    _load_opt(engine.opt_d, state["opt_d"])
    _load_opt(engine.opt_g, state["opt_g"])
    for opt in (engine.opt_d, engine.opt_g):
        _match_layouts(opt)
    if getattr(engine, "ema", None) is not None:
        # the saved average (its decay is this run's --ema); a run that had none starts its
        # average at G's restored weights
        src = state["ema"]["module"] if "ema" in state else engine.nets["G"].state_dict()
        engine.ema.module.load_state_dict(src)
    engine.d_count = int(state["step"]) * engine.opts.d_steps   # lazy R1's phase
    rng = state["rng"]
    if rng.get("engine_device") == engine.device.type:
        engine.set_rng_state(rng["engine"])
    torch.set_rng_state(rng["torch_cpu"])
    if rng.get("torch_cuda") is not None and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(rng["torch_cuda"])
        except Exception:
            pass
    return int(state["step"])
