"""Batches from a data set kept in host memory, for image folders too large for the GPU.

The images stay in pinned host memory; each fetch draws indices from a host generator, gathers
the batch on the host into one of two pinned staging buffers (double buffering: the host fills
one while the GPU may still be copying the other) and copies it to the device without blocking.
"""
from __future__ import annotations

from typing import List, Optional

import torch


class HostBatchLoader:
    def __init__(self, images: torch.Tensor, n_real: int, device: torch.device, seed: int,
                 local: Optional[slice] = None, contiguous: bool = False):
        self.cuda = device.type == "cuda"
        self.images = images.pin_memory() if self.cuda else images
        self.n_images = images.shape[0]
        self.gen = torch.Generator().manual_seed(seed)
        # contiguous: a run of n_real images at a random offset (seed 001) instead of n_real
        # independent indices.
        self.contiguous = contiguous

        def buf(shape, dtype):
            t = torch.empty(shape, dtype=dtype)
            return t.pin_memory() if self.cuda else t

        # Data-parallel: indices are drawn for the global batch (n_real), the images gathered
        # for this rank's slice ``local`` only.
        self.local = local if local is not None else slice(0, n_real)
        n_local = self.local.stop - self.local.start
        self.stage = [buf((n_local,) + tuple(images.shape[1:]), torch.uint8) for _ in range(2)]
        self.stage_idx = [buf((n_real,), torch.long) for _ in range(2)]
        self.events: List[Optional[torch.cuda.Event]] = [None, None]
        self.k = 0

    def fetch_into(self, real_u8: torch.Tensor, idx: torch.Tensor) -> None:
        """Draw a batch on the host and queue its copy into the device buffers."""
        k = self.k
        if self.events[k] is not None:
            self.events[k].synchronize()  # the copy out of this staging buffer has finished
        if self.contiguous:
            n = self.stage_idx[k].shape[0]
            o = torch.randint(0, self.n_images - n, (1,), generator=self.gen)
            torch.add(torch.arange(n), o, out=self.stage_idx[k])
        else:
            torch.randint(0, self.n_images, self.stage_idx[k].shape, generator=self.gen,
                          out=self.stage_idx[k])
        torch.index_select(self.images, 0, self.stage_idx[k][self.local], out=self.stage[k])
        real_u8.copy_(self.stage[k], non_blocking=True)
        idx.copy_(self.stage_idx[k], non_blocking=True)
        if self.cuda:
            ev = torch.cuda.Event()
            ev.record()
            self.events[k] = ev
        self.k ^= 1


def fits_on_device(images: torch.Tensor, device: torch.device, fraction: float = 0.25) -> bool:
    """Whether the uint8 data set takes at most ``fraction`` of the GPU's free memory."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return images.numel() * images.element_size() <= fraction * free
