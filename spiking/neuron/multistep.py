"""Generic multi-step neuron: the torch reference loop and the dispatch to the fused kernels.

Every neuron of the family (IF, PLIF, ALIF, CubaLIF, LI) is a :class:`~.registry.NeuronSpec`;
:func:`run` runs ``x [T, B, ...]`` through it with the chosen backend. The shared pieces of the
torch reference steps are here too, written in the operation order of ``cuda/neuron_template.cuh``
so the fused CPU path reproduces them bit for bit (float32/float64)::

    charge:     H = V + (X - (V - V_rest)) k     (decay_input)      H = V - (V - V_rest) k + X
    fire/reset: S = Θ(H - θ);  V = H (1 - S) + V_reset S (hard)  or  H - θ S (soft)

``k = 1/tau``; with ``detach_reset`` the S of the reset term carries no gradient.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple, Optional

import torch

from ..kernels._common import constant
from .functional import check_input
from .registry import NeuronSpec
from .surrogate import Surrogate, SurrogateLike, get_surrogate

__all__ = ["StepConfig", "charge", "fire_reset", "run", "run_torch", "make_config", "check_range", "BACKENDS"]

BACKENDS = ("auto", "torch", "cpu", "cupy")


class StepConfig(NamedTuple):
    """Static options of one call (the same for every neuron)."""

    hard: bool = True
    detach_reset: bool = False
    decay_input: bool = True
    surrogate: Surrogate = Surrogate("sigmoid", 4.0)


def make_config(v_reset: Optional[float], detach_reset: bool, decay_input: bool,
                surrogate: SurrogateLike) -> StepConfig:
    """``StepConfig`` from the user-facing options (``v_reset=None`` selects soft reset)."""
    return StepConfig(v_reset is not None, bool(detach_reset), bool(decay_input), get_surrogate(surrogate))


def check_range(name: str, value, low: float = -math.inf, high: float = math.inf, low_open: bool = False,
                high_open: bool = False, why: str = "") -> float:
    """``float(value)`` if it is a finite number in the range, else ``ValueError`` naming ``name``."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    v = float(value)
    bad_low = v <= low if low_open else v < low
    bad_high = v >= high if high_open else v > high
    if bad_low or bad_high:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(f"{name} must be in {lo}{low:g}, {high:g}{hi}{why}, got {v!r}")
    return v


def charge(x: torch.Tensor, v: torch.Tensor, k: torch.Tensor, rest: torch.Tensor, decay_input: bool) -> torch.Tensor:
    """LIF charge with ``k = 1/tau`` (see the module docstring)."""
    a = v - rest
    if decay_input:
        return v + (x - a) * k
    return (v - a * k) + x


def fire_reset(h: torch.Tensor, theta: torch.Tensor, v_reset: torch.Tensor, cfg: StepConfig):
    """``(S, V)``: spike with the surrogate gradient, then hard or soft reset."""
    s = cfg.surrogate.spike(h - theta)
    s_r = s.detach() if cfg.detach_reset else s
    if cfg.hard:
        return s, h * (1.0 - s_r) + v_reset * s_r
    return s, h - theta * s_r


def _as_params(spec: NeuronSpec, params: tuple, x: torch.Tensor) -> tuple:
    """The parameters as tensors of x's dtype and device; a plain number as a cached 0-dim tensor
    (a layer passes the same numbers on every call; making the tensor costs more than a small
    layer's loops), only read, since every step makes new tensors."""
    return spec.params(*(constant((p,), x.dtype, x.device, scalar=True) if isinstance(p, (int, float))
                         else torch.as_tensor(p, dtype=x.dtype, device=x.device) for p in params))


def run_torch(spec: NeuronSpec, x: torch.Tensor, state: tuple, params: tuple, cfg: StepConfig):
    """Reference loop in plain torch autograd: ``(out [T, B, ...], last state tuple)``."""
    outs = []
    for xt in x.unbind(0):  # unbind: one stacked gradient instead of T full-size zero gradients
        out, state = spec.step(xt, state, params, cfg)
        outs.append(out)
    return torch.stack(outs), tuple(state)


def requested_backend(backend: Optional[str]) -> str:
    """``backend``, else ``$SPIKING_BACKEND``, else ``"auto"``; ``ValueError`` unless in :data:`BACKENDS`."""
    name = (backend or os.environ.get("SPIKING_BACKEND") or "auto").lower()
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


def _resolve_backend(backend: Optional[str], x: torch.Tensor, spec: Optional[NeuronSpec] = None) -> str:
    """The backend to run; ``"auto"`` picks a fused path only for neurons that have a kernel."""
    name = requested_backend(backend)
    if name != "auto":
        return name
    if x.is_cuda:
        from ..kernels import neuron_cuda

        fused = spec is None or spec.name in neuron_cuda.TYPES
        return "cupy" if fused and neuron_cuda.available()[0] else "torch"
    if x.is_cpu and x.dtype in (torch.float32, torch.float64):
        from ..kernels import neuron_cpu

        if not neuron_cpu.available(warn=True):
            return "torch"
        return "cpu" if spec is None or neuron_cpu.has_kernel(spec.name) else "torch"
    return "torch"


def run(spec: NeuronSpec, x: torch.Tensor, params: tuple, cfg: StepConfig, state0: Optional[tuple] = None,
        backend: Optional[str] = None, check_finite: bool = True):
    """Validate and run ``x [T, B, ...]`` through ``spec``; returns ``(out, last state tuple)``.

    ``params``: a ``spec.params`` tuple of numbers or tensors broadcastable to one step of ``x``;
    ``state0``: a tuple of tensors of one step's shape (``None``: ``spec.initial``); ``backend``:
    ``"auto"`` (``$SPIKING_BACKEND``), ``"torch"``, ``"cpu"`` or ``"cupy"``.
    """
    check_input(x, "x", min_dim=2, check_finite=False)
    name = _resolve_backend(backend, x, spec)
    if check_finite and name == "torch":  # the fused kernels probe x for NaN/inf in their own pass
        check_input(x, "x", min_dim=2)
    params = _as_params(spec, params, x)
    step_shape = x.shape[1:]
    for field, p in zip(spec.params._fields, params):
        if p.dim() == 0 or p.shape == step_shape:  # the common cases, without broadcast_shapes' cost
            continue
        try:
            torch.broadcast_shapes(p.shape, step_shape)
        except RuntimeError:
            raise ValueError(f"{spec.name}: parameter {field} of shape {tuple(p.shape)} does not broadcast to "
                             f"one step of x {tuple(step_shape)}") from None
    if state0 is None:
        state0 = spec.initial(params, x[0])
    else:
        if len(state0) != len(spec.states):
            raise ValueError(f"{spec.name}: state0 must hold {len(spec.states)} tensors {spec.states}, "
                             f"got {len(state0)}")
        for sname, s in zip(spec.states, state0):
            check_input(s, f"state0.{sname}", min_dim=1, check_finite=check_finite)
            if s.shape != step_shape:
                raise ValueError(f"{spec.name}: state0.{sname} must have the shape of one time step "
                                 f"{tuple(step_shape)}, got {tuple(s.shape)}")
    if name == "torch":
        return run_torch(spec, x, tuple(state0), params, cfg)
    if name == "cpu":
        from ..kernels import neuron_cpu

        return neuron_cpu.run(spec, x, tuple(state0), params, cfg, check_x=check_finite)
    from ..kernels import neuron_cuda

    return neuron_cuda.run(spec, x, tuple(state0), params, cfg, check_x=check_finite)
