"""Pictures a run writes: sample grids (PNG, through Pillow) and the loss curve (SVG, no
plotting library needed). Both are written atomically."""
from __future__ import annotations

import math
import os
from typing import Dict, List, Optional

import numpy as np
import torch


def _atomic_write_bytes(path: str, data: bytes) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def grid_array(images: torch.Tensor, nrow: int, pad: int = 2) -> np.ndarray:
    """[N, C, H, W] floats in [0, 1] -> one uint8 HxWxC (or HxW) mosaic, ``nrow`` per row."""
    x = images.detach().float().clamp(0, 1).cpu()
    n, c, h, w = x.shape
    ncol = nrow
    nrows = math.ceil(n / ncol)
    out = torch.ones(c, nrows * (h + pad) + pad, ncol * (w + pad) + pad)
    for i in range(n):
        r, q = divmod(i, ncol)
        out[:, pad + r * (h + pad): pad + r * (h + pad) + h,
            pad + q * (w + pad): pad + q * (w + pad) + w] = x[i]
    arr = (out * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return arr[:, :, 0] if c == 1 else arr


def save_grid(images: torch.Tensor, path: str, nrow: Optional[int] = None) -> None:
    from io import BytesIO

    from PIL import Image

    nrow = nrow or max(1, int(math.ceil(math.sqrt(images.shape[0]))))
    buf = BytesIO()
    Image.fromarray(grid_array(images, nrow)).save(buf, format="PNG")
    _atomic_write_bytes(path, buf.getvalue())


def save_loss_curve(rows: List[Dict[str, float]], path: str,
                    keys=("d_loss", "g_loss")) -> None:
    """A small SVG line plot of ``keys`` against ``step``."""
    W, H, M = 720, 360, 48
    colors = {"d_loss": "#1f77b4", "g_loss": "#d62728", "d_real": "#2ca02c", "d_fake": "#ff7f0e"}
    pts = [r for r in rows if all(k in r and math.isfinite(r[k]) for k in keys)]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
             f'font-family="sans-serif" font-size="12">',
             f'<rect width="{W}" height="{H}" fill="white"/>']
    if pts:
        steps = [r["step"] for r in pts]
        vals = [r[k] for r in pts for k in keys]
        x0, x1 = min(steps), max(steps) if max(steps) > min(steps) else min(steps) + 1
        y0, y1 = min(vals), max(vals) if max(vals) > min(vals) else min(vals) + 1

        def sx(s):
            return M + (s - x0) / (x1 - x0) * (W - 2 * M)

        def sy(v):
            return H - M - (v - y0) / (y1 - y0) * (H - 2 * M)

        parts.append(f'<line x1="{M}" y1="{H-M}" x2="{W-M}" y2="{H-M}" stroke="black"/>')
        parts.append(f'<line x1="{M}" y1="{M}" x2="{M}" y2="{H-M}" stroke="black"/>')
        parts.append(f'<text x="{M}" y="{H-M+16}">{x0}</text>'
                     f'<text x="{W-M}" y="{H-M+16}" text-anchor="end">{x1} steps</text>'
                     f'<text x="{M-4}" y="{H-M}" text-anchor="end">{y0:.3g}</text>'
                     f'<text x="{M-4}" y="{M+4}" text-anchor="end">{y1:.3g}</text>')
        for j, k in enumerate(keys):
            poly = " ".join(f"{sx(r['step']):.1f},{sy(r[k]):.1f}" for r in pts)
            col = colors.get(k, "#444")
            parts.append(f'<polyline fill="none" stroke="{col}" stroke-width="1.5" '
                         f'points="{poly}"/>')
            parts.append(f'<text x="{W-M-100}" y="{M+16*j}" fill="{col}">{k}</text>')
    else:
        parts.append(f'<text x="{W//2}" y="{H//2}" text-anchor="middle">no finite losses '
                     'logged</text>')
    parts.append("</svg>")
    _atomic_write_bytes(path, "\n".join(parts).encode())
