"""``lif_online(x, neuron)``: a soft-reset LIF over ``x [T, B, ...]`` whose gradient is cut in time.

The forward is the neuron's own multi-step LIF (fused where available); the backward keeps only
each step's own path, as if the membrane of the previous step were detached (OTTT, Xiao et al.
2022):

    ∂S_t/∂X_t = σ'(H_t − V_th) · ∂H_t/∂X_t      (∂H_t/∂X_t = 1, or 1/τ with ``decay_input``)
    ∂S_t/∂X_u = 0  for u ≠ t

with ``H_t = V_t + V_th S_t`` recovered from the membrane after the soft reset. This is the
gradient of running ``neuron.step(X_t, V_{t−1}.detach())`` for t = 1..T, in one call.
"""
from __future__ import annotations

import torch

from .functional import lif_multistep
from .module import LIF

__all__ = ["lif_online"]


class _OnlineLIF(torch.autograd.Function):
    """``forward(ctx, x, neuron)`` → spikes; backward ``g · σ'(H − V_th) · ∂H/∂X`` per step."""

    @staticmethod
    def forward(ctx, x, neuron):
        th = neuron.v_threshold
        s, v = lif_multistep(x, None, **neuron._params(), return_v=True, backend=neuron.backend,
                             check_finite=neuron.check_inputs)
        ctx.save_for_backward(torch.add(v, s, alpha=th).sub_(th))  # H_t − V_th = V_t + V_th (S_t − 1)
        ctx.neuron = neuron
        return s

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        neuron = ctx.neuron
        grad = g * neuron.surrogate.grad(z)
        return (grad.div_(neuron.tau) if neuron.decay_input else grad), None


def lif_online(x: torch.Tensor, neuron: LIF) -> torch.Tensor:
    """Spikes of ``neuron`` (a soft-reset :class:`~spiking.neuron.LIF` with a float threshold,
    starting from rest) on ``x [T, B, ...]``, with the per-step gradient of the module docstring."""
    if not isinstance(neuron, LIF) or neuron.v_reset is not None or isinstance(neuron.v_threshold, torch.Tensor):
        raise ValueError("neuron must be a soft-reset LIF (v_reset=None) with a float v_threshold: the "
                         "per-step gradient recovers H_t from V_t + V_th S_t")
    if x.dim() < 2:
        raise ValueError(f"x must be [T, B, ...], got shape {tuple(x.shape)}")
    return _OnlineLIF.apply(x, neuron)
