"""fastgan: train GANs fast on NVIDIA GPUs, with a pure-PyTorch reference path."""
__version__ = "0.1.0"
