"""``cross_entropy(z, y)``: mean cross-entropy over integer class targets in four dispatched ops.

    L = −(1/B) Σ_b log softmax(z_b)[y_b]        ∂L/∂z_b = (softmax(z_b) − e_{y_b}) · ∂/B

The same aten kernels as ``F.cross_entropy`` (``_log_softmax`` and ``nll_loss_forward`` forward,
``nll_loss_backward`` and ``_log_softmax_backward_data`` backward: the same values, bit for bit),
issued by one autograd function: autograd's version adds a ``detach`` per saved output, two ops of
a step. Targets other than an int64 class index per row (probabilities, extra dims) go through
``F.cross_entropy``; a second derivative (``create_graph``) raises.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = ["cross_entropy", "CrossEntropyFn"]

_MEAN = 1  # at::Reduction::Mean
_IGNORE = -100  # F.cross_entropy's default ignore_index


class CrossEntropyFn(torch.autograd.Function):
    """``forward(ctx, z [B, C], y int64 [B])`` → the mean loss (0-dim)."""

    @staticmethod
    def forward(ctx, z, y):
        lsm = torch.ops.aten._log_softmax(z, 1, False)
        loss, total_weight = torch.ops.aten.nll_loss_forward(lsm, y, None, _MEAN, _IGNORE)
        ctx.save_for_backward(lsm, y, total_weight)
        ctx.z_dtype = z.dtype
        return loss

    @staticmethod
    @once_differentiable  # a second derivative raises instead of coming out wrong
    def backward(ctx, g):
        lsm, y, total_weight = ctx.saved_tensors
        g_lsm = torch.ops.aten.nll_loss_backward(g, lsm, y, None, _MEAN, _IGNORE, total_weight)
        return torch.ops.aten._log_softmax_backward_data(g_lsm, lsm, 1, ctx.z_dtype), None


def cross_entropy(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``F.cross_entropy(z, y)`` (mean over rows) through :class:`CrossEntropyFn` where it applies."""
    if z.dim() != 2 or y.dim() != 1 or y.dtype != torch.int64 or not (torch.is_grad_enabled() and z.requires_grad):
        return F.cross_entropy(z, y)
    return CrossEntropyFn.apply(z, y)
