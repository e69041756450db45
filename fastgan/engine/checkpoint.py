"""Checkpoints: everything a run needs to continue bit for bit, written atomically.

A checkpoint is one file ``checkpoint.pt`` in the run directory: the networks, both optimizers,
the step, every RNG state (the engine's device generator, torch's CPU and CUDA generators), the
variant's hyperparameters and architecture signature, and the run config. It is written to a
temporary file in the same directory, flushed to disk, then renamed over the old one, so a crash
or Ctrl-C at any moment leaves either the old or the new checkpoint, never half of one.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Tuple

import torch

import fastgan

CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(ValueError):
    pass


def arch_signature(nets: Dict[str, torch.nn.Module]) -> Dict[str, list]:
    """Names and shapes of every parameter and buffer: two runs agree on this iff their
    checkpoints are interchangeable."""
    return {role: [(k, list(v.shape)) for k, v in net.state_dict().items()]
            for role, net in nets.items()}


def atomic_save(obj: Any, path: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    try:  # make the rename itself durable
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _opt_state(opt: torch.optim.Optimizer) -> dict:
    sd = opt.state_dict()
    # lr may be a device tensor (capturable Adam): store plain floats, portable across devices.
    for g in sd["param_groups"]:
        if torch.is_tensor(g["lr"]):
            g["lr"] = float(g["lr"])
    return sd


def save_checkpoint(run_dir: str, engine, step: int, config: Dict[str, Any]) -> str:
    v = engine.variant
    state = {
        "format": 1,
        "fastgan_version": fastgan.__version__,
        "variant": v.name,
        "hyper": dataclasses.asdict(v.hyper),
        "arch": arch_signature(engine.nets),
        "nets": {role: net.state_dict() for role, net in engine.nets.items()},
        "opt_d": _opt_state(engine.opt_d),
        "opt_g": _opt_state(engine.opt_g),
        "step": step,
        "rng": {
            "engine": engine.rng_state(),
            "engine_device": engine.device.type,
            "torch_cpu": torch.get_rng_state(),
            "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        },
        "config": config,
    }
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


def load_checkpoint(path: str) -> Dict[str, Any]:
    p = checkpoint_path(path)
    try:
        state = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"checkpoint {p!r} cannot be read ({type(e).__name__}: {e}); "
                              "it is corrupt or not a fastgan checkpoint") from None
    if not isinstance(state, dict) or state.get("format") != 1 or "variant" not in state:
        raise CheckpointError(f"{p!r} is not a fastgan checkpoint")
    return state


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


def load_networks(path: str, device) -> Tuple[Dict[str, Any], Any, Dict[str, torch.nn.Module]]:
    """(checkpoint state, its variant, its networks on ``device`` with the saved weights): what
    `fastgan sample` and `fastgan eval` need. Raises CheckpointError."""
    from fastgan.variants import get_variant
    state = load_checkpoint(path)
    h = state["hyper"]
    try:
        v = get_variant(state["variant"], image_size=h["image_size"], channels=h["channels"],
                        z_dim=h["z_dim"], **h["extra"])
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    nets = {k: m.to(device) for k, m in v.build({}).items()}
    check_compatible(state, v.name, nets)
    for role, net in nets.items():
        net.load_state_dict(state["nets"][role])
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
    lrs = [g["lr"] for g in opt.param_groups]
    opt.load_state_dict(sd)
    for g, old in zip(opt.param_groups, lrs):
        if torch.is_tensor(old):   # keep the device tensor (capture-safe), set its value
            old.fill_(float(g["lr"]))
            g["lr"] = old


def restore_into(state: Dict[str, Any], engine) -> int:
    """Load networks, optimizers and RNG states into a freshly built engine; return the step."""
    check_compatible(state, engine.variant.name, engine.nets)
    for role, net in engine.nets.items():
        net.load_state_dict(state["nets"][role])
    _load_opt(engine.opt_d, state["opt_d"])
    _load_opt(engine.opt_g, state["opt_g"])
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
