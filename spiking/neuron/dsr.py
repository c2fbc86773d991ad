"""DSR LIF neurons (Meng et al. 2022, "Differentiation on Spike Representation"), as used by HLOP.

Forward, per neuron, for input current ``I_t`` (t = 1..T)::

    u_t = β u_{t−1} + (1 − β) I_t,     β = exp(−Δt/τ)
    S_t = Θ(u_t − α·V_th);  u_t ← u_t − V_th·S_t        (soft reset)
    output spike value  o_t = S_t · V_th / Δt

The spike train represents the weighted firing rate ``a = Σ w_t o_t / Σ w_t`` with
``w_t = exp(−(TΔt − tΔt)/τ)``, which approximates ``clamp(Î/τ, 0, V_th/Δt)`` for the weighted
input ``Î = Σ w_t I_t / Σ w_t``. The backward pass differentiates that representation::

    ∂L/∂I_t = 1[0 < Î < V_th τ/Δt] · g / (τ T),     g = T · Σ_t w_t ∂L/∂o_t / Σ w_t
    ∂L/∂V_th = Δt · Σ g · 1[Î > V_th τ/Δt]           (the threshold gradient of the reference code)

When every downstream step receives the same gradient (a linear readout averaged over T, or
another DSR layer), these are exactly the gradients of the *rate graph*
``ā = mean_t o_t = R(Ī)``, ``Ī = mean_t I_t`` with ``∂ā/∂Ī = 1[0 < Î < V_th τ/Δt] / τ``;
:class:`DSRLIF` builds only that graph, so the backward pass costs one step instead of T.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

__all__ = ["dsr_weights", "weighted_rate", "dsr_spikes", "DSRRate", "DSRLIF"]


def dsr_weights(T: int, tau: float = 1.0, dt: float = 0.05, dtype=torch.float32, device=None) -> torch.Tensor:
    """``w_t = exp(−(TΔt − tΔt)/τ)`` for t = 1..T (the last step weighs 1)."""
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    if tau <= 0 or dt <= 0:
        raise ValueError(f"tau and dt must be > 0, got tau={tau!r}, dt={dt!r}")
    t = torch.arange(1, T + 1, dtype=torch.float64)
    return torch.exp(-(T * dt - t * dt) / tau).to(dtype=dtype, device=device)


def weighted_rate(s: torch.Tensor, tau: float = 1.0, dt: float = 0.05) -> torch.Tensor:
    """Weighted firing rate ``Σ_t w_t s_t / Σ_t w_t`` over the leading time axis of ``s [T, ...]``."""
    w = dsr_weights(s.shape[0], tau, dt, dtype=s.dtype, device=s.device)
    w = w / w.sum()
    return torch.tensordot(w, s, dims=([0], [0]))


def dsr_spikes(
    current: torch.Tensor,
    v_threshold: float,
    T: Optional[int] = None,
    tau: float = 1.0,
    dt: float = 0.05,
    alpha: float = 0.3,
) -> torch.Tensor:
    """Binary spikes ``S [T, B, ...]`` of DSR LIF neurons (the output is ``o = S·V_th/Δt``); no autograd.

    ``current`` is ``[T, B, ...]``, or ``[B, ...]`` with ``T`` given for a constant (direct) input.
    """
    if T is None:
        if current.dim() < 2:
            raise ValueError(f"current must be [T, B, ...] or [B, ...] with T given, got shape {tuple(current.shape)}")
        T = current.shape[0]
        step_shape = current.shape[1:]
    else:
        if T < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        step_shape = current.shape
    beta = math.exp(-dt / tau)
    vth = float(v_threshold)
    with torch.no_grad():
        drive = current * (1.0 - beta)  # (1 − β) I_t, once
        steps = drive.unbind(0) if drive.shape != step_shape else (drive,) * T
        u = torch.zeros(step_shape, dtype=current.dtype, device=current.device)
        out = torch.empty((T,) + tuple(step_shape), dtype=current.dtype, device=current.device)
        for t, c in enumerate(steps):
            torch.add(c, u, alpha=beta, out=u)           # u ← β u + (1 − β) I_t
            torch.ge(u, alpha * vth, out=out[t])         # S_t = Θ(u − α V_th)
            u.sub_(out[t], alpha=vth)                    # soft reset
    return out


class DSRRate(torch.autograd.Function):
    """Rate-graph node ``ā = R(Ī)``: forward returns the simulated rate, backward the DSR gradient.

    ``forward(ctx, I_mean, v_threshold, rate, I_weighted, tau, dt)``; ``rate`` is ``mean_t o_t`` and
    ``I_weighted`` is ``Î`` (both computed without autograd from the simulation).
    """

    @staticmethod
    def forward(ctx, I_mean, v_threshold, rate, I_weighted, tau, dt):
        bound = float(v_threshold) * tau / dt
        ctx.save_for_backward((I_weighted > 0) & (I_weighted < bound), I_weighted > bound)
        ctx.tau, ctx.dt = tau, dt
        return rate.clone()

    @staticmethod
    def backward(ctx, g):
        inside, above = ctx.saved_tensors
        grad_I = g * inside.to(g.dtype) / ctx.tau
        grad_vth = (g * above.to(g.dtype)).sum() * ctx.dt if ctx.needs_input_grad[1] else None
        return grad_I, grad_vth, None, None, None, None


class DSRLIF(nn.Module):
    """DSR LIF layer with a trainable threshold (init 0.3, floor ``v_floor``).

    ``forward(I_mean, I_seq=None)`` → ``(S [T, B, ...] binary spikes, rate ā [B, ...])``; the
    output spike value is :meth:`spike_value` ``= V_th/Δt``, so ``ā = mean_t S · V_th/Δt``. ``I_mean`` carries
    the autograd graph of ``mean_t I_t``; ``I_seq [T, B, ...]`` are the actual currents (no grad).
    ``I_seq=None`` means a constant current ``I_mean`` (direct input). ``ā`` is the value
    ``mean_t o_t`` whose backward is the DSR gradient (see module docstring).
    """

    is_spiking = True

    def __init__(self, T: int = 20, v_threshold: float = 0.3, tau: float = 1.0, dt: float = 0.05,
                 alpha: float = 0.3, v_floor: float = 5e-4, learn_threshold: bool = True):
        super().__init__()
        if T < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        for name, val in (("v_threshold", v_threshold), ("tau", tau), ("dt", dt), ("alpha", alpha)):
            if not (isinstance(val, (int, float)) and math.isfinite(val) and val > 0):
                raise ValueError(f"{name} must be a positive finite number, got {val!r}")
        self.T, self.tau, self.dt, self.alpha, self.v_floor = int(T), float(tau), float(dt), float(alpha), float(v_floor)
        vth = torch.tensor(float(v_threshold))
        self.v_threshold = nn.Parameter(vth) if learn_threshold else vth

    def forward(self, I_mean: torch.Tensor, I_seq: Optional[torch.Tensor] = None):
        with torch.no_grad():
            if isinstance(self.v_threshold, nn.Parameter):
                self.v_threshold.clamp_(min=self.v_floor)
            vth = float(self.v_threshold)
            if I_seq is None:
                spikes = dsr_spikes(I_mean.detach(), vth, T=self.T, tau=self.tau, dt=self.dt, alpha=self.alpha)
                I_w = I_mean.detach()
            else:
                if I_seq.shape[0] != self.T:
                    raise ValueError(f"I_seq must have T = {self.T} steps, got shape {tuple(I_seq.shape)}")
                spikes = dsr_spikes(I_seq, vth, tau=self.tau, dt=self.dt, alpha=self.alpha)
                I_w = weighted_rate(I_seq, self.tau, self.dt)
            rate = spikes.mean(0) * (vth / self.dt)
        if torch.is_grad_enabled() and (I_mean.requires_grad or self.v_threshold.requires_grad):
            rate = DSRRate.apply(I_mean, self.v_threshold, rate, I_w, self.tau, self.dt)
        return spikes, rate

    def spike_value(self) -> float:
        """``V_th / Δt``, the value of one output spike."""
        return float(self.v_threshold.detach()) / self.dt

    def extra_repr(self) -> str:
        return (f"T={self.T}, v_threshold={float(self.v_threshold.detach()):g}, tau={self.tau}, dt={self.dt}, "
                f"alpha={self.alpha}, v_floor={self.v_floor}")
