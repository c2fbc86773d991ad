"""Linear layer whose weight gradient is taken from the projected saved input.

``y = x Wᵀ`` forward; backward ``∂L/∂x = δ W`` (unprojected) and ``∂L/∂W = δᵀ x⊥`` with
``x⊥ = x − Hᵀ(H x)`` when a :class:`~spiking.plasticity.projector.Projector` is attached (HLOP),
else ``δᵀ x``. When the Hebbian rule of the layer sees the same rows as the weight gradient
(``hebb_is_grad_input``), the backward pass keeps ``x⊥`` as ``residual``: it is also the frozen
rows' residual the Oja update needs, so it is computed once per batch.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..linear import Linear
from .projector import Projector

__all__ = ["ProjectedLinearFn", "HLOPLinear"]


class ProjectedLinearFn(torch.autograd.Function):
    """``forward(ctx, x, W, projector, x_grad, layer, graph_only=False)``: ``x Wᵀ``; the weight
    gradient is ``δᵀ x_grad⊥``. ``graph_only``: the output's value is not read (only its gradient
    path is), so the product is skipped and zeros of its shape (a broadcast view) are returned.

    ``x_grad`` is the input the weight gradient is built from (``None``: ``x``; OTTT passes the
    presynaptic trace); ``projector=None`` leaves it unprojected. ``layer`` (an :class:`HLOPLinear`
    or ``None``) receives the projection time in ``layer.stats`` and, if its
    ``hebb_is_grad_input``, the projected rows in ``layer.residual``.
    """

    @staticmethod
    def forward(ctx, x, W, projector, x_grad, layer, graph_only=False):
        ctx.save_for_backward(x if x_grad is None else x_grad, W)
        ctx.projector, ctx.layer = projector, layer
        ctx.keep = layer is not None and layer.hebb_is_grad_input
        if graph_only:
            return x.new_zeros(()).expand(*x.shape[:-1], W.shape[0])
        Wt = layer.weight_t() if layer is not None and layer.weight is W else W.t()
        return torch.mm(x, Wt) if x.dim() == 2 else x @ Wt

    @staticmethod
    def backward(ctx, delta):
        xg, W = ctx.saved_tensors
        grad_x = delta @ W if ctx.needs_input_grad[0] else None
        grad_W = None
        if ctx.needs_input_grad[1]:
            if ctx.projector is None:
                grad_W = delta.reshape(-1, delta.shape[-1]).t() @ xg.reshape(-1, xg.shape[-1])
            else:
                stats = None if ctx.layer is None else ctx.layer.stats
                grad_W, kept = ctx.projector.weight_grad(delta, xg, stats, keep_input=ctx.keep)
                if ctx.keep:
                    ctx.layer.residual = kept
        return grad_x, grad_W, None, None, None, None


class HLOPLinear(Linear):
    """``nn.Linear`` without bias by default, with the state HLOP needs.

    ``projector`` (a :class:`Projector` or ``None``) is set by :class:`~spiking.plasticity.hlop.HLOP`.
    The Hebbian rule sees ``last_input`` (the weight-gradient input of the latest training forward,
    as rows ``[*, in]`` when projected) when ``hebb_is_grad_input``, else ``hebb_input`` (set by the network, e.g. DSR's weighted rate);
    ``residual`` is ``last_input``'s projection kept by the backward pass; ``stats`` (a dict, set
    by HLOP) accumulates the projection time.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__(in_features, out_features, bias=bias)
        self.projector: Optional[Projector] = None
        self.hebb_is_grad_input = True
        self.hebb_input: Optional[torch.Tensor] = None
        self.last_input: Optional[torch.Tensor] = None
        self.residual: Optional[torch.Tensor] = None
        self.stats: Optional[dict] = None

    def forward(self, x: torch.Tensor, x_grad: Optional[torch.Tensor] = None, graph_only: bool = False) -> torch.Tensor:
        """``x Wᵀ (+ b)``; ``x_grad`` (same shape as ``x``) replaces ``x`` in the weight gradient.

        ``graph_only`` (no bias; while a gradient is recorded): the caller reads only the output's
        gradient path, not its value (DSR's hidden rate graph), so the product is skipped and the
        output is zeros; the backward pass is unchanged."""
        if x_grad is not None and x_grad.shape != x.shape:
            raise ValueError(f"x_grad must have the shape of x {tuple(x.shape)}, got {tuple(x_grad.shape)}")
        graph_only = graph_only and self.bias is None and torch.is_grad_enabled() and \
            (x.requires_grad or self.weight.requires_grad)
        if (self.projector is None and x_grad is None and not graph_only) or not torch.is_grad_enabled():
            if self.training:  # kept for the Hebbian rule, read under no_grad (no detach op needed)
                self.last_input, self.residual = x, None
            return super().forward(x)
        # as rows [*, in], like Linear: the backward and the Hebbian rule then need no reshape of their own
        rows = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
        if x_grad is not None:
            x_grad = x_grad.detach() if x_grad.requires_grad else x_grad
            x_grad = x_grad if x_grad.dim() == 2 else x_grad.reshape(rows.shape)
        if self.training:
            self.last_input, self.residual = (rows if x_grad is None else x_grad), None
        y = ProjectedLinearFn.apply(rows, self.weight, self.projector, x_grad, self, graph_only)
        if x.dim() != 2:
            y = y.view(*x.shape[:-1], y.shape[-1])
        return y + self.bias if self.bias is not None else y
