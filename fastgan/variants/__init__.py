"""The five variants (docs/VARIANTS.md), by name."""
from __future__ import annotations

import copy
from typing import Dict, List, Tuple, Type

from .base import (Batch, BenchSettings, Hyper, Option, Variant, count_bn_buffers,
                   count_params)
from .bigan import BiGAN
from .convgan import ConvGAN
from .dcgan import DCGAN
from .gancls import GANCLS
from .mlp import MLP

VARIANTS: Dict[str, Type[Variant]] = {v.name: v for v in (MLP, BiGAN, GANCLS, DCGAN, ConvGAN)}
DEFAULT_VARIANT = "mlp"


class UnknownVariant(ValueError):
    pass


def get_variant(name: str, **overrides) -> Variant:
    """A variant instance with its own copy of the seed hyperparameters, ``overrides`` applied
    (fields of Hyper, or keys of Hyper.extra such as dcgan's ngf/kernel)."""
    if name not in VARIANTS:
        raise UnknownVariant(f"unknown variant {name!r}; choose one of: {', '.join(VARIANTS)}")
    v = VARIANTS[name]()
    v.hyper = copy.deepcopy(type(v).hyper)
    for k, val in overrides.items():
        if val is None:
            continue
        if hasattr(v.hyper, k) and k != "extra":
            setattr(v.hyper, k, val)
        elif k in v.hyper.extra:
            v.hyper.extra[k] = val
        else:
            raise ValueError(f"variant {name!r} has no option {k!r}")
    return v


def cli_options() -> Tuple[Option, ...]:
    """Every variant's own ``fastgan train`` flags, in VARIANTS order, each flag once."""
    seen: Dict[str, Option] = {}
    for v in VARIANTS.values():
        for o in v.cli_options:
            seen.setdefault(o.flag, o)
    return tuple(seen.values())


def bench_settings(name: str) -> BenchSettings:
    return VARIANTS[name].bench_settings()


def labelled_variants() -> List[str]:
    """The conditional variants (they take a class label)."""
    return [n for n, v in VARIANTS.items() if v.needs_labels]


__all__ = ["VARIANTS", "DEFAULT_VARIANT", "get_variant", "Variant", "Hyper", "Batch",
           "count_params", "count_bn_buffers", "UnknownVariant", "Option", "BenchSettings",
           "cli_options", "bench_settings", "labelled_variants"]
