"""The FASTGAN_* environment settings that take one of a few words. Every command checks them
when it starts (``fastgan.cli``), so a typo ends it with one line that names the variable and its
words, never a backend silently missing (FASTGAN_TRITON_LAUNCH is read when the Triton kernels
are imported, and a bad value makes that backend unavailable) or a default taken without a word.
The modules that read them refuse a bad value too, for library users."""
from __future__ import annotations

import os
from typing import Mapping, Optional

CHOICES = {
    "FASTGAN_ADAM_KERNEL": ("auto", "torch"),              # fastgan/engine/optim.py
    "FASTGAN_CPU_KERNELS": ("auto", "always", "never"),    # fastgan/backends/cuda/_cpu_policy.py
    "FASTGAN_TRITON_DOT_PRECISION": ("tf32", "ieee", "tf32x3"),   # kernels/config.py
    "FASTGAN_TRITON_LAUNCH": ("jit", "cached"),            # kernels/launch.py
}


def word(name: str, default: str, environ: Optional[Mapping[str, str]] = None) -> str:
    """The variable's word (trimmed, lower case), its default when unset; ValueError naming the
    words when it is none of them."""
    env = os.environ if environ is None else environ
    raw = env.get(name)
    if raw is None:
        return default
    v = raw.strip().lower()
    if v not in CHOICES[name]:
        raise ValueError(f"{name}={raw!r}: set it to one of {', '.join(CHOICES[name])} "
                         f"or unset it (default {default})")
    return v


def env_problem(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The first bad setting's one-line error, or None."""
    for name, words in CHOICES.items():
        try:
            word(name, words[0], environ)
        except ValueError as e:
            return str(e)
    return None
