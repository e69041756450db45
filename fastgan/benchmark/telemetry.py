"""GPU telemetry through NVML (``pynvml`` from nvidia-ml-py), optional: without it (or on CPU)
every reading is None and the report prints a dash.

Energy comes from the board's energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ since
the driver loaded) read before and after the timed blocks; where the counter is missing, from
power samples (``nvmlDeviceGetPowerUsage``) taken every ~50 ms by a thread and integrated.
NVML's utilization ("a kernel was running during the last sample period") is sampled by the same
thread and kept as a coarse second opinion on how busy the GPU is.
"""
from __future__ import annotations

import threading
import time
from typing import List, Optional

import torch


class Nvml:
    """A handle on the NVML device behind a torch CUDA device, or an inert stand-in."""

    def __init__(self, device: torch.device):
        self.ok, self.error, self.h, self.nv = False, None, None, None
        if device.type != "cuda":
            self.error = "not a CUDA device"
            return
        try:
            import pynvml as nv
            nv.nvmlInit()
            self.nv = nv
            self.h = self._handle(nv, device)
            self.ok = True
        except Exception as e:  # no pynvml, no driver, no permission: record null
            self.error = f"{type(e).__name__}: {e}"

    @staticmethod
    def _handle(nv, device: torch.device):
        idx = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        bus = getattr(props, "pci_bus_id", None)
        if bus is not None:
            dom = getattr(props, "pci_domain_id", 0)
            dev = getattr(props, "pci_device_id", 0)
            try:
                return nv.nvmlDeviceGetHandleByPciBusId(f"{dom:08x}:{bus:02x}:{dev:02x}.0")
            except Exception:
                pass
        return nv.nvmlDeviceGetHandleByIndex(idx)

    def energy_mj(self) -> Optional[float]:
        if not self.ok:
            return None
        try:
            return float(self.nv.nvmlDeviceGetTotalEnergyConsumption(self.h))
        except Exception:
            return None

    def power_w(self) -> Optional[float]:
        if not self.ok:
            return None
        try:
            return self.nv.nvmlDeviceGetPowerUsage(self.h) / 1000.0
        except Exception:
            return None

    def util_pct(self) -> Optional[float]:
        if not self.ok:
            return None
        try:
            return float(self.nv.nvmlDeviceGetUtilizationRates(self.h).gpu)
        except Exception:
            return None

    def info(self) -> dict:
        out = {"available": self.ok, "error": self.error}
        if self.ok:
            try:
                out["driver"] = _s(self.nv.nvmlSystemGetDriverVersion())
                out["name"] = _s(self.nv.nvmlDeviceGetName(self.h))
                out["power_limit_w"] = self.nv.nvmlDeviceGetEnforcedPowerLimit(self.h) / 1000.0
            except Exception:
                pass
        return out


def _s(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


class Window:
    """Energy, mean power and NVML utilization over a stretch of work:

        with Window(nvml) as w:
            ... timed blocks ...
        w.result(seconds_of_work)
    """

    def __init__(self, nvml: Nvml, period_s: float = 0.05):
        self.nvml, self.period = nvml, period_s
        self.power: List[float] = []
        self.util: List[float] = []
        self._stop = threading.Event()
        self._thread = None
        self.e0 = self.e1 = None
        self.t0 = self.t1 = None

    def _sample(self):
        while not self._stop.is_set():
            p = self.nvml.power_w()
            u = self.nvml.util_pct()
            if p is not None:
                self.power.append(p)
            if u is not None:
                self.util.append(u)
            self._stop.wait(self.period)

    def __enter__(self):
        if self.nvml.ok:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
            self.e0 = self.nvml.energy_mj()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.t1 = time.perf_counter()
        if self.nvml.ok:
            self.e1 = self.nvml.energy_mj()
            self._stop.set()
            self._thread.join(timeout=1.0)
        return False

    def result(self) -> dict:
        """{energy_j, mean_power_w, nvml_util_pct, window_s, energy_source}."""
        wall = (self.t1 or 0.0) - (self.t0 or 0.0)
        out = {"energy_j": None, "mean_power_w": None, "nvml_util_pct": None,
               "window_s": wall, "energy_source": None}
        if not self.nvml.ok:
            return out
        if self.util:
            out["nvml_util_pct"] = sum(self.util) / len(self.util)
        if self.e0 is not None and self.e1 is not None and self.e1 > self.e0 and wall > 0:
            out["energy_j"] = (self.e1 - self.e0) / 1000.0
            out["mean_power_w"] = out["energy_j"] / wall
            out["energy_source"] = "nvml energy counter"
        elif self.power and wall > 0:
            mean = sum(self.power) / len(self.power)
            out["mean_power_w"] = mean
            out["energy_j"] = mean * wall
            out["energy_source"] = "nvml power samples"
        return out
