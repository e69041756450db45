"""Distances between a generated and a real set of features, on the features' device, in
float64: the Frechet distance (FID), the kernel inception distance (KID) and k-NN precision and
recall. Each takes feature matrices [N, D] (or, for FID, their means and covariances), so one
set of formulas serves every feature extractor (the digit classifier's 128-wide features, the
InceptionV3 pool features)."""
from __future__ import annotations

from typing import Tuple

import torch

KID_SUBSETS = 100        # torch-fidelity's and the KID paper's defaults
KID_SUBSET_SIZE = 1000
PR_K = 3                 # Kynkaanniemi et al. 2019: the 3rd nearest neighbour


def mean_cov(feats: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance of [N, D] features, in float64."""
    f = feats.to(torch.float64)
    if f.shape[0] < 2:
        raise ValueError("at least 2 samples are needed for a covariance")
    mu = f.mean(0)
    d = f - mu
    return mu, d.T @ d / (f.shape[0] - 1)


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


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = KID_SUBSETS,
        subset_size: int = KID_SUBSET_SIZE, seed: int = 0) -> Tuple[float, float, int]:
    """KID (Binkowski et al. 2018): the unbiased MMD^2 with the kernel (x.y / D + 1)^3, averaged
    over ``subsets`` random subsets of ``subset_size`` of each side (fewer when a side is
    smaller); returns (mean, standard deviation over the subsets, the subset size used)."""
    m = min(subset_size, real.shape[0], fake.shape[0])
    if m < 2:
        raise ValueError("KID needs at least 2 samples on each side")
    x, y = real.to(torch.float64), fake.to(torch.float64)
    dim = x.shape[1]
    g = torch.Generator().manual_seed(seed)
    vals = torch.empty(subsets, dtype=torch.float64, device=x.device)
    for i in range(subsets):
        a = x[torch.randperm(x.shape[0], generator=g)[:m].to(x.device)]
        b = y[torch.randperm(y.shape[0], generator=g)[:m].to(y.device)]
        kxx = (a @ a.T / dim + 1) ** 3
        kyy = (b @ b.T / dim + 1) ** 3
        kxy = (a @ b.T / dim + 1) ** 3
        vals[i] = ((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
                   + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
                   - 2 * kxy.sum() / (m * m))
    mean_std = torch.stack([vals.mean(), vals.std(unbiased=False)]).tolist()   # one host read
    return mean_std[0], mean_std[1], m


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances [len(a), len(b)] in float64 (exact enough that a point's
    distance to itself is ~0, unlike float32's |a|^2 + |b|^2 - 2ab)."""
    d = a.square().sum(1, keepdim=True) + b.square().sum(1) - 2 * a @ b.T
    return d.clamp_min_(0)


def _knn_radii(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Squared distance of each row to its k-th nearest other row."""
    out = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
    for i in range(0, x.shape[0], chunk):
        d = _sq_dists(x[i:i + chunk], x)
        out[i:i + chunk] = d.kthvalue(k + 1, dim=1).values    # the 1st is the row itself
    return out


def _coverage(queries: torch.Tensor, ref: torch.Tensor, radii: torch.Tensor,
              chunk: int) -> float:
    """Fraction of ``queries`` inside at least one ball (``ref`` row, its squared radius)."""
    inside = 0
    for i in range(0, queries.shape[0], chunk):
        d = _sq_dists(queries[i:i + chunk], ref)
        inside += int((d <= radii).any(1).sum())
    return inside / queries.shape[0]


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = PR_K,
                     chunk: int = 0) -> Tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): precision, the fraction of
    generated samples within the k-NN radius of some real sample (realism); recall, the fraction
    of real samples within the k-NN radius of some generated sample (coverage). Both depend on
    the set sizes (a radius shrinks as its set grows): compare runs at equal sizes."""
    if real.shape[0] <= k or fake.shape[0] <= k:
        raise ValueError(f"precision/recall need more than k={k} samples on each side")
    x, y = real.to(torch.float64), fake.to(torch.float64)
    # rows per distance block: at most 2^25 float64 (256 MB) per temporary
    chunk = chunk or max(1, min(1024, (1 << 25) // max(x.shape[0], y.shape[0])))
    precision = _coverage(y, x, _knn_radii(x, k, chunk), chunk)
    recall = _coverage(x, y, _knn_radii(y, k, chunk), chunk)
    return precision, recall
