"""What one call of the training loop runs: the replay of the iteration captured in a CUDA graph
where the run chose the graph (validate.choose_graphs), else the eager step. A capture that fails
at run time (warm-up or capture) is one warning naming the cause, then eager training from the
state the capture started from, with an engine built for eager steps."""
from __future__ import annotations

import gc
import sys
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from fastgan import ops

from .. import checkpoint as ckpt
from ..config import UserError
from ..graphs import GraphedIteration
from ..validate import build_engine, eager_backend


def _host(x: Any) -> Any:
    """A copy of ``x`` with every tensor copied to the host (no GPU memory while capturing)."""
    if torch.is_tensor(x):
        return x.detach().to("cpu", copy=True)
    if isinstance(x, dict):
        return {k: _host(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_host(v) for v in x)
    return x


def memory_state(engine, step: int) -> Dict[str, Any]:
    """The training state as a checkpoint holds it (what ckpt.restore_into loads), in host
    memory: a fresh engine restored from it continues exactly as a resume would."""
    return _host(ckpt.training_state(engine, step))


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"


def fall_back_to_eager(run, state: Dict[str, Any], cause: BaseException) -> None:
    """Eager training after a failed capture: the auto backend of eager mode, an engine whose
    optimizers count steps on the host (the faster eager Adam), the state from before the
    capture. The warning is printed even with --quiet: the run is slower than it asked for."""
    old = run.backend
    run.graphs = False
    try:
        run.backend = eager_backend(run, run.cfg)
        ops.set_backend(run.backend)   # inside the run's use_backend: restored at its end
        resident = run.engine.resident
        build_engine(run, resident, capturable=False)
        gc.collect()            # the failed graph's memory pool and the old engine
        ckpt.restore_into(state, run.engine)
    except Exception as e:       # the device itself is broken: one line, not a traceback
        raise UserError(f"the CUDA graph capture failed ({_first_line(cause)}) and eager "
                        f"training could not start either ({_first_line(e)})") from None
    if run.main:
        switched = f" with backend {run.backend} (auto, eager)" if run.backend != old else ""
        print(f"fastgan: warning: the CUDA graph capture failed ({_first_line(cause)}); "
              f"training eagerly{switched} (--no-cuda-graphs skips the capture)",
              file=sys.stderr, flush=True)


def runner(run, capture: Optional[Callable] = None) -> Tuple[Callable[[], None], int]:
    """(one call's work, iterations per call). ``capture``: builds the graph (GraphedIteration;
    tests pass a failing one)."""
    if not run.graphs:
        return run.engine.step, 1
    capture = capture or GraphedIteration
    unroll = max(1, run.cfg.graph_unroll)
    state = memory_state(run.engine, run.step)
    try:
        g = capture(run.engine, warmup=run.cfg.graph_warmup, unroll=unroll)
    except Exception as e:      # CUDA, Triton or cuDNN errors inside the capture or its warm-up
        fall_back_to_eager(run, state, e)
        return run.engine.step, 1
    run._log(f"fastgan: captured {unroll} iteration(s) in a CUDA graph in "
             f"{g.capture_seconds:.2f}s")
    return g.replay, unroll
