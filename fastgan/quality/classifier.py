"""The digit classifier behind fastgan's quality metrics: a LeNet-like CNN, how it is trained
(`fastgan classifier train`), and the weights that ship inside the package.

Its 128-wide penultimate layer is the feature space of FID-MNIST; its softmax gives conditional
accuracy, confidence and mode coverage. It takes images in [0, 1], N x 1 x 28 x 28 (what
``Variant.sample`` returns), so no PNG round trip is needed.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

WEIGHTS_FILE = Path(__file__).with_name("assets") / "lenet_mnist.pt"
FEATURE_DIM = 128


class DigitClassifier(nn.Module):
    """conv5x5(32) - pool - conv5x5(64) - pool - fc(128) = features - fc(10)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)    # 28 -> 28 -> pool 14
        self.conv2 = nn.Conv2d(32, 64, 5)              # 14 -> 10 -> pool 5
        self.fc1 = nn.Linear(64 * 5 * 5, FEATURE_DIM)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations [N, 128] of images in [0, 1]."""
        h = (x - 0.5) / 0.5
        h = F.max_pool2d(F.relu(self.conv1(h)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc1(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.features(x)))

    @torch.no_grad()
    def features_and_logits(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return f, self.fc2(f)


class ClassifierError(Exception):
    """The classifier's weights are missing or unreadable (one line: problem and fix;
    ``detail``: PyTorch's own text, for --verbose)."""

    def __init__(self, msg: str, detail: Optional[str] = None):
        super().__init__(msg)
        self.detail = detail


def weights_digest(state: Dict[str, torch.Tensor]) -> str:
    """A short hash of the weights: keys the cached real-data statistics."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


_CACHE: Dict[Tuple[str, str], Tuple[DigitClassifier, dict]] = {}


def load_classifier(device="cpu", path: Optional[str] = None
                    ) -> Tuple[DigitClassifier, dict]:
    """(the classifier in eval mode on ``device``, its metadata incl. ``digest``)."""
    path = str(path or WEIGHTS_FILE)
    key = (path, str(device))
    if key in _CACHE:
        return _CACHE[key]
    if not os.path.exists(path):
        raise ClassifierError(f"the digit classifier's weights {path} are missing: reinstall "
                              "fastgan or train them with `fastgan classifier train`")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v.to(torch.float32) for k, v in blob["state_dict"].items()}
        meta = json.loads(blob["meta"])
        model = DigitClassifier()
        model.load_state_dict(state)
    except Exception as e:  # any unreadable/corrupt file: one clear line
        # weights_only: a file holding Python objects (a crafted pickle) is refused unrun.
        why = ("it holds Python objects a weights file never holds (refused, nothing in it was "
               "run)" if "weights_only" in str(e) or "Unsupported global" in str(e) else
               f"{type(e).__name__}: {' '.join(str(e).split())[:120]}")
        raise ClassifierError(f"cannot read the classifier weights {path} ({why}); reinstall "
                              "fastgan or retrain them with `fastgan classifier train`",
                              detail=f"{type(e).__name__}: {e}") from None
    meta["digest"] = weights_digest(model.state_dict())
    model.eval().requires_grad_(False).to(device)
    _CACHE[key] = (model, meta)
    return model, meta


# ------------------------------------------------------------------------------- training

@dataclass
class ClassifierTrainConfig:
    epochs: int = 15
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    augment: bool = True


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Small random affine jitter (rotation +-10 deg, scale 0.9-1.1, shift +-2 px): with
    ~10,000 training digits it is worth about half a point of accuracy."""
    n = x.shape[0]
    ang = (torch.rand(n, generator=g) * 2 - 1) * math.radians(10)
    sc = 1 + (torch.rand(n, generator=g) * 2 - 1) * 0.1
    sh = (torch.rand(n, 2, generator=g) * 2 - 1) * (2 / 14)    # 2 px in [-1, 1] coordinates
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack([torch.stack([cos, -sin, sh[:, 0]], 1),
                         torch.stack([sin, cos, sh[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


@torch.no_grad()
def accuracy(model: DigitClassifier, images_u8: torch.Tensor, labels: torch.Tensor,
             batch: int = 1000) -> float:
    model.eval()
    right = 0
    for i in range(0, images_u8.shape[0], batch):
        x = images_u8[i:i + batch].float() / 255
        right += int((model(x).argmax(1) == labels[i:i + batch]).sum())
    return right / images_u8.shape[0]


def train_classifier(train_x: torch.Tensor, train_y: torch.Tensor, cfg: ClassifierTrainConfig,
                     log=print) -> DigitClassifier:
    """Train on uint8 images [N, 1, 28, 28] on the CPU, deterministically for a seed."""
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    model = DigitClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    n = train_x.shape[0]
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, epochs=cfg.epochs,
                                                steps_per_epoch=steps_per_epoch)
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(n, generator=g)
        t0, total = time.time(), 0.0
        for i in range(0, n, cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            x = train_x[idx].float() / 255
            if cfg.augment:
                x = _augment(x, g)
            loss = F.cross_entropy(model(x), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * idx.numel()
        log(f"epoch {epoch + 1}/{cfg.epochs}: loss {total / n:.4f} ({time.time() - t0:.1f}s)")
    return model.eval()


def save_classifier(model: DigitClassifier, meta: dict, path: str) -> None:
    """Weights in float16 (half the size; the metadata's accuracy is measured on exactly these
    rounded weights), written atomically."""
    state = {k: v.detach().to(torch.float16).cpu() for k, v in model.state_dict().items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save({"state_dict": state, "meta": json.dumps(meta, indent=1)}, tmp)
    os.replace(tmp, path)


def round_trip(model: DigitClassifier) -> DigitClassifier:
    """The model as it will be loaded from the shipped float16 file."""
    m = DigitClassifier()
    m.load_state_dict({k: v.to(torch.float16).to(torch.float32)
                       for k, v in model.state_dict().items()})
    return m.eval()
