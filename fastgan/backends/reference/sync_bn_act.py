"""sync_bn_act, reference: training-mode ``act(batch_norm(x))`` with batch statistics over every
rank of a process group (synchronized BatchNorm), running statistics updated in place.

An optional op (``fastgan.ops.OPTIONAL_OPS``): only this backend implements it, every other one
falls back here without a warning."""
from __future__ import annotations

import torch
import torch.distributed as dist

from fastgan.ops.activation import act
from fastgan.ops.registry import register

from ._devices import ALL_DEVICES


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward sums the gradients over ranks (every rank's loss depends
    on every rank's contribution)."""

    @staticmethod
    def forward(ctx, t, group):
        ctx.group = group
        out = t.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        return _AllReduceSum.apply(grad, ctx.group), None


def sync_bn_act(x, weight, bias, running_mean, running_var, momentum, eps, slope,
                group=None, unbiased_running_var: bool = True) -> torch.Tensor:
    """Training-mode BN with statistics over every rank's batch, then the activation.

    Each rank computes its own mean and centred sum of squares (two-pass, in fp32, or fp64 for
    fp64 input); one differentiable all-reduce of a (world, 2C+1) table gives every rank all of
    them, combined exactly (Chan et al.). The all-reduce's backward all-reduces the gradients,
    so dX on each rank includes the other ranks' losses' dependence on the shared statistics."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    C = x.shape[1]
    dims = [0] + list(range(2, x.dim()))
    shape = [1, C] + [1] * (x.dim() - 2)
    x32 = x.to(torch.promote_types(x.dtype, torch.float32))   # bf16 -> fp32; fp64 stays
    n_local = x32.numel() // C
    mean_l = x32.mean(dims)
    m2_l = (x32 - mean_l.view(shape)).pow(2).sum(dims)
    row = torch.cat([mean_l, m2_l, mean_l.new_full((1,), float(n_local))])
    rows = [row if r == rank else torch.zeros_like(row) for r in range(world)]
    table = _AllReduceSum.apply(torch.stack(rows), group)
    means, m2s, ns = table[:, :C], table[:, C:2 * C], table[:, 2 * C:]
    n = ns.sum()
    mean = (ns * means).sum(0) / n
    m2 = m2s.sum(0) + (ns * (means - mean).pow(2)).sum(0)
    var = m2 / n
    y = (x32 - mean.view(shape)) * torch.rsqrt(var + eps).view(shape)
    if weight is not None:
        y = y * weight.to(x32.dtype).view(shape)
    if bias is not None:
        y = y + bias.to(x32.dtype).view(shape)
    if running_mean is not None and running_var is not None:
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(mean.detach() * momentum)
            corr = n / (n - 1) if unbiased_running_var else 1.0
            running_var.mul_(1 - momentum).add_(var.detach() * corr * momentum)
    return act(y, slope).to(x.dtype)


register("sync_bn_act", "reference", ALL_DEVICES, sync_bn_act)
