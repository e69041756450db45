"""--tensorboard: the values each log step already read on the host (the metrics.jsonl row), the
GPU's power and memory, the evaluations and the sample grids, as TensorBoard events in
<run dir>/tensorboard/, by rank 0 only. JSONL stays the record; this adds no device sync."""
from __future__ import annotations

import os
from typing import Any, Dict, Optional

import torch

# metrics.jsonl keys -> TensorBoard tags
SCALARS = {"d_loss": "loss/D", "g_loss": "loss/G", "d_real": "D/real (D(x))",
           "d_fake": "D/fake (D(G(z)))", "it_s": "speed/it_s", "img_s": "speed/images_s"}


class TensorBoard:
    def __init__(self, run):
        from torch.utils.tensorboard import SummaryWriter
        self.run = run
        # A resumed run hides the events logged after its checkpoint, as metrics.jsonl drops
        # those rows (TensorBoard purges steps >= purge_step).
        self.w = SummaryWriter(os.path.join(run.out, "tensorboard"),
                               purge_step=run.step + 1 if run.step else None)
        self.power = None
        if run.device.type == "cuda":      # NVML: read on the host, no CUDA sync
            from fastgan.benchmark.telemetry import Nvml
            self.power = Nvml(run.device).power_w

    def scalars(self, row: Dict[str, Any]) -> None:
        step = row["step"]
        for k, tag in SCALARS.items():
            if k in row:
                self.w.add_scalar(tag, row[k], step)
        if self.power is not None:
            w = self.power()
            if w is not None:
                self.w.add_scalar("gpu/power_w", w, step)
        if self.run.device.type == "cuda":  # the caching allocator's counters: host values
            dev = self.run.device
            for tag, read in (("gpu/memory_allocated_mib", torch.cuda.memory_allocated),
                              ("gpu/max_memory_allocated_mib", torch.cuda.max_memory_allocated)):
                self.w.add_scalar(tag, read(dev) / 2**20, step)

    def evaluation(self, m: Optional[Dict[str, Any]]) -> None:
        if not m:
            return
        for k, v in m.items():
            if k not in ("step", "seconds") and isinstance(v, (int, float)) \
                    and not isinstance(v, bool):
                self.w.add_scalar(f"eval/{k}", v, m["step"])

    def image(self, path: str) -> None:
        """The sample grid just written (the PNG itself, so both show the same pixels)."""
        import numpy as np
        from PIL import Image
        with Image.open(path) as im:
            a = np.asarray(im.convert("RGB"))
        self.w.add_image("samples", a, self.run.step, dataformats="HWC")

    def close(self) -> None:
        self.w.close()


def open_writer(run) -> Optional[TensorBoard]:
    """The writer of a --tensorboard run on rank 0, else None."""
    return TensorBoard(run) if run.cfg.tensorboard and run.main else None
