"""Adam in the "epsilon-hat" form of TF1's ``AdamOptimizer`` and Keras' ``Adam`` (EpsHatAdam),
and torch's form as one Triton launch per network (TorchFormAdam, for ``torch.optim.Adam``).

torch's Adam adds eps to the bias-corrected root: ``p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t)
+ eps)``. TF1 and Keras fold the bias corrections into the step size and add eps to the raw root
(Kingma & Ba, end of section 2):

    lr_t = lr_d * sqrt(1 - b2^t) / (1 - b1^t)
    p   -= lr_t * m / (sqrt(v) + eps)

which is torch's form with a time-varying eps ``eps / sqrt(1 - b2^t)`` (large at the first steps:
it damps the updates of near-zero-gradient parameters). Keras' ``decay`` argument decays the rate
per update, ``lr_d = lr / (1 + decay * iterations)`` with ``iterations`` counted before this
update (``OptimizerV2._decayed_lr``); TF1 has no decay (``decay=0``).

Capturable in a CUDA graph: the base rate is a 0-d device tensor in ``param_groups[i]["lr"]``
(write into it to change the rate, as with torch's capturable Adam), the step count a device
tensor per parameter (``state[p]["step"]``, as torch keeps it), and ``step()`` reads nothing back
to the host. On CUDA (``fused=None``, when Triton is there) the update is one Triton launch per
(group, device, dtype), whatever the number of tensors, that reads p, g, m, v and writes p, m, v
once and advances the step counts (kernels/adam.py); a capture in which the grads are new
(set to None before it) runs inside ``capture_tables()``. On CPU it is torch's own fused Adam
kernel (one pass, vectorised) given the time-varying eps above, which needs the step count as a
host number: it is mirrored on the host (read once after construction or a load), so a step
reads nothing back there either. Otherwise multi-tensor ``torch._foreach_*`` ops. TorchFormAdam:
the same machinery with torch's update, state and param_groups (FASTGAN_ADAM_KERNEL=torch: torch's).
"""
from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Dict, Iterator, List, Tuple

import torch
import torch.nn as nn
from torch.optim.adam import adam as torch_adam

from fastgan.env_choices import word

if TYPE_CHECKING:
    from fastgan.variants import Variant


class _OneLaunchAdam(torch.optim.Optimizer):
    """What both forms share: the state torch's Adam keeps (a 0-d float32 device ``step``,
    ``exp_avg``, ``exp_avg_sq``), lr in a device tensor that a load keeps, and the Triton
    kernel's one launch per (group, device, dtype) with its cached tensor tables. A subclass
    names its form (``TORCH_FORM``) and the step for what the kernel does not take
    (``_other_step``)."""

    TORCH_FORM = False

    def __init__(self, params, defaults, fused: str):
        self.fused = fused
        self._hp: Dict[Tuple, torch.Tensor] = {}
        # The Triton kernel's tensor tables per (group, device, dtype), and every table a CUDA
        # graph launched with (kept alive as long as the optimizer: the graph reads it).
        self._tables: Dict[Tuple, object] = {}
        self._graph_tables: List[torch.Tensor] = []
        super().__init__(params, defaults)

    def load_state_dict(self, state_dict) -> None:
        """torch's, keeping each group's lr tensor (a CUDA graph may hold it): the loaded rate
        is written into it."""
        lrs = [g["lr"] for g in self.param_groups]
        super().load_state_dict(state_dict)
        for g, old in zip(self.param_groups, lrs):
            with torch.no_grad():
                old.copy_(torch.as_tensor(g["lr"], dtype=old.dtype))
            g["lr"] = old

    def _init_state(self, p: torch.Tensor) -> Dict[str, torch.Tensor]:
        st = self.state[p]
        if not st:
            st["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return st

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for gi, group in enumerate(self.param_groups):
            buckets: Dict[Tuple, List[List[torch.Tensor]]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self._init_state(p)
                b = buckets.setdefault((p.device, p.dtype), [[], [], [], [], []])
                for lst, t in zip(b, (p, p.grad, st["exp_avg"], st["exp_avg_sq"], st["step"])):
                    lst.append(t)
            for (device, dtype), (ps, gs, ms, vs, steps) in buckets.items():
                key = (gi, device, dtype)
                # the kernel advances float32 device step counts (what _init_state and a
                # capturable load make) and pairs p, g, m, v by storage order
                if self.fused == "triton" and all(
                        s.dtype == torch.float32 and s.device == device for s in steps) and all(
                        _flat_alike(*ts) for ts in zip(ps, gs, ms, vs)):
                    self._fused_step(key, group, device, ps, gs, ms, vs, steps)
                else:
                    self._other_step(key, group, device, dtype, ps, gs, ms, vs, steps)
        return loss

    def _other_step(self, key, group, device, dtype, ps, gs, ms, vs, steps) -> None:
        raise NotImplementedError

    def _fused_step(self, bucket, group, device, ps, gs, ms, vs, steps) -> None:
        kern = _triton_kernel()
        b1, b2 = group["betas"]
        # .get: a state dict of torch's Adam (same m, v and step) has no decay
        key = (b1, b2, group["eps"], group.get("decay", 0.0), device)
        hp = self._hp.get(key)
        if hp is None:   # first step (eager: a capture warms up first)
            hp = self._hp[key] = kern.hyper_tensor(*key)
        lr = group["lr"]
        if (not torch.is_tensor(lr) or lr.device != device
                or lr.dtype not in (torch.float32, torch.float64)):
            lr = torch.as_tensor(lr, dtype=torch.float64, device=device)
        self._tables[bucket] = kern.adam_(ps, gs, ms, vs, steps, lr, hp,
                                          self._tables.get(bucket), self._graph_tables,
                                          torch_form=self.TORCH_FORM)


class EpsHatAdam(_OneLaunchAdam):
    """Adam in the eps-hat form. ``eps``: Keras' 1e-7 or TF1's 1e-8; ``decay``: Keras'
    per-update decay (0 for TF1). ``device``: where lr lives (default: the first parameter's).
    ``fused``: "triton" (or True) the Triton kernel, "torch" torch's fused CPU kernel, False the
    foreach ops; default: Triton on CUDA when it is there, torch's kernel on CPU."""

    def __init__(self, params, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, decay: float = 0.0, device=None, fused=None):
        params = list(params)
        device = _lr_device(params, device)
        if fused is None:   # the Triton kernel on GPUs; the interpreter on CPU is for tests
            fused = ("triton" if triton_adam(device) else
                     "torch" if device.type == "cpu" and hasattr(torch, "_fused_adam_") else "")
        fused = "triton" if fused is True else (fused or "")
        if fused not in ("", "triton", "torch"):
            raise ValueError(f"EpsHatAdam(fused={fused!r}): use 'triton', 'torch' or False")
        if fused == "triton" and _triton_kernel() is None:
            raise RuntimeError("EpsHatAdam(fused=True) needs Triton")
        # torch's CPU kernel needs the step count as a host number: mirrored here (read once
        # after construction or load_state_dict), so that a step reads nothing back.
        self._host_t: Dict[Tuple, int] = {}
        if not torch.is_tensor(lr):
            lr = torch.tensor(float(lr), dtype=torch.float64, device=device)
        # "capturable" makes torch's load_state_dict put each loaded step on its parameter's
        # device (see Optimizer._process_value_according_to_param_policy).
        defaults = dict(lr=lr, betas=tuple(betas), eps=float(eps), decay=float(decay),
                        capturable=True)
        super().__init__(params, defaults, fused)

    def load_state_dict(self, state_dict) -> None:
        self._host_t.clear()
        super().load_state_dict(state_dict)

    def _other_step(self, key, group, device, dtype, ps, gs, ms, vs, steps) -> None:
        b1, b2 = group["betas"]
        host_t = self._host_t.pop(key, None)
        dense = all(t.is_contiguous() for lst in (ps, gs, ms, vs) for t in lst)
        if self.fused == "torch" and dense and device.type == "cpu" and _plain(steps[0]):
            t = (int(steps[0]) if host_t is None else host_t) + 1
            _torch_fused_step(group, ps, gs, ms, vs, steps, t)
            self._host_t[key] = t
        else:
            _eps_hat_adam(ps, gs, ms, vs, steps, group["lr"], b1, b2, group["eps"],
                          group.get("decay", 0.0), dtype)


class TorchFormAdam(_OneLaunchAdam):
    """torch's Adam (no weight decay, amsgrad or maximize), a drop-in for
    ``torch.optim.Adam(fused=True, capturable=True)`` with lr a 0-d float32 device tensor: the
    same update, the same state and param_groups (a state dict of either loads into the other),
    and on CUDA one Triton launch per (group, device, dtype) that also advances the step counts,
    where torch's makes two (its ``_foreach_add_`` of the steps, then its kernel).
    ``fused``: "triton" (or True) the Triton kernel, "torch" torch's fused Adam; default: Triton
    on CUDA when it is there. Tensors the kernel does not take (p, g, m, v not dense alike) go
    torch's way."""

    TORCH_FORM = True

    def __init__(self, params, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, device=None, fused=None):
        params = list(params)
        device = _lr_device(params, device)
        if fused is None:
            fused = "triton" if triton_adam(device) else "torch"
        fused = "triton" if fused is True else fused
        if fused not in ("triton", "torch"):
            raise ValueError(f"TorchFormAdam(fused={fused!r}): use 'triton' or 'torch'")
        if fused == "triton" and _triton_kernel() is None:
            raise RuntimeError("TorchFormAdam(fused='triton') needs Triton")
        if not torch.is_tensor(lr):     # float32, as torch.tensor(lr) gives torch's Adam
            lr = torch.tensor(float(lr), dtype=torch.float32, device=device)
        defaults = dict(lr=lr, betas=tuple(betas), eps=float(eps), **_TORCH_OPTIONS)
        super().__init__(params, defaults, fused)

    def load_state_dict(self, state_dict) -> None:
        """Hyperparameters and state from a state dict of torch's Adam (any of its modes) or
        of this class; the implementation's options stay this class's, and every step count
        goes to its parameter's device (the kernel reads it there, no host sync)."""
        for g in state_dict["param_groups"]:
            bad = {k: g[k] for k in ("weight_decay", "amsgrad", "maximize") if g.get(k)}
            if bad:
                raise ValueError(f"TorchFormAdam is Adam without weight decay, amsgrad or "
                                 f"maximize; this state dict has {bad}: load it into "
                                 f"torch.optim.Adam")
        super().load_state_dict(state_dict)
        for g in self.param_groups:
            g.update(_TORCH_OPTIONS)
            for p in g["params"]:
                st = self.state.get(p)
                if st and "step" in st:
                    st["step"] = torch.as_tensor(st["step"]).to(torch.float32).to(p.device)

    def _other_step(self, key, group, device, dtype, ps, gs, ms, vs, steps) -> None:
        b1, b2 = group["betas"]
        # torch's Adam as make_optimizer built it before: fused, capturable where it can be
        torch_adam(ps, gs, ms, vs, [], steps, fused=True, capturable=device.type != "cpu",
                   amsgrad=False, beta1=b1, beta2=b2, lr=group["lr"], weight_decay=0.0,
                   eps=group["eps"], maximize=False)


# torch.optim.Adam(fused=True, capturable=True)'s param_groups entries besides lr, betas, eps
_TORCH_OPTIONS = dict(weight_decay=0, amsgrad=False, maximize=False, foreach=None,
                      capturable=True, differentiable=False, fused=True,
                      decoupled_weight_decay=False)


def _lr_device(params, device) -> torch.device:
    if device is None:
        device = params[0].device if params and torch.is_tensor(params[0]) else "cpu"
    return torch.device(device)


def _flat_alike(p: torch.Tensor, *others: torch.Tensor) -> bool:
    """Whether ``p`` and ``others`` can be updated as flat arrays, element i of each with the
    others' element i: all contiguous, or one dense layout (channels_last weights, say)."""
    if p.is_contiguous() and all(t.is_contiguous() for t in others):
        return True
    if any(t.stride() != p.stride() for t in others):
        return False
    expect = 1
    for stride, size in sorted((st, sz) for st, sz in zip(p.stride(), p.shape) if sz != 1):
        if stride != expect:
            return False
        expect *= size
    return True


@contextlib.contextmanager
def capture_tables(launches: int = 1) -> Iterator[None]:
    """Around a CUDA-graph capture whose EpsHatAdam steps see other tensors than the eager
    steps did (grads set to None before it, as PyTorch's whole-network recipe does);
    ``launches``: the most steps of one optimizer it captures. The Triton kernel's tables for
    the new addresses come from buffers allocated here, before the capture, and are filled when
    it ends, before any replay. Without it such a capture is refused with a RuntimeError (never
    a graph with stale addresses)."""
    kern = _triton_kernel()
    if kern is None:
        yield
        return
    kern.prepare_capture(launches)
    try:
        yield
    finally:
        kern.write_captured()


def _plain(t: torch.Tensor) -> bool:
    """A real CPU tensor whose value can be read: not traced by torch.compile (Inductor fuses
    the foreach form itself) nor a fake tensor (the roofline's counter)."""
    from torch._subclasses.fake_tensor import is_fake
    return not torch.compiler.is_compiling() and not is_fake(t)


def _torch_fused_step(group, ps, gs, ms, vs, steps, t: int) -> None:
    """torch's fused Adam computes p -= lr/(1-b1^t) m / (sqrt(v)/sqrt(1-b2^t) + eps); with
    eps = eps_hat / sqrt(1-b2^t) that is the eps-hat update. ``t``: this step's count, known on
    the host; lr stays the group's tensor (what a user or a resume writes into)."""
    b1, b2 = group["betas"]
    torch._foreach_add_(steps, 1.0)
    lr = group["lr"]
    if not torch.is_tensor(lr):
        lr = torch.tensor(float(lr), dtype=torch.float64)
    decay = group.get("decay", 0.0)
    if decay:
        lr = lr / (1.0 + decay * (t - 1.0))
    eps = group["eps"] / math.sqrt(1.0 - b2 ** t)
    torch.ops.aten._fused_adam_.tensor_lr(ps, gs, ms, vs, [], steps, lr=lr, beta1=b1, beta2=b2,
                                          weight_decay=0.0, eps=eps, amsgrad=False,
                                          maximize=False)


def triton_adam(device: torch.device) -> bool:
    """The Triton kernel by default on ``device``: on CUDA where Triton is, unless
    FASTGAN_ADAM_KERNEL=torch (torch's own kernels: the way around a Triton problem)."""
    choice = word("FASTGAN_ADAM_KERNEL", "auto")
    return device.type == "cuda" and choice == "auto" and _triton_kernel() is not None


def _triton_kernel():
    """fastgan.kernels.adam, or None without Triton."""
    try:
        from fastgan.kernels import adam
    except Exception:   # no triton, or no driver for it
        return None
    return adam


def _eps_hat_adam(ps, gs, ms, vs, steps, lr, b1: float, b2: float, eps: float, decay: float,
                  dtype) -> None:
    torch._foreach_add_(steps, 1.0)
    # Every parameter of a group has taken the same number of steps: one set of scalars, in
    # float64 on the device (0.999^t in float32 would round the bias correction at 1e-7).
    t = steps[0].to(torch.float64)
    lr = lr.to(device=t.device, dtype=torch.float64) if torch.is_tensor(lr) else lr
    lr_d = lr / (1.0 + decay * (t - 1.0)) if decay else lr * torch.ones_like(t)
    # -lr_t, so that the update is one addcdiv: p += m / (-(sqrt(v) + eps) / lr_t).
    neg_lr_t = lr_d * torch.sqrt(1.0 - b2 ** t) / (b1 ** t - 1.0)
    neg_lr_t = neg_lr_t.to(dtype)
    # m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2  (TF1 ApplyAdam / Keras).
    torch._foreach_mul_(ms, b1)
    torch._foreach_add_(ms, gs, alpha=1.0 - b1)
    torch._foreach_mul_(vs, b2)
    torch._foreach_addcmul_(vs, gs, gs, value=1.0 - b2)
    denom = torch._foreach_sqrt(vs)
    torch._foreach_add_(denom, eps)
    torch._foreach_div_(denom, neg_lr_t)
    torch._foreach_addcdiv_(ps, ms, denom)


def eps_hat_adam_reference(p, g, m, v, t: int, lr: float, b1: float, b2: float, eps: float,
                           decay: float = 0.0):
    """One update written exactly as Keras' Adam (``decay`` > 0) or TF1's ApplyAdam states it, on
    plain tensors; returns the new (p, m, v). For tests."""
    lr_d = lr * (1.0 / (1.0 + decay * (t - 1)))
    lr_t = lr_d * (1.0 - b2 ** t) ** 0.5 / (1.0 - b1 ** t)
    m = b1 * m + (1.0 - b1) * g
    v = b2 * v + (1.0 - b2) * g * g
    return p - lr_t * m / (v.sqrt() + eps), m, v


def make_optimizer(params: List[nn.Parameter], lr: float, betas, device: torch.device,
                   capturable: bool = True, adam: str = "torch", eps: float = 1e-8,
                   decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam as the seed uses it (``adam``: "torch" or "eps_hat", Hyper.adam). torch's: fused,
    on CPU as well; on CUDA when ``capturable``, with its step counter and lr in device tensors
    so a schedule can change lr inside a captured graph (TorchFormAdam where Triton is there,
    else torch.optim.Adam). The eps-hat Adam always keeps both on the device."""
    if adam == "eps_hat":
        return EpsHatAdam(params, lr=lr, betas=betas, eps=eps, decay=decay, device=device)
    if adam != "torch":
        raise ValueError(f"unknown Adam form {adam!r}; use 'torch' or 'eps_hat'")
    if decay:
        raise ValueError("lr_decay is Keras' Adam decay: use it with adam='eps_hat'")
    if device.type == "cuda" and capturable:
        if triton_adam(device):    # one launch per network, the steps advanced in it
            return TorchFormAdam(params, lr=lr, betas=betas, eps=eps, device=device)
        return torch.optim.Adam(params, lr=torch.tensor(lr, device=device), betas=betas,
                                eps=eps, fused=True, capturable=True)
    # CPU too: torch's fused kernel is one vectorised pass where foreach makes six.
    return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, fused=True)


def as_gpu_adam(opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The Adam make_optimizer builds on a GPU in place of ``opt`` (on CPU tensors, for counting
    the GPU's kernels under the Triton interpreter): the Triton kernel, over the same
    parameters, lr and state tensors. A torch.optim.Adam becomes a TorchFormAdam (returned:
    the caller swaps it in), an EpsHatAdam switches its kernel; anything else is returned."""
    if isinstance(opt, EpsHatAdam):
        opt.fused = "triton"
        return opt
    if type(opt) is not torch.optim.Adam or any(
            g["weight_decay"] or g["amsgrad"] or g["maximize"] for g in opt.param_groups):
        return opt
    groups = [{"params": g["params"], "lr": g["lr"]} for g in opt.param_groups]
    g0 = opt.param_groups[0]
    new = TorchFormAdam(groups, lr=g0["lr"], betas=g0["betas"], eps=g0["eps"], fused="triton")
    for g, old in zip(new.param_groups, opt.param_groups):
        g.update(betas=old["betas"], eps=old["eps"])
        if not torch.is_tensor(g["lr"]):
            g["lr"] = torch.tensor(float(g["lr"]), dtype=torch.float32,
                                   device=g["params"][0].device)
    for p, st in opt.state.items():
        new.state[p] = st
    return new


def variant_optimizers(variant: Variant, d_params, g_params, device: torch.device,
                       capturable: bool = True):
    """(D's optimizer, G's optimizer) as the variant's Hyper names them."""
    h = variant.hyper
    kw = dict(capturable=capturable, adam=h.adam, eps=h.adam_eps, decay=h.lr_decay)
    return (make_optimizer(d_params, h.lr_d, h.betas, device, **kw),
            make_optimizer(g_params, h.lr_g, h.betas, device, **kw))
