"""The InceptionV3 of standard FID, from a local weights file: pytorch-fid's network definition
(the optional extra ``fastgan[fid]``) given the ``pt_inception-2015-12-05`` weights by path,
never downloaded. Features: the 2048-wide final average pool of images in [0, 1] of any size
(bilinearly resized to 299 x 299 by pytorch-fid), gray images repeated to three channels.

The file is data, never code: it is read with ``torch.load(weights_only=True)`` (pytorch-fid's
own loader would unpickle it), and a file that is not this network's weights is refused with one
line. Weights whose SHA-256 is not the published file's still run (a fine-tuned or a test
network) but are reported as non-standard: their FID is not comparable with published numbers.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

ENV = "FASTGAN_INCEPTION_WEIGHTS"
FILE_NAME = "pt_inception-2015-12-05-6726825d.pth"
URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FILE_NAME
STANDARD_SHA256_PREFIX = "6726825d"       # pytorch-fid names the file by its hash prefix
FEATURE_DIM = 2048
BATCH = 100

_nets: Dict[Tuple[str, int, int, str], "InceptionFeatures"] = {}
_digests: Dict[Tuple[str, int, int], str] = {}


class InceptionError(Exception):
    """The weights are missing, unreadable or not InceptionV3's, or pytorch-fid is not
    installed (one line: problem and fix)."""


def weights_path(given: Optional[str], source: str = "--inception-weights") -> Optional[Path]:
    """The weights file, resolved: ``given`` (from ``source``, by default the option), else
    $FASTGAN_INCEPTION_WEIGHTS, else None (standard FID not asked for)."""
    p = given or os.environ.get(ENV) or None
    if p is None:
        return None
    path = Path(p).expanduser()
    if not path.is_file():
        where = source if given else f"${ENV}"
        what = "a folder, not a file" if path.is_dir() else "no such file"
        raise InceptionError(
            f"{where} {p}: {what}; download {FILE_NAME} once ({URL}) and pass its path "
            f"with --inception-weights FILE or ${ENV}")
    return path.resolve()


def missing_weights_hint() -> str:
    return (f"standard FID/KID need the InceptionV3 weights {FILE_NAME} (download once from "
            f"{URL}; torch-fidelity's weights-inception-2015-12-05-6726825d.pth is the same "
            f"file), passed with --inception-weights FILE or ${ENV}")


def _digest(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _digests:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _digests[key] = h.hexdigest()
    return _digests[key]


def _pytorch_fid():
    try:
        import pytorch_fid.inception as fid_inception
    except Exception as e:   # ImportError, or torchvision not matching torch
        raise InceptionError(
            f"--inception-weights needs pytorch-fid and torchvision ({type(e).__name__}: {e}); "
            "install them with: pip install 'fastgan[fid]'") from None
    return fid_inception


def _read_state(path: Path) -> Dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InceptionError(f"--inception-weights {path}: not a readable PyTorch weights file "
                             f"({type(e).__name__}); expected {FILE_NAME} ({URL})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise InceptionError(f"--inception-weights {path}: not a state dict of tensors; "
                             f"expected {FILE_NAME} ({URL})")
    state = dict(state)
    # Files written before BatchNorm counted its batches lack these (unused in eval mode).
    for k in [k for k in state if k.endswith(".bn.running_var")]:
        state.setdefault(k[:-len("running_var")] + "num_batches_tracked",
                         torch.tensor(0, dtype=torch.long))
    return state


def _build(path: Path, state: Dict[str, torch.Tensor]):
    """pytorch-fid's InceptionV3 (block 3, resize to 299, [0, 1] -> [-1, 1]) with ``state`` in
    place of its download: its own definition, its own FID-specific blocks."""
    from unittest import mock
    fid_inception = _pytorch_fid()
    try:
        with mock.patch.object(fid_inception, "load_state_dict_from_url",
                               lambda *a, **k: state):
            return fid_inception.InceptionV3([fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[
                FEATURE_DIM]])
    except InceptionError:
        raise
    except Exception as e:     # load_state_dict: missing / unexpected keys, wrong shapes
        first = str(e).splitlines()[1].strip() if "\n" in str(e) else str(e)
        raise InceptionError(f"--inception-weights {path}: not the InceptionV3 FID weights "
                             f"({first[:160]}); expected {FILE_NAME} ({URL})") from None


class InceptionFeatures:
    """The pool3 features of images in [0, 1]; ``digest`` keys the real-statistics cache."""

    name = "inception"
    dim = FEATURE_DIM

    def __init__(self, path: Path, device):
        self.path = path.resolve()
        self.digest = _digest(path)
        self.standard = self.digest.startswith(STANDARD_SHA256_PREFIX)
        self.net = _build(path, _read_state(path)).eval().to(device)
        self.device = torch.device(device)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 2048] float32 of N x C x H x W images in [0, 1] (C = 1 or 3), rounded to 8 bits
        first, as the saved images other tools compute FID from are (real uint8 data is
        unchanged)."""
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"InceptionV3 takes 1- or 3-channel images, not {tuple(x.shape)}")
        x = (x.float().clamp(0, 1) * 255).round() / 255
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        # Full float32: TF32 convolutions would move the features of the reference network.
        from fastgan.backends import tf32
        with tf32(False):
            out = [self.net(x[i:i + BATCH].to(self.device))[0].flatten(1)
                   for i in range(0, x.shape[0], BATCH)]
        return torch.cat(out)


def load_inception(path: Path, device) -> InceptionFeatures:
    """The network of ``path`` on ``device``, built once per process (per file version)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, str(device))
    if key not in _nets:
        _nets[key] = InceptionFeatures(path, device)
    return _nets[key]
