"""Sample-quality metrics computed on the training device from generated batches.

- ``fid``: FID-MNIST, the Frechet distance between Gaussians fitted to the digit classifier's
  128-wide penultimate features of generated and of real images (lower is better; the real data
  against itself, split in two halves, is the floor).
- ``confident``: fraction of samples whose top class probability is at least 0.9.
- ``mode_coverage``: entropy of the predicted-class histogram over log(10): 1.0 when the ten
  classes appear equally often, 0 when every sample is one class. ``classes_covered``: classes
  holding at least a quarter of their even share (2.5%) of the samples.
- ``cond_acc`` (conditional variants): fraction of samples generated for class k that the
  classifier calls k; classes are drawn evenly.

The real side's statistics are cached on disk keyed by a hash of the uint8 pixels and of the
classifier's weights, so a data set is featurized once.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from .classifier import load_classifier
from .classifier_data import data_digest

CONFIDENT_P = 0.9
EVAL_BATCH = 500


class QualityError(Exception):
    """The metrics do not apply to this run or data (one line: problem and fix)."""


def stats_cache_dir() -> Path:
    """$FASTGAN_CACHE_DIR/fid-stats, else $XDG_CACHE_HOME/fastgan/fid-stats (~/.cache)."""
    if os.environ.get("FASTGAN_CACHE_DIR"):
        return Path(os.environ["FASTGAN_CACHE_DIR"]).expanduser() / "fid-stats"
    from fastgan.data.sources import default_cache_dir
    return default_cache_dir() / "fid-stats"


def to_classifier_input(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1], N x 1 x S x S -> N x 1 x 28 x 28 float32."""
    if x.dim() != 4 or x.shape[1] != 1:
        raise QualityError(
            f"the quality metrics use a digit classifier for 1-channel images; these are "
            f"{tuple(x.shape[1:])} (C x H x W): train on MNIST-like gray data (--channels 1)")
    x = x.float()
    if x.shape[-1] != 28 or x.shape[-2] != 28:
        x = F.interpolate(x, size=(28, 28), mode="bilinear", antialias=True,
                          align_corners=False)
    return x


class FeatureStats:
    """Running float64 sums of features (mean and covariance at the end) and class counts."""

    def __init__(self, device):
        self.n = 0
        self.s1 = torch.zeros(128, dtype=torch.float64, device=device)
        self.s2 = torch.zeros(128, 128, dtype=torch.float64, device=device)
        self.counts = torch.zeros(10, dtype=torch.float64, device=device)
        self.confident = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.float64, device=device)

    def add(self, feats: torch.Tensor, logits: torch.Tensor,
            labels: Optional[torch.Tensor] = None) -> None:
        f = feats.to(torch.float64)
        self.n += f.shape[0]
        self.s1 += f.sum(0)
        self.s2 += f.T @ f
        p = logits.float().softmax(1)
        pred = p.argmax(1)
        self.counts += torch.bincount(pred, minlength=10).to(torch.float64)
        self.confident += (p.max(1).values >= CONFIDENT_P).sum()
        if labels is not None:
            self.correct += (pred == labels).sum()

    def mean_cov(self) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.n < 2:
            raise QualityError("at least 2 samples are needed for FID")
        mu = self.s1 / self.n
        cov = (self.s2 - self.n * torch.outer(mu, mu)) / (self.n - 1)
        return mu, cov


def frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor,
                     cov2: torch.Tensor) -> float:
    """|mu1 - mu2|^2 + tr(C1) + tr(C2) - 2 tr((C1^1/2 C2 C1^1/2)^1/2), in float64 with
    symmetric eigendecompositions (no scipy, runs on the device)."""
    mu1, cov1, mu2, cov2 = (t.to(torch.float64) for t in (mu1, cov1, mu2, cov2))
    w, v = torch.linalg.eigh((cov1 + cov1.T) / 2)
    s1 = (v * w.clamp_min(0).sqrt()) @ v.T                      # C1^1/2
    m = s1 @ cov2 @ s1
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    d = (mu1 - mu2).square().sum() + cov1.trace() + cov2.trace() - 2 * tr_sqrt
    return float(d.clamp_min(0))


@torch.no_grad()
def featurize(images: torch.Tensor, device, labels: Optional[torch.Tensor] = None,
              stats: Optional[FeatureStats] = None) -> FeatureStats:
    """Features of uint8 ([0, 255]) or float ([0, 1]) images, in batches on ``device``."""
    clf, _ = load_classifier(device)
    stats = stats or FeatureStats(device)
    for i in range(0, images.shape[0], EVAL_BATCH):
        x = images[i:i + EVAL_BATCH].to(device)
        x = x.float() / 255 if x.dtype == torch.uint8 else x
        f, logits = clf.features_and_logits(to_classifier_input(x))
        stats.add(f, logits, None if labels is None else labels[i:i + EVAL_BATCH].to(device))
    return stats


def real_stats(images_u8: torch.Tensor, device, cache: bool = True
               ) -> Dict[str, torch.Tensor]:
    """{"mu", "cov", "n"} of a real data set (uint8 N x 1 x H x W), cached on disk."""
    _, meta = load_classifier("cpu")
    key = f"{data_digest(images_u8)}-{meta['digest']}"
    path = stats_cache_dir() / f"{key}.pt"
    if cache and path.exists():
        try:
            st = torch.load(path, map_location="cpu", weights_only=True)
            return {k: v.to(device) if torch.is_tensor(v) else v for k, v in st.items()}
        except Exception:
            pass  # unreadable cache entry: recompute and overwrite it
    mu, cov = featurize(images_u8, device).mean_cov()
    st = {"mu": mu, "cov": cov, "n": int(images_u8.shape[0]), "key": key}
    if cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save({k: v.cpu() if torch.is_tensor(v) else v for k, v in st.items()}, tmp)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache only costs recomputation
    return st


@torch.no_grad()
def evaluate_generator(variant, nets, real: Dict[str, torch.Tensor], n: int = 10000,
                       seed: int = 1234, batch: int = EVAL_BATCH) -> Dict[str, object]:
    """Generate ``n`` samples (G's BatchNorm on each batch's own statistics, training state
    untouched, as the sample grids) and compute every metric against ``real`` stats."""
    from fastgan.variants.sampling import generate
    if n < 10:
        raise QualityError(f"--eval-n must be at least 10, not {n}")
    device = real["mu"].device
    g = torch.Generator().manual_seed(seed)
    stats = FeatureStats(device)
    clf, _ = load_classifier(device)
    done = 0
    while done < n:
        m = min(batch, n - done)
        labels = None
        if variant.needs_labels:
            labels = (torch.arange(done, done + m) % 10)
        z = torch.empty(variant.noise_shape(m))
        variant.fill_noise(z, labels, g)
        lab_dev = labels.to(device) if labels is not None else None
        x = generate(variant, nets, z.to(device), lab_dev)
        if not torch.isfinite(x).all():
            raise QualityError("the generator produced NaN/inf samples: the run has diverged")
        f, logits = clf.features_and_logits(to_classifier_input(x))
        stats.add(f, logits, lab_dev)
        done += m
    mu, cov = stats.mean_cov()
    frac = (stats.counts / stats.n).cpu()
    nz = frac[frac > 0]
    out: Dict[str, object] = {
        "fid": frechet_distance(mu, cov, real["mu"], real["cov"]),
        "confident": float(stats.confident) / stats.n,
        "mode_coverage": float(-(nz * nz.log()).sum() / math.log(10)),
        "classes_covered": int((frac >= 0.025).sum()),
        "class_hist": [round(float(v), 4) for v in frac],
        "n": stats.n,
    }
    if variant.needs_labels:
        out["cond_acc"] = float(stats.correct) / stats.n
    return out


def real_floor(images_u8: torch.Tensor, device) -> float:
    """FID between two random halves of a real data set: a floor for generated samples at
    about this sample count (each half has n/2 images)."""
    h = images_u8.shape[0] // 2
    perm = torch.randperm(images_u8.shape[0], generator=torch.Generator().manual_seed(0))
    a = featurize(images_u8[perm[:h]], device).mean_cov()
    b = featurize(images_u8[perm[h:2 * h]], device).mean_cov()
    return frechet_distance(*a, *b)


def format_metrics(m: Dict[str, object]) -> str:
    s = (f"FID-MNIST {m['fid']:.2f} | confident {m['confident']:.3f} | mode coverage "
         f"{m['mode_coverage']:.3f} ({m['classes_covered']}/10 classes)")
    if "cond_acc" in m:
        s += f" | conditional accuracy {m['cond_acc']:.3f}"
    return s
