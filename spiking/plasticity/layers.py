"""Linear layer whose weight gradient is taken from the projected saved input.

``y = x Wᵀ`` forward; backward ``∂L/∂x = δ W`` (unprojected) and ``∂L/∂W = δᵀ x⊥`` with
``x⊥ = x − Hᵀ(H x)`` when a projector ``H`` is attached (HLOP), else ``δᵀ x``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .hebbian import projected_weight_grad

__all__ = ["ProjectedLinearFn", "HLOPLinear"]


class ProjectedLinearFn(torch.autograd.Function):
    """``forward(ctx, x, W, H, x_grad, stats)``: ``x Wᵀ``; the weight gradient is ``δᵀ x_grad⊥``.

    ``x_grad`` is the input the weight gradient is built from (``None``: ``x``; OTTT passes the
    presynaptic trace); ``H=None`` leaves it unprojected; ``stats`` (a dict or ``None``) collects
    the projection time.
    """

    @staticmethod
    def forward(ctx, x, W, H, x_grad, stats):
        ctx.save_for_backward(x if x_grad is None else x_grad, W, H)
        ctx.stats = stats
        return x @ W.t()

    @staticmethod
    def backward(ctx, delta):
        xg, W, H = ctx.saved_tensors
        grad_x = delta @ W if ctx.needs_input_grad[0] else None
        grad_W = projected_weight_grad(delta, xg, H, ctx.stats) if ctx.needs_input_grad[1] else None
        return grad_x, grad_W, None, None, None


class HLOPLinear(nn.Linear):
    """``nn.Linear`` without bias by default; ``projector`` (``H [M, in_features]`` or ``None``) is
    set by :class:`~spiking.plasticity.hlop.HLOP`. ``hebb_input`` holds the rows the Hebbian rule
    should see from the latest training forward (set by the network; ``None`` = the raw input);
    ``stats`` (a dict, set by HLOP) accumulates the projection time."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__(in_features, out_features, bias=bias)
        self.projector: Optional[torch.Tensor] = None
        self.hebb_input: Optional[torch.Tensor] = None
        self.stats: Optional[dict] = None

    def forward(self, x: torch.Tensor, x_grad: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x Wᵀ (+ b)``; ``x_grad`` (same shape as ``x``) replaces ``x`` in the weight gradient."""
        if (self.projector is None and x_grad is None) or not torch.is_grad_enabled():
            return nn.functional.linear(x, self.weight, self.bias)
        if x_grad is not None and x_grad.shape != x.shape:
            raise ValueError(f"x_grad must have the shape of x {tuple(x.shape)}, got {tuple(x_grad.shape)}")
        y = ProjectedLinearFn.apply(x, self.weight, self.projector,
                                    None if x_grad is None else x_grad.detach(), self.stats)
        return y + self.bias if self.bias is not None else y
