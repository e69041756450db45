"""DiffAugment (fastgan/nn/diffaugment.py) against a transcription of the official
DiffAugment_pytorch.py (Zhao et al. 2020) fed the same random draws, in float64; gradients,
shapes and dtypes, the draws from the given generator, no host syncs."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastgan.benchmark.kernel_count import count_work
from fastgan.nn.diffaugment import DiffAugment, parse_policy


# ---- the official code, its torch.rand / torch.randint calls replaced by the given draws


def off_brightness(x, u):
    return x + (u.view(-1, 1, 1, 1) - 0.5)


def off_saturation(x, u):
    x_mean = x.mean(dim=1, keepdim=True)
    return (x - x_mean) * (u.view(-1, 1, 1, 1) * 2) + x_mean


def off_contrast(x, u):
    x_mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - x_mean) * (u.view(-1, 1, 1, 1) + 0.5) + x_mean


def off_translation(x, translation_x, translation_y):
    translation_x, translation_y = translation_x.view(-1, 1, 1), translation_y.view(-1, 1, 1)
    grid_batch, grid_x, grid_y = torch.meshgrid(
        torch.arange(x.size(0), dtype=torch.long), torch.arange(x.size(2), dtype=torch.long),
        torch.arange(x.size(3), dtype=torch.long), indexing="ij")
    grid_x = torch.clamp(grid_x + translation_x + 1, 0, x.size(2) + 1)
    grid_y = torch.clamp(grid_y + translation_y + 1, 0, x.size(3) + 1)
    x_pad = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return x_pad.permute(0, 2, 3, 1).contiguous()[grid_batch, grid_x, grid_y].permute(0, 3, 1, 2)


def off_cutout(x, offset_x, offset_y, ratio=0.5):
    offset_x, offset_y = offset_x.view(-1, 1, 1), offset_y.view(-1, 1, 1)
    cutout_size = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    grid_batch, grid_x, grid_y = torch.meshgrid(
        torch.arange(x.size(0), dtype=torch.long), torch.arange(cutout_size[0], dtype=torch.long),
        torch.arange(cutout_size[1], dtype=torch.long), indexing="ij")
    grid_x = torch.clamp(grid_x + offset_x - cutout_size[0] // 2, min=0, max=x.size(2) - 1)
    grid_y = torch.clamp(grid_y + offset_y - cutout_size[1] // 2, min=0, max=x.size(3) - 1)
    mask = torch.ones(x.size(0), x.size(2), x.size(3), dtype=x.dtype)
    mask[grid_batch, grid_x, grid_y] = 0
    return x * mask.unsqueeze(1)


def official(x, policy, d):
    for p in policy:
        if p == "color":
            x = off_brightness(x, d.brightness + 0.5)
            x = off_saturation(x, d.saturation / 2)
            x = off_contrast(x, d.contrast - 0.5)
        elif p == "translation":
            x = off_translation(x, d.tx, d.ty)
        else:
            x = off_cutout(x, d.ox, d.oy)
    return x


SHAPES = [(5, 3, 9, 7), (4, 1, 8, 8), (3, 2, 11, 16)]
POLICIES = ["color", "translation", "cutout", "translation,cutout,color", "color,translation,cutout"]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_official_float64(shape, policy):
    aug = DiffAugment(policy)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(shape, dtype=torch.float64, generator=g) * 2 - 1
    for _ in range(4):
        d = aug.draw(x, g)
        got = aug.apply(x, d)
        want = official(x, aug.policy, d)
        assert got.shape == x.shape and got.dtype == x.dtype
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_draws_cover_the_official_ranges():
    aug = DiffAugment("translation,cutout,color")
    x = torch.zeros(4000, 3, 9, 16)
    d = aug.draw(x, torch.Generator().manual_seed(0))
    # shifts: int(9 * 0.125 + 0.5) = 1, int(16 * 0.125 + 0.5) = 2; cutout: 5 (odd) and 8 (even)
    assert set(d.tx.tolist()) == {-1, 0, 1} and set(d.ty.tolist()) == {-2, -1, 0, 1, 2}
    assert set(d.ox.tolist()) == set(range(9)) and set(d.oy.tolist()) == set(range(17))
    for v, lo, hi in ((d.brightness, -0.5, 0.5), (d.saturation, 0, 2), (d.contrast, 0.5, 1.5)):
        assert lo <= v.min() and v.max() < hi and v.dtype == torch.float32


def test_same_generator_state_same_result_and_it_advances():
    aug = DiffAugment("translation,cutout,color")
    x = torch.randn(6, 3, 8, 8)
    g = torch.Generator().manual_seed(5)
    s = g.get_state()
    a = aug(x, g)
    b = aug(x, g)
    g.set_state(s)
    assert torch.equal(aug(x, g), a) and not torch.equal(a, b)


def test_gray_color_skips_saturation_only():
    aug = DiffAugment("color")
    x = torch.rand(4, 1, 6, 6, dtype=torch.float64) * 2 - 1
    d = aug.draw(x, torch.Generator().manual_seed(1))
    want = off_contrast(off_brightness(x, d.brightness + 0.5), d.contrast - 0.5)
    torch.testing.assert_close(aug.apply(x, d), want, rtol=1e-12, atol=1e-12)
    # brightness and contrast do act on gray images
    assert not torch.allclose(aug.apply(x, d), x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_gradients_flow_and_dtype_kept(dtype):
    aug = DiffAugment("translation,cutout,color")
    x = (torch.rand(3, 3, 8, 8) * 2 - 1).to(dtype).requires_grad_()
    y = aug(x, torch.Generator().manual_seed(2))
    assert y.dtype == dtype and y.shape == x.shape
    y.square().sum().backward()
    assert x.grad is not None and x.grad.dtype == dtype and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


def test_gradcheck_given_draws():
    aug = DiffAugment("color,translation,cutout")
    x = (torch.rand(2, 3, 5, 6, dtype=torch.float64) * 2 - 1).requires_grad_()
    d = aug.draw(x, torch.Generator().manual_seed(4))
    assert torch.autograd.gradcheck(lambda a: aug.apply(a, d), (x,))


def test_no_host_sync_and_a_fixed_kernel_count():
    aug = DiffAugment("translation,cutout,color")
    counts = []
    for b in (2, 16):
        x = torch.randn(b, 3, 8, 8, requires_grad=True)
        g = torch.Generator().manual_seed(0)
        w = count_work(lambda: aug(x, g).sum().backward())
        assert w["host_syncs"] == 0
        counts.append(w["kernels"])
    assert counts[0] == counts[1]


def test_policy_errors():
    assert parse_policy("translation, cutout,color") == ("translation", "cutout", "color")
    assert parse_policy("") == ()
    with pytest.raises(ValueError, match="unknown policy 'flip'"):
        parse_policy("translation,flip")
    with pytest.raises(ValueError, match="repeated"):
        parse_policy("color,color")
    with pytest.raises(ValueError, match="N, C, H, W"):
        DiffAugment("color").apply(torch.randn(3, 4), None)
