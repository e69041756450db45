"""Sample-quality metrics computed on the training device from generated batches.

Two feature spaces, the same distances (distances.py) in each:

- the shipped digit classifier's 128-wide penultimate features, for 1-channel images: ``fid``
  (FID-MNIST), ``kid`` / ``kid_std``, ``precision`` / ``recall``; and from its softmax
  ``confident`` (top class probability >= 0.9), ``mode_coverage`` (entropy of the predicted-class
  histogram over log(10)), ``classes_covered`` (classes holding at least 2.5% of the samples)
  and, for conditional variants, ``cond_acc`` (samples for class k called k; classes evenly);
- with InceptionV3 weights (inception.py), for gray or colour images of any size, standard FID
  and KID and precision/recall: ``inception_fid``, ``inception_kid`` / ``inception_kid_std``,
  ``inception_precision`` / ``inception_recall`` (``inception_standard``: the published weights).

FID-MNIST and standard FID are different numbers (different networks and feature widths) and
are never comparable. The real side's statistics (mean, covariance and up to ``REAL_FEATURES``
feature rows for KID and precision/recall) are cached on disk keyed by a hash of the uint8
pixels and of the network's weights, so a data set is featurized once per network.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from .classifier import load_classifier
from .classifier_data import data_digest
from .distances import frechet_distance, kid, precision_recall  # noqa: F401 (re-exported)
from .inception import missing_weights_hint as inception_hint

CONFIDENT_P = 0.9
EVAL_BATCH = 500
REAL_FEATURES = 10000     # real feature rows kept for KID and precision/recall


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
            f"the digit classifier judges 1-channel images; these are {tuple(x.shape[1:])} "
            f"(C x H x W): {inception_hint()}")
    x = x.float()
    if x.shape[-1] != 28 or x.shape[-2] != 28:
        x = F.interpolate(x, size=(28, 28), mode="bilinear", antialias=True,
                          align_corners=False)
    return x


class FeatureStats:
    """Running float64 sums of features (mean and covariance at the end), class counts, and the
    feature rows themselves up to ``keep`` (for KID and precision/recall)."""

    def __init__(self, device, keep: int = 0, dim: int = 128):
        self.n = 0
        self.s1 = torch.zeros(dim, dtype=torch.float64, device=device)
        self.s2 = torch.zeros(dim, dim, dtype=torch.float64, device=device)
        self.counts = torch.zeros(10, dtype=torch.float64, device=device)
        self.confident = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.float64, device=device)
        self.keep, self.kept = keep, []

    def add(self, feats: torch.Tensor, logits: Optional[torch.Tensor] = None,
            labels: Optional[torch.Tensor] = None) -> None:
        f = feats.to(torch.float64)
        room = self.keep - sum(k.shape[0] for k in self.kept)
        if room > 0:
            self.kept.append(feats[:room].float())
        self.n += f.shape[0]
        self.s1 += f.sum(0)
        self.s2 += f.T @ f
        if logits is None:
            return
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

    def features(self) -> torch.Tensor:
        return torch.cat(self.kept) if self.kept else self.s1.new_zeros(0, self.s1.shape[0])


def _images01(images: torch.Tensor, i: int, device) -> torch.Tensor:
    x = images[i:i + EVAL_BATCH].to(device)
    return x.float() / 255 if x.dtype == torch.uint8 else x


@torch.no_grad()
def featurize(images: torch.Tensor, device, labels: Optional[torch.Tensor] = None,
              stats: Optional[FeatureStats] = None, keep: int = 0) -> FeatureStats:
    """Classifier features of uint8 ([0, 255]) or float ([0, 1]) images, in batches on
    ``device``."""
    clf, _ = load_classifier(device)
    stats = stats or FeatureStats(device, keep)
    for i in range(0, images.shape[0], EVAL_BATCH):
        f, logits = clf.features_and_logits(to_classifier_input(_images01(images, i, device)))
        stats.add(f, logits, None if labels is None else labels[i:i + EVAL_BATCH].to(device))
    return stats


@torch.no_grad()
def featurize_inception(images: torch.Tensor, net, keep: int = 0) -> FeatureStats:
    stats = FeatureStats(net.device, keep, net.dim)
    for i in range(0, images.shape[0], EVAL_BATCH):
        stats.add(net.features(_images01(images, i, net.device)))
    return stats


def _cached(key: str, device, compute, cache: bool) -> Dict[str, object]:
    path = stats_cache_dir() / f"{key}.pt"
    if cache and path.exists():
        try:
            st = torch.load(path, map_location="cpu", weights_only=True)
            if torch.is_tensor(st.get("feats")) and torch.is_tensor(st.get("mu")):
                return {k: v.to(device) if torch.is_tensor(v) else v for k, v in st.items()}
        except Exception:
            pass  # unreadable cache entry: recompute and overwrite it
    stats = compute()
    mu, cov = stats.mean_cov()
    st = {"mu": mu, "cov": cov, "feats": stats.features(), "n": stats.n, "key": key}
    if cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save({k: v.cpu() if torch.is_tensor(v) else v for k, v in st.items()}, tmp)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache only costs recomputation
    return st


def _subset(images: torch.Tensor) -> torch.Tensor:
    """The real images whose features are kept: all, or a fixed random REAL_FEATURES of them,
    first (featurize keeps the first rows)."""
    if images.shape[0] <= REAL_FEATURES:
        return images
    perm = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(0))
    return images[perm]


def real_stats(images_u8: torch.Tensor, device, cache: bool = True, inception=None,
               classifier: Optional[bool] = None) -> Dict[str, object]:
    """The real data set's statistics (uint8 N x C x H x W), each feature space cached on disk:
    the classifier's at the top level ({"mu", "cov", "feats", "key"}; 1-channel images and
    ``classifier``, default: 1-channel data), InceptionV3's under "inception" (with ``inception``,
    an InceptionFeatures)."""
    if classifier is None:
        classifier = images_u8.shape[1] == 1
    out: Dict[str, object] = {"n": int(images_u8.shape[0]), "device": torch.device(device)}
    digest = data_digest(images_u8)
    if classifier:
        _, meta = load_classifier("cpu")
        out.update(_cached(f"{digest}-{meta['digest']}-v2", device,
                           lambda: featurize(_subset(images_u8), device, keep=REAL_FEATURES),
                           cache))
    if inception is not None:
        out["inception"] = _cached(
            f"{digest}-inception-{inception.digest[:16]}", device,
            lambda: featurize_inception(_subset(images_u8), inception, keep=REAL_FEATURES), cache)
        out["inception_standard"] = inception.standard
    return out


def _distances(prefix: str, fake: FeatureStats, real: Dict[str, object]) -> Dict[str, object]:
    mu, cov = fake.mean_cov()
    rf, ff = real["feats"], fake.features()
    k, k_std, m = kid(rf, ff)
    p, r = precision_recall(rf, ff)
    return {f"{prefix}fid": frechet_distance(mu, cov, real["mu"], real["cov"]),
            f"{prefix}kid": k, f"{prefix}kid_std": k_std, f"{prefix}kid_subset": m,
            f"{prefix}precision": p, f"{prefix}recall": r}


@torch.no_grad()
def evaluate_generator(variant, nets, real: Dict[str, object], n: int = 10000,
                       seed: int = 1234, batch: int = EVAL_BATCH, inception=None
                       ) -> Dict[str, object]:
    """Generate ``n`` samples (G's BatchNorm on each batch's own statistics, training state
    untouched, as the sample grids) and compute every metric against ``real`` stats: the
    classifier's where ``real`` has them, InceptionV3's with ``inception``."""
    from fastgan.variants.sampling import generate
    if n < 10:
        raise QualityError(f"--eval-n must be at least 10, not {n}")
    use_clf = "mu" in real
    use_inc = inception is not None and "inception" in real
    if not (use_clf or use_inc):
        raise QualityError("no metric applies: the digit classifier judges 1-channel images "
                           "only, and " + inception_hint())
    device = real["device"] if "device" in real else real["mu"].device
    g = torch.Generator().manual_seed(seed)
    stats = FeatureStats(device, keep=n)
    inc_stats = FeatureStats(device, keep=n, dim=inception.dim) if use_inc else None
    clf = load_classifier(device)[0] if use_clf else None
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
        if use_clf:
            f, logits = clf.features_and_logits(to_classifier_input(x))
            stats.add(f, logits, lab_dev)
        if use_inc:
            inc_stats.add(inception.features(x))
        done += m
    out: Dict[str, object] = {"n": n}
    if use_clf:
        frac = (stats.counts / stats.n).cpu()
        nz = frac[frac > 0]
        out.update(_distances("", stats, real))
        out.update({
            "confident": float(stats.confident) / stats.n,
            "mode_coverage": float(-(nz * nz.log()).sum() / math.log(10)),
            "classes_covered": int((frac >= 0.025).sum()),
            "class_hist": [round(float(v), 4) for v in frac]})
        if variant.needs_labels:
            out["cond_acc"] = float(stats.correct) / stats.n
    if use_inc:
        out.update(_distances("inception_", inc_stats, real["inception"]))
        out["inception_standard"] = bool(inception.standard)
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
    parts: List[str] = []
    if "fid" in m:
        parts.append(f"FID-MNIST {m['fid']:.2f} | KID-MNIST {m['kid']:.4f} ± {m['kid_std']:.4f} | "
                     f"precision {m['precision']:.3f} recall {m['recall']:.3f} | confident "
                     f"{m['confident']:.3f} | mode coverage {m['mode_coverage']:.3f} "
                     f"({m['classes_covered']}/10 classes)")
        if "cond_acc" in m:
            parts.append(f"conditional accuracy {m['cond_acc']:.3f}")
    if "inception_fid" in m:
        note = "" if m.get("inception_standard", True) else " (non-standard Inception weights)"
        parts.append(f"FID {m['inception_fid']:.2f} | KID {m['inception_kid']:.4f} ± "
                     f"{m['inception_kid_std']:.4f} | Inception precision "
                     f"{m['inception_precision']:.3f} recall {m['inception_recall']:.3f}{note}")
    return " | ".join(parts)
