"""Capture the engine's iteration into a CUDA graph and replay it.

PyTorch's whole-network capture recipe: warm up on a side stream (which also triggers every
Triton autotune and cuDNN algorithm choice, and creates the optimizers' state), restore the state
the warm-up changed, capture ``unroll`` iterations on the same side stream, replay.

cuDNN's algorithm search (``torch.backends.cudnn.benchmark``: ``fastgan train`` and every
benchmark path turn it on for CUDA) runs on a convolution's first call for each shape, dtype and
layout; an iteration has the same ones every time, so the warm-up's first iteration searches
every one and the capture records the algorithms found, never a search.
"""
from __future__ import annotations

import gc
import time

import torch

from .iteration import Engine
from .optim import capture_tables


class CudaGraphsUnavailable(RuntimeError):
    pass


def check_capture(device: torch.device, host_resident: bool, unroll: int, d_steps: int) -> None:
    """Whether this run's iteration can be captured: the trainer's validation calls it before
    anything is written, GraphedIteration again as a guard for direct users."""
    if device.type != "cuda" or not torch.cuda.is_available():
        raise CudaGraphsUnavailable("--cuda-graphs needs a CUDA GPU and --device cuda "
                                    f"(this run is on {device.type}); drop --cuda-graphs")
    if host_resident and (unroll > 1 or d_steps > 1):
        raise CudaGraphsUnavailable(
            "a data set kept in host memory is fetched outside the graph, one batch per "
            "replay: use --graph-unroll 1 and --d-steps 1, or a smaller data set")


class GraphedIteration:
    def __init__(self, engine: Engine, warmup: int = 3, unroll: int = 1):
        check_capture(engine.device, engine.host is not None, unroll, engine.opts.d_steps)
        if not engine.opts.capturable:
            raise CudaGraphsUnavailable("the engine's optimizers are not capturable: build it "
                                        "with EngineOptions(capturable=True)")
        self.engine, self.unroll = engine, unroll
        # Whether the captured convolutions are cuDNN's searched algorithms (reported by the
        # benchmark rows; off only when a caller turned the search off).
        self.cudnn_benchmark = bool(torch.backends.cudnn.benchmark)
        # A host-resident data set is gathered on the host and copied in before each replay.
        engine.fetch_outside = engine.host is not None
        t0 = time.perf_counter()
        # Autograd nodes of earlier eager steps, if any are still alive, remember the stream
        # they ran on and would make the capture depend on it.
        gc.collect()
        snap = engine.snapshot()
        side = torch.cuda.Stream(device=engine.device)
        side.wait_stream(torch.cuda.current_stream(engine.device))
        with torch.cuda.stream(side):
            for _ in range(max(1, warmup)):
                if engine.fetch_outside:
                    engine.fetch()
                engine.step()
        torch.cuda.current_stream(engine.device).wait_stream(side)
        torch.cuda.synchronize(engine.device)
        engine.restore(snap)

        self.graph = torch.cuda.CUDAGraph()
        # The engine draws from its own generator: register it so each replay advances it.
        self.graph.register_generator_state(engine.gen)
        for opt in (engine.opt_d, engine.opt_g):
            opt.zero_grad(set_to_none=True)
        # The grads are allocated inside the capture: so are the Triton Adam's tensor tables.
        with capture_tables(unroll * max(1, engine.opts.d_steps)), \
                torch.cuda.graph(self.graph, stream=side):
            for _ in range(unroll):
                engine.step()
        torch.cuda.synchronize(engine.device)
        self.capture_seconds = time.perf_counter() - t0

    def replay(self) -> None:
        """Run ``unroll`` iterations."""
        if self.engine.fetch_outside:
            self.engine.fetch()
        self.graph.replay()
