"""``Linear``: ``nn.Linear`` whose step costs the fewest dispatched ops (the runner's models).

    y = x Wᵀ (+ b)            ∂L/∂x = δ W,     ∂L/∂W = δᵀ x

The same products autograd's ``linear`` runs (so the same values, bit for bit), issued directly:
``Wᵀ`` is a kept view (the optimizer updates ``W`` in place), inputs with more than two dims are
viewed as rows. Autograd's version adds a transpose op per product and per gradient; over a step
of a 3-layer network that is about a fifth of the ops (see ``bench/step_overhead.py``).
"""
from __future__ import annotations

import torch
from torch import nn

from .kernels.spike_matmul import weight_rows

__all__ = ["Linear", "LinearFn"]


class LinearFn(torch.autograd.Function):
    """``forward(ctx, x, W, layer)`` with ``x [rows, in]``, ``W [out, in]`` the weight of ``layer``
    (a :class:`Linear`, whose kept ``Wᵀ`` view is used inside, where autograd is off)."""

    @staticmethod
    def forward(ctx, x, W, layer):
        ctx.save_for_backward(x, W)
        return torch.mm(x, layer.weight_t())

    @staticmethod
    def backward(ctx, g):
        x, W = ctx.saved_tensors
        gx = torch.mm(g, W) if ctx.needs_input_grad[0] else None
        gW = torch.mm(g.t(), x) if ctx.needs_input_grad[1] else None  # autograd's mm backward for Wᵀ
        return gx, gW, None


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, hooks and state dict) computed through :class:`LinearFn`."""

    def weight_t(self) -> torch.Tensor:
        """``Wᵀ`` as a view without autograd history, kept while the weight's storage stays (the
        optimizer updates it in place): no transpose op per call. Not kept from inference mode."""
        w = self.weight
        key = (id(w), w.data_ptr())
        cached = getattr(self, "_weight_t", None)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cached = (key, w.t())
            if torch.is_inference_mode_enabled():
                return cached[1]
            self._weight_t = cached
        return cached[1]

    def weight_t_contiguous(self) -> torch.Tensor:
        """``Wᵀ`` as a contiguous ``[in, out]`` tensor without autograd history (row ``k``: the
        weights leaving input ``k``, what an event-driven product reads), kept until the weight
        changes (its version): one copy per optimizer step, none per evaluation batch."""
        w = self.weight
        if w.is_inference():  # no version counter to key on
            return weight_rows(w)
        key = (id(w), w.data_ptr(), w._version)
        cached = getattr(self, "_weight_rows", None)
        if cached is None or cached[0] != key:
            with torch.inference_mode(False), torch.no_grad():  # a normal tensor, usable anywhere
                cached = self._weight_rows = (key, weight_rows(w))
        return cached[1]

    def __getstate__(self):  # copies and pickles rebuild the kept view from their own weight
        state = self.__dict__.copy()
        state.pop("_weight_t", None)
        state.pop("_weight_rows", None)
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            y = LinearFn.apply(rows, self.weight, self)
        else:
            y = torch.mm(rows, self.weight_t())
        if x.dim() != 2:
            y = y.view(*x.shape[:-1], y.shape[-1])
        return y if self.bias is None else y + self.bias
