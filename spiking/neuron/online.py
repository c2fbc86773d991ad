"""``lif_online(x, neuron)``: a soft-reset LIF over ``x [T, B, ...]`` whose gradient is cut in time.

The forward is the neuron's own multi-step LIF; the backward keeps only each step's own path, as if
the membrane of the previous step were detached (OTTT, Xiao et al. 2022):

    ∂S_t/∂X_t = σ'(H_t − V_th) · ∂H_t/∂X_t      (∂H_t/∂X_t = 1, or 1/τ with ``decay_input``)
    ∂S_t/∂X_u = 0  for u ≠ t

with ``H_t = V_t + V_th S_t`` recovered from the membrane after the soft reset. This is the
gradient of running ``neuron.step(X_t, V_{t−1}.detach())`` for t = 1..T, in one call. With
``trace_lambda`` it also returns OTTT's presynaptic traces ``â_t = λ â_{t−1} + s_t`` and the Hebbian
rows ``(s_t, â_t)`` per step. With a fused backend (float32/float64) forward and backward are one
native op each on the CPU (:mod:`spiking.kernels.online_lif`) and one CUDA kernel each on a GPU
(:mod:`spiking.kernels.online_lif_cuda`); elsewhere, or with ``backend="torch"``, the neuron's
multi-step LIF and torch ops (the reference).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..kernels import online_lif, online_lif_cuda
from .functional import _resolve_backend, lif_multistep
from .module import LIF

__all__ = ["lif_online", "trace_matrices"]

_TRACES: dict = {}


def trace_matrices(T: int, lam: float, dtype: torch.dtype, device) -> tuple[torch.Tensor, ...]:
    """``L [T, T]`` with ``L[t, k] = λ^{t−k}`` (k ≤ t, else 0), so that the traces of steps ``S [T, M]`` are
    ``L S``; ``L2 [2T, T]`` (rows ``e_t`` and ``L[t]`` in turn: the rows ``(s_t, â_t)`` per step);
    ``c [T, 1, 1] = L 1`` (the trace of a constant input) and ``c2 [T, 2, 1, 1]`` (``1`` and ``c_t``).
    Built in float64, kept per ``(T, λ, dtype, device)``."""
    key = (int(T), float(lam), dtype, torch.device(device))
    if key not in _TRACES:
        t = torch.arange(T, dtype=torch.float64)
        age = t.view(-1, 1) - t.view(1, -1)
        L = torch.where(age >= 0, float(lam) ** age.clamp(min=0), 0.0)
        c = L.sum(1).view(-1, 1, 1)
        L2 = torch.stack((torch.eye(T, dtype=torch.float64), L), 1).view(2 * T, T)
        c2 = torch.stack((torch.ones_like(c), c), 1)
        with torch.inference_mode(False):
            _TRACES[key] = tuple(v.to(dtype).to(device) for v in (L, L2, c, c2))
    return _TRACES[key]


def _fused_ops(backend: str, x: torch.Tensor):
    """The module whose ``forward`` / ``backward`` run ``x`` for ``backend`` (the CPU ops, the CUDA
    kernels), or ``None`` for the reference path."""
    if backend == "cpu" and online_lif.usable(x):
        return online_lif
    if backend == "cupy" and online_lif_cuda.usable(x):
        return online_lif_cuda
    return None


class _OnlineLIF(torch.autograd.Function):
    """``forward(ctx, x, neuron, steps, lam)`` → spikes (and, with ``lam``, traces and Hebbian rows,
    not differentiable); backward ``g · σ'(H − V_th) · ∂H/∂X`` per step."""

    @staticmethod
    def forward(ctx, x, neuron, steps, lam):
        th = neuron.v_threshold
        ctx.neuron = neuron
        ctx.set_materialize_grads(False)  # no zero gradients made for the traces and rows
        ctx.fused = _fused_ops(_resolve_backend(neuron.backend, x), x)
        if ctx.fused is not None:
            s, z, a, rows = ctx.fused.forward(x, steps, th, neuron.tau, neuron.decay_input, lam, neuron.check_inputs)
        else:
            xs = x.reshape(steps, -1, *x.shape[1:]) if x.shape[0] != steps else x
            s, v = lif_multistep(xs, None, **neuron._params(), return_v=True, backend=neuron.backend,
                                 check_finite=neuron.check_inputs)
            z = torch.add(v, s, alpha=th).sub_(th)  # H_t − V_th = V_t + V_th (S_t − 1)
            if lam is not None:
                L, L2, _, _ = trace_matrices(steps, lam, x.dtype, x.device)
                per_step = s.view(steps, -1)
                a = torch.mm(L, per_step).view(x.shape)
                rows = torch.mm(L2, per_step).view(2 * x.shape[0], *x.shape[1:])
            if s.shape != x.shape:
                s, z = s.view(x.shape), z.view(x.shape)
        ctx.save_for_backward(z)
        if lam is None:
            return s
        ctx.mark_non_differentiable(a, rows)
        return s, a, rows

    @staticmethod
    def backward(ctx, g, *_):
        (z,) = ctx.saved_tensors
        neuron = ctx.neuron
        if g is None:  # the spikes were not used
            return None, None, None, None
        if ctx.fused is not None:
            return ctx.fused.backward(g, z, neuron.surrogate, neuron.tau, neuron.decay_input), None, None, None
        grad = g * neuron.surrogate.grad(z)
        return (grad.div_(neuron.tau) if neuron.decay_input else grad), None, None, None


def lif_online(x: torch.Tensor, neuron: LIF, steps: Optional[int] = None, trace_lambda: Optional[float] = None):
    """Spikes of ``neuron`` (a soft-reset :class:`~spiking.neuron.LIF` with a float threshold,
    starting from rest) on ``x [T, B, ...]``, with the per-step gradient of the module docstring.

    ``steps``: ``x`` holds the T = ``steps`` time steps one after the other in its leading dimension
    (rows ``[T·B, N]``); the results keep the shape of ``x``. ``trace_lambda`` (λ in [0, 1]): returns
    ``(S, Â, R)``, the traces ``Â`` shaped like ``x`` and the Hebbian rows ``R`` (``(s_t, â_t)`` per step,
    leading dimension doubled), neither differentiable."""
    if not isinstance(neuron, LIF) or neuron.v_reset is not None or isinstance(neuron.v_threshold, torch.Tensor):
        raise ValueError("neuron must be a soft-reset LIF (v_reset=None) with a float v_threshold: the "
                         "per-step gradient recovers H_t from V_t + V_th S_t")
    if steps is None:
        if x.dim() < 2:
            raise ValueError(f"x must be [T, B, ...], got shape {tuple(x.shape)}")
        steps = x.shape[0]
    elif isinstance(steps, bool) or not isinstance(steps, int) or steps < 1 or x.dim() < 1 or x.shape[0] % steps:
        raise ValueError(f"steps must be a positive int dividing x's leading dimension, got {steps!r} for x of "
                         f"shape {tuple(x.shape)}")
    if trace_lambda is not None and not 0.0 <= float(trace_lambda) <= 1.0:
        raise ValueError(f"trace_lambda must be in [0, 1], got {trace_lambda!r}")
    return _OnlineLIF.apply(x, neuron, steps, None if trace_lambda is None else float(trace_lambda))
