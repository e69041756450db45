"""Sample-quality metrics computed on the training device from generated batches.

Two feature spaces, the same distances (distances.py) in each:

- the shipped digit classifier's 128-wide penultimate features, for 1-channel images: ``fid``
  (FID-MNIST), ``kid`` / ``kid_std``, ``precision`` / ``recall``; and from its softmax
  ``confident`` (top class probability >= 0.9), ``mode_coverage`` (entropy of the predicted-class
  histogram over log(10)), ``classes_covered`` (classes holding at least 2.5% of the samples)
  and, for conditional variants, ``cond_acc`` (samples for class k called k; classes evenly);
- with InceptionV3 weights (inception.py), for gray or colour images of any size, standard FID
  and KID and precision/recall: ``inception_fid``, ``inception_kid`` / ``inception_kid_std``,
  ``inception_precision`` / ``inception_recall`` (``inception_standard``: the published weights;
  ``inception_weights``: the file's path).

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
from .distances import PR_K, frechet_distance, kid, precision_recall  # noqa: F401
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


def _batches(images: torch.Tensor, device, order: Optional[torch.Tensor]):
    """(batch index, [0, 1] images on ``device``) in ``order`` (default: as stored), one batch
    copied at a time."""
    n = images.shape[0]
    for i in range(0, n, EVAL_BATCH):
        x = images[i:i + EVAL_BATCH] if order is None else images[order[i:i + EVAL_BATCH]]
        x = x.to(device)
        yield i, (x.float() / 255 if x.dtype == torch.uint8 else x)


@torch.no_grad()
def featurize(images: torch.Tensor, device, labels: Optional[torch.Tensor] = None,
              stats: Optional[FeatureStats] = None, keep: int = 0,
              order: Optional[torch.Tensor] = None) -> FeatureStats:
    """Classifier features of uint8 ([0, 255]) or float ([0, 1]) images, in batches on
    ``device`` (in ``order``; ``keep``: the first rows kept)."""
    clf, _ = load_classifier(device)
    stats = stats or FeatureStats(device, keep)
    for i, x in _batches(images, device, order):
        f, logits = clf.features_and_logits(to_classifier_input(x))
        stats.add(f, logits, None if labels is None else labels[i:i + EVAL_BATCH].to(device))
    return stats


@torch.no_grad()
def featurize_inception(images: torch.Tensor, net, keep: int = 0,
                        order: Optional[torch.Tensor] = None) -> FeatureStats:
    stats = FeatureStats(net.device, keep, net.dim)
    for _, x in _batches(images, net.device, order):
        stats.add(net.features(x))
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


def _order(images: torch.Tensor) -> Optional[torch.Tensor]:
    """The order in which real images are featurized: a fixed random one when not every
    image's features are kept (featurize keeps the first REAL_FEATURES rows)."""
    if images.shape[0] <= REAL_FEATURES:
        return None
    return torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(0))


def real_stats(images_u8: torch.Tensor, device, cache: bool = True, inception=None,
               classifier: Optional[bool] = None) -> Dict[str, object]:
    """The real data set's statistics (uint8 N x C x H x W), each feature space cached on disk:
    the classifier's at the top level ({"mu", "cov", "feats", "key"}; 1-channel images and
    ``classifier``, default: 1-channel data), InceptionV3's under "inception" (with ``inception``,
    an InceptionFeatures)."""
    if classifier is None:
        classifier = images_u8.shape[1] == 1
    n = int(images_u8.shape[0])
    if n <= PR_K:
        raise QualityError(f"the quality metrics need at least {PR_K + 1} real images; the data "
                           f"set has {n}")
    out: Dict[str, object] = {"n": n, "device": torch.device(device)}
    digest, order, rows = data_digest(images_u8), _order(images_u8), REAL_FEATURES
    if classifier:
        _, meta = load_classifier("cpu")
        out.update(_cached(f"{digest}-{meta['digest']}-v2-r{rows}", device,
                           lambda: featurize(images_u8, device, keep=rows, order=order), cache))
    if inception is not None:
        out["inception"] = _cached(
            f"{digest}-inception-{inception.digest[:16]}-v1-r{rows}", device,
            lambda: featurize_inception(images_u8, inception, keep=rows, order=order), cache)
    return out


def _distances(prefix: str, fake: FeatureStats, real: Dict[str, object]) -> Dict[str, object]:
    mu, cov = fake.mean_cov()
    rf, ff = real["feats"], fake.features()
    k, k_std, m = kid(rf, ff)
    # Precision and recall depend on the set sizes: equal ones (both random samples), recorded.
    n_pr = min(rf.shape[0], ff.shape[0])
    p, r = precision_recall(rf[:n_pr], ff[:n_pr])
    return {f"{prefix}fid": frechet_distance(mu, cov, real["mu"], real["cov"]),
            f"{prefix}kid": k, f"{prefix}kid_std": k_std, f"{prefix}kid_subset": m,
            f"{prefix}precision": p, f"{prefix}recall": r, f"{prefix}pr_n": n_pr}


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
        out["inception_weights"] = str(inception.path)
    return out


def real_floor(images_u8: torch.Tensor, device) -> float:
    """FID between two random halves of a real data set: a floor for generated samples at
    about this sample count (each half has n/2 images)."""
    h = images_u8.shape[0] // 2
    perm = torch.randperm(images_u8.shape[0], generator=torch.Generator().manual_seed(0))
    a = featurize(images_u8[perm[:h]], device).mean_cov()
    b = featurize(images_u8[perm[h:2 * h]], device).mean_cov()
    return frechet_distance(*a, *b)


def _subsets(m: Dict[str, object], key: str) -> str:
    """KID's subset size when it is not the standard 1,000 (then not comparable)."""
    return f" (subsets of {m[key]})" if m.get(key, 1000) < 1000 else ""


def format_metrics(m: Dict[str, object]) -> str:
    parts: List[str] = []
    if "fid" in m:
        parts.append(f"FID-MNIST {m['fid']:.2f} | KID-MNIST {m['kid']:.4f} ± {m['kid_std']:.4f}"
                     f"{_subsets(m, 'kid_subset')} | "
                     f"precision {m['precision']:.3f} recall {m['recall']:.3f} | confident "
                     f"{m['confident']:.3f} | mode coverage {m['mode_coverage']:.3f} "
                     f"({m['classes_covered']}/10 classes)")
        if "cond_acc" in m:
            parts.append(f"conditional accuracy {m['cond_acc']:.3f}")
    if "inception_fid" in m:
        note = "" if m.get("inception_standard", True) else " (non-standard Inception weights)"
        parts.append(f"FID {m['inception_fid']:.2f} | KID {m['inception_kid']:.4f} ± "
                     f"{m['inception_kid_std']:.4f}{_subsets(m, 'inception_kid_subset')} | "
                     "Inception precision "
                     f"{m['inception_precision']:.3f} recall {m['inception_recall']:.3f}{note}")
    return " | ".join(parts)
