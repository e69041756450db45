"""dcgan's roofline floor (issue 21) counts the FLOPs the iteration really runs: every
convolution's forward (2·N·C_in·C_out·k²·H·W, H·W the output's for a conv and the input's for a
transposed conv), and in the backward its two matmul-equivalents, dX and dW, each as large as
the forward, where they are needed. One iteration:

  D step   G forward on n (no grad, the fakes); D forward on [real; fake] = 2n in one grouped
           pass; D backward on 2n: dW for every layer, dX for all but the first (the images
           need no gradient)
  G step   no G forward of its own (dcgan's G step reuses the D step's fakes, whose forward
           then keeps its graph); D forward on n; D backward with D frozen: dX for every layer
           (the fakes need one), no dW; G backward: dW for every layer, dX for all but the
           first (the noise needs none)

The count here is computed from the layer shapes by hand and must equal the counter's (which
runs Engine.step under FakeTensorMode), in both memory formats; bf16 halves the activation bytes
and nothing else."""
from __future__ import annotations

import pytest

from fastgan.benchmark.roofline import count_iteration

CFG = dict(image_size=32, ngf=8, ndf=8)   # 32 = 4·2³: four layers each


def _per_sample(image_size=32, ngf=8, ndf=8, nz=100, c=3, k=4):
    """Forward FLOPs per sample of each conv of G and of D, in order."""
    n = (image_size // 4).bit_length() - 1
    g, ch, hw = [], ngf * 2 ** (n - 1), 1
    g.append(2 * nz * ch * k * k * hw * hw)            # ConvT z -> 4x4 (input 1x1)
    hw = 4
    for _ in range(n - 1):
        g.append(2 * ch * (ch // 2) * k * k * hw * hw)  # ConvT: the input's H·W
        ch //= 2
        hw *= 2
    g.append(2 * ch * c * k * k * hw * hw)
    d, ch, hw = [], ndf, image_size // 2
    d.append(2 * c * ch * k * k * hw * hw)              # Conv: the output's H·W
    for _ in range(n - 1):
        hw //= 2
        d.append(2 * ch * 2 * ch * k * k * hw * hw)
        ch *= 2
    d.append(2 * ch * 1 * k * k * 1 * 1)                # the final 4x4 conv to one logit
    return g, d


def _expected(b):
    g, d = _per_sample(**CFG)
    G, D = sum(g), sum(d)
    d_step = b * G + 2 * b * D + 2 * b * D + 2 * b * (D - d[0])
    g_step = b * D + b * D + b * G + b * (G - g[0])
    return d_step, g_step


@pytest.mark.parametrize("memory_format", ["nchw", "channels_last"])
@pytest.mark.parametrize("b", [4, 16])
def test_dcgan_flops_are_the_layers(b, memory_format):
    c = count_iteration("dcgan", b, memory_format=memory_format, **CFG)
    d_step, g_step = _expected(b)
    assert c.flops_d_step == d_step
    assert c.flops_g_step == g_step
    assert c.flops == d_step + g_step


def test_dcgan_seed_size_count():
    """64x64, ngf = ndf = 64, batch 128: 291.15 GFLOP an iteration (the issue's figure)."""
    c = count_iteration("dcgan", 128)
    g, d = _per_sample(64, 64, 64)
    G, D, b = sum(g), sum(d), 128
    assert c.flops == (b * G + 4 * b * D + 2 * b * (D - d[0])
                       + 2 * b * D + b * G + b * (G - g[0]))
    assert abs(c.flops / 1e9 - 291.15) < 0.01


def test_dcgan_bf16_bytes():
    f, h = count_iteration("dcgan", 16, **CFG), count_iteration("dcgan", 16, "bf16", **CFG)
    assert h.flops == f.flops
    assert 2 * h.bytes_parts["activations"] == f.bytes_parts["activations"]
    for k in ("optimizer", "weights", "data"):       # fp32 parameters, Adam state and gather
        assert h.bytes_parts[k] == f.bytes_parts[k]
    assert h.bytes < f.bytes
