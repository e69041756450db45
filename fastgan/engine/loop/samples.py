"""Sample grids of fixed noise: samples/step_NNNNNNN.png and samples/latest.png."""
from __future__ import annotations

import os

from fastgan.variants.sampling import fixed_noise, generate


def sampling_nets(run):
    """The networks that make samples: G's moving average where the run keeps one (--ema)."""
    ema = getattr(run.engine, "ema", None)
    return run.nets if ema is None else {**run.nets, "G": ema.module}


def write_samples(run, z, labels, nrow: int, name: str) -> str:
    from fastgan.viz import save_grid
    imgs = generate(run.variant, sampling_nets(run), z, labels)
    path = os.path.join(run.out, "samples", name)
    save_grid(imgs, path, nrow)
    save_grid(imgs, os.path.join(run.out, "samples", "latest.png"), nrow)
    return path


class Samples:
    def __init__(self, run):
        self.run, cfg = run, run.cfg
        # The same noise for every grid of the run (and after a resume).
        self.z, self.labels, self.nrow = fixed_noise(run.variant, cfg.n_samples, cfg.seed + 2,
                                                     run.device)

    def write(self) -> str:
        return write_samples(self.run, self.z, self.labels, self.nrow,
                             f"step_{self.run.step:07d}.png")
