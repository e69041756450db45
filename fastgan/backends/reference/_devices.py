"""The device types the reference backend registers for (PyTorch runs its formulas anywhere)."""
ALL_DEVICES = ("cpu", "cuda", "meta", "mps")
