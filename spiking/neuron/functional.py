"""Pure leaky integrate-and-fire dynamics (no state held anywhere).

For input current ``X_t`` and membrane ``V`` (``V_rest = V_reset`` for hard reset, 0 for soft)::

    decay_input=True :  H_t = V_{t-1} + (X_t - (V_{t-1} - V_rest)) / tau
    decay_input=False:  H_t = V_{t-1} - (V_{t-1} - V_rest) / tau + X_t
    S_t = Θ(H_t - V_th)                      (surrogate σ'(H_t - V_th) in the backward pass)
    hard reset (v_reset is a number):  V_t = H_t (1 - S_t) + V_reset S_t
    soft reset (v_reset is None)    :  V_t = H_t - V_th S_t

With ``detach_reset=True`` the S_t in the reset term carries no gradient. ``V_0 = V_rest`` unless
a state is given. These are SpikingJelly's ``LIFNode`` equations; ``docs/design.md`` maps them to
snnTorch ``Leaky`` and Norse ``LIFBoxCell``.

:func:`lif_multistep_torch` is the plain-torch reference every fast path is tested against;
:func:`lif_multistep` dispatches to the fastest available backend.
"""

from __future__ import annotations

import math
import os
from typing import Optional, Union

import torch

from ..kernels import auto_backend, fused_lif  # the light package module (the backends load lazily)
from .surrogate import Surrogate, SurrogateLike, get_surrogate

__all__ = ["lif_step", "lif_multistep", "lif_multistep_torch", "check_lif_params", "check_input", "BACKENDS"]

Threshold = Union[float, torch.Tensor]
BACKENDS = ("auto", "torch", "cpu", "cupy")


def check_lif_params(tau: float, v_threshold: Threshold, v_reset: Optional[float], check_finite: bool = True) -> None:
    """Raise ``ValueError`` naming the parameter when a LIF parameter is invalid.

    Stability bound: with either ``decay_input`` the membrane obeys
    ``V_t - V_rest = (1 - 1/tau) (V_{t-1} - V_rest) + input``, so the leak factor is ``1 - 1/tau``.
    ``tau >= 1`` gives a factor in ``[0, 1)``: a leaky integrator (``tau = 1``: no memory).
    ``1/2 < tau < 1`` gives a negative factor: the membrane overshoots rest and flips sign every
    step while it decays; ``tau = 1/2`` never decays; ``tau < 1/2`` diverges (|factor| > 1).
    Hence ``tau < 1`` is rejected (as in SpikingJelly).

    The threshold must lie above the resting potential (``V_rest = v_reset``, or 0 for soft reset):
    otherwise the neuron fires at rest on every step and a soft reset pushes it further up. A
    tensor threshold (``learn_threshold``) is scanned only when ``check_finite`` is True.

    ``check_finite=False`` skips the value scan of a tensor threshold (a device sync, and a
    data-dependent branch that ``torch.compile(fullgraph=True)`` cannot trace).
    """
    if isinstance(tau, bool) or not isinstance(tau, (int, float)):
        raise TypeError(f"tau must be a number, got {type(tau).__name__}")
    if not math.isfinite(tau) or tau <= 0:
        raise ValueError(f"tau must be a positive finite number, got {tau!r}")
    if tau < 1:
        raise ValueError(
            f"tau must be >= 1, got {tau!r}: the discrete update V <- (1 - 1/tau) V + ... has leak "
            f"factor {1 - 1 / tau:.3g}, so the membrane alternates in sign (1/2 < tau < 1) or "
            f"diverges (tau <= 1/2) instead of decaying"
        )
    if v_reset is not None:
        if isinstance(v_reset, bool) or not isinstance(v_reset, (int, float)) or not math.isfinite(v_reset):
            raise ValueError(f"v_reset must be a finite number (hard reset) or None (soft reset), got {v_reset!r}")
    rest = 0.0 if v_reset is None else float(v_reset)
    if isinstance(v_threshold, torch.Tensor):
        if v_threshold.numel() != 1:
            raise ValueError(f"v_threshold must be a scalar, got a tensor of shape {tuple(v_threshold.shape)}")
        if check_finite:
            vth = float(v_threshold.detach())
            if not math.isfinite(vth):
                raise ValueError("v_threshold must be finite")
            if vth <= rest:
                raise ValueError(f"{_below_rest(rest, v_reset)}; got {vth:g}")
    else:
        if isinstance(v_threshold, bool) or not isinstance(v_threshold, (int, float)) or not math.isfinite(v_threshold):
            raise ValueError(f"v_threshold must be a finite number, got {v_threshold!r}")
        if v_threshold <= rest:
            raise ValueError(f"{_below_rest(rest, v_reset)}; got {v_threshold!r}")


def _below_rest(rest: float, v_reset: Optional[float]) -> str:
    return (f"v_threshold must be above the resting potential V_rest = {rest:g} "
            f"({'soft reset' if v_reset is None else 'v_reset'}); a neuron at rest would fire every step")


def check_input(x: torch.Tensor, name: str = "x", min_dim: int = 2, check_finite: bool = True) -> None:
    """Validate a ``[T, B, ...]`` (``min_dim=2``) or ``[B, ...]`` (``min_dim=1``) float input."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < min_dim:
        want = "[T, batch, ...]" if min_dim == 2 else "[batch, ...]"
        raise ValueError(f"{name} must have shape {want} (at least {min_dim} dims), got shape {tuple(x.shape)}")
    if min_dim == 2 and x.shape[0] == 0:
        raise ValueError(f"{name} has T = 0 time steps (shape {tuple(x.shape)}); need T >= 1")
    if x.shape[min_dim - 1] == 0:
        raise ValueError(f"{name} has an empty batch (shape {tuple(x.shape)})")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if check_finite and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")


def _rest(v_reset: Optional[float]) -> float:
    return 0.0 if v_reset is None else float(v_reset)


def lif_step(
    x: torch.Tensor,
    v: torch.Tensor,
    *,
    tau: float = 2.0,
    v_threshold: Threshold = 1.0,
    v_reset: Optional[float] = 0.0,
    decay_input: bool = True,
    detach_reset: bool = False,
    surrogate: Surrogate = Surrogate("sigmoid", 4.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LIF step: ``(S_t, V_t) = f(X_t, V_{t-1})`` per the module equations. Pure and differentiable."""
    rest = _rest(v_reset)
    if decay_input:
        h = v + (x - (v - rest)) / tau
    else:
        h = v - (v - rest) / tau + x
    s = surrogate.spike(h - v_threshold)
    s_r = s.detach() if detach_reset else s
    if v_reset is None:
        v_new = h - v_threshold * s_r
    else:
        v_new = h * (1.0 - s_r) + v_reset * s_r
    return s, v_new


def lif_multistep_torch(
    x: torch.Tensor,
    v0: Optional[torch.Tensor] = None,
    *,
    tau: float = 2.0,
    v_threshold: Threshold = 1.0,
    v_reset: Optional[float] = 0.0,
    decay_input: bool = True,
    detach_reset: bool = False,
    surrogate: Surrogate = Surrogate("sigmoid", 4.0),
    return_v: bool = False,
):
    """Reference multi-step LIF in plain torch autograd: ``x [T, B, ...]`` → spikes ``[T, B, ...]``.

    Returns ``(spikes, v_last)`` or, with ``return_v``, ``(spikes, v_seq)`` where ``v_seq[t] = V_t``
    (after reset). Memory and time are linear in T: every step saves only its own small tensors.
    """
    v = torch.full_like(x[0], _rest(v_reset)) if v0 is None else v0
    spikes, vs = [], []
    # unbind, not x[t]: indexing a grad-requiring x in a loop makes autograd build one full-size
    # zero gradient per step (quadratic in T); unbind's backward stacks the step gradients once.
    for xt in x.unbind(0):
        s, v = lif_step(
            xt, v, tau=tau, v_threshold=v_threshold, v_reset=v_reset,
            decay_input=decay_input, detach_reset=detach_reset, surrogate=surrogate,
        )
        spikes.append(s)
        if return_v:
            vs.append(v)
    s_seq = torch.stack(spikes)
    return (s_seq, torch.stack(vs)) if return_v else (s_seq, v)


def _resolve_backend(backend: Optional[str], x: torch.Tensor) -> str:
    name = (backend or os.environ.get("SPIKING_BACKEND") or "auto").lower()
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name if name != "auto" else auto_backend(x)


def lif_multistep(
    x: torch.Tensor,
    v0: Optional[torch.Tensor] = None,
    *,
    tau: float = 2.0,
    v_threshold: Threshold = 1.0,
    v_reset: Optional[float] = 0.0,
    decay_input: bool = True,
    detach_reset: bool = False,
    surrogate: SurrogateLike = "sigmoid",
    return_v: bool = False,
    backend: Optional[str] = None,
    check_finite: bool = True,
):
    """Multi-step LIF on ``x [T, B, ...]``; validated, then run by the chosen backend.

    ``backend``: ``"auto"`` (default; also ``$SPIKING_BACKEND``), ``"torch"`` (reference),
    ``"cpu"`` (fused CPU path) or ``"cupy"`` (fused CUDA kernel). A forced backend that cannot run
    raises ``RuntimeError``. Returns ``(spikes, v_last)`` or ``(spikes, v_seq)`` with ``return_v``.
    ``check_finite``: NaN/inf in ``x`` raise ``ValueError``; the fused backends check x inside
    their kernel's own pass (no extra scan), the torch reference scans x first.
    """
    check_input(x, "x", min_dim=2, check_finite=False)
    name = _resolve_backend(backend, x)
    if check_finite and name == "torch":
        check_input(x, "x", min_dim=2, check_finite=True)
    check_lif_params(tau, v_threshold, v_reset, check_finite=check_finite)
    if v0 is not None:
        check_input(v0, "v0", min_dim=1, check_finite=check_finite)
        if v0.shape != x.shape[1:]:
            raise ValueError(f"v0 must have the shape of one time step {tuple(x.shape[1:])}, got {tuple(v0.shape)}")
    if name == "torch":
        return lif_multistep_torch(x, v0, tau=float(tau), v_threshold=v_threshold, v_reset=v_reset,
                                   decay_input=bool(decay_input), detach_reset=bool(detach_reset),
                                   surrogate=get_surrogate(surrogate), return_v=bool(return_v))
    # the fused entry points convert and cache the options themselves (kernels._common.make_config)
    return fused_lif(name)(x, v0, tau=tau, v_threshold=v_threshold, v_reset=v_reset, decay_input=decay_input,
                 detach_reset=detach_reset, surrogate=surrogate, return_v=return_v, check_finite=check_finite)
