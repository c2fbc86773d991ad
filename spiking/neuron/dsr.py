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

__all__ = ["dsr_weights", "weighted_rate", "dsr_spikes", "dsr_drive", "dsr_spikes_from_drive", "drive_coefficients",
           "dsr_spikes_reference", "DSRRate", "DSRLIF"]


_WEIGHTS: dict = {}


def dsr_weights(T: int, tau: float = 1.0, dt: float = 0.05, dtype=torch.float32, device=None) -> torch.Tensor:
    """``w_t = exp(−(TΔt − tΔt)/τ)`` for t = 1..T (the last step weighs 1)."""
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    if tau <= 0 or dt <= 0:
        raise ValueError(f"tau and dt must be > 0, got tau={tau!r}, dt={dt!r}")
    t = torch.arange(1, T + 1, dtype=torch.float64)
    return torch.exp(-(T * dt - t * dt) / tau).to(dtype=dtype, device=device)


def _normalised_weights(T: int, tau: float, dt: float, dtype, device) -> torch.Tensor:
    """``w / Σ w`` as a ``[1, T]`` row (cached per T, τ, Δt, dtype and device: no ops per call)."""
    key = (T, float(tau), float(dt), dtype, str(device))
    if key not in _WEIGHTS:
        with torch.inference_mode(False):  # a normal tensor, usable in and out of inference mode
            w = dsr_weights(T, tau, dt, dtype=dtype, device=device)
            _WEIGHTS[key] = (w / w.sum()).unsqueeze(0)
    return _WEIGHTS[key]


def weighted_rate(s: torch.Tensor, tau: float = 1.0, dt: float = 0.05) -> torch.Tensor:
    """Weighted firing rate ``Σ_t w_t s_t / Σ_t w_t`` over the leading time axis of ``s [T, ...]``
    (one ``[1, T] @ [T, rest]`` product)."""
    w = _normalised_weights(s.shape[0], tau, dt, s.dtype, s.device)
    return torch.mm(w, s.reshape(s.shape[0], -1)).view(s.shape[1:])


def _steps(current: torch.Tensor, T: Optional[int]) -> tuple[int, tuple]:
    if T is None:
        if current.dim() < 2:
            raise ValueError(f"current must be [T, B, ...] or [B, ...] with T given, got shape {tuple(current.shape)}")
        return current.shape[0], tuple(current.shape[1:])
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    return T, tuple(current.shape)


def dsr_spikes_reference(
    current: torch.Tensor,
    v_threshold: float,
    T: Optional[int] = None,
    tau: float = 1.0,
    dt: float = 0.05,
    alpha: float = 0.3,
) -> torch.Tensor:
    """:func:`dsr_spikes` as a per-step loop of the module equations (the reference of the fused path)."""
    T, step_shape = _steps(current, T)
    beta = math.exp(-dt / tau)
    vth = float(v_threshold)
    with torch.no_grad():
        drive = current * (1.0 - beta)  # (1 − β) I_t, once
        steps = drive.unbind(0) if tuple(drive.shape) != step_shape else (drive,) * T
        u = torch.zeros(step_shape, dtype=current.dtype, device=current.device)
        out = torch.empty((T,) + step_shape, dtype=current.dtype, device=current.device)
        for t, c in enumerate(steps):
            torch.add(c, u, alpha=beta, out=u)           # u ← β u + (1 − β) I_t
            torch.ge(u, alpha * vth, out=out[t])         # S_t = Θ(u − α V_th)
            u.sub_(out[t], alpha=vth)                    # soft reset
    return out


def dsr_spikes(
    current: torch.Tensor,
    v_threshold,
    T: Optional[int] = None,
    tau: float = 1.0,
    dt: float = 0.05,
    alpha: float = 0.3,
) -> torch.Tensor:
    """Binary spikes ``S [T, B, ...]`` of DSR LIF neurons (the output is ``o = S·V_th/Δt``); no autograd.

    ``current`` is ``[T, B, ...]``, or ``[B, ...]`` with ``T`` given for a constant (direct) input;
    ``v_threshold`` a number or a 0-dim tensor (read on the device: no host sync).

    One fused multi-step LIF call (:func:`~spiking.neuron.functional.lif_multistep`) on the
    rescaled, shifted membrane ``w = u/V_th + (1 − α)``: with ``1/τ' = 1 − β`` and input
    ``X_t = (1 − β)(I_t/V_th + (1 − α))`` its LIF step (``decay_input=False``) ``H = w − w/τ' + X``
    is ``β w + (1 − β)(I_t/V_th + 1 − α)``, the spike condition ``H ≥ 1`` is ``u ≥ α V_th``, the
    soft reset subtracts 1 (``V_th`` in ``u``) and ``w_0 = 1 − α`` is ``u_0 = 0``. The same dynamics as :func:`dsr_spikes_reference` in other float
    rounding, so a membrane within rounding of the threshold may spike one step apart.
    """
    T, step_shape = _steps(current, T)
    drive = dsr_drive(current, v_threshold, T, tau, dt, alpha)
    if tuple(current.shape) == step_shape:  # a constant current: X repeated over T
        drive = drive.repeat((T,) + (1,) * len(step_shape))
    return dsr_spikes_from_drive(drive, tau, dt, alpha)


def dsr_drive(current: torch.Tensor, v_threshold, T: Optional[int] = None, tau: float = 1.0, dt: float = 0.05,
              alpha: float = 0.3) -> torch.Tensor:
    """The fused LIF's input ``X = (1 − β)((1 − α) + I/V_th)`` for ``current`` (``[T, B, ...]``, or
    ``[B, ...]`` with ``T`` given: then ``X`` is ``[B, ...]``, the same every step); no autograd."""
    T, step_shape = _steps(current, T)
    beta = math.exp(-dt / tau)
    dims = (current.dtype, current.device)
    with torch.no_grad():
        # X_t = (1 − β)((1 − α) + I_t / V_th), in one op (a constant current's X once, [B, ...]:
        # addcdiv broadcasting [B, N] to [T, B, N] runs ~20x slower on the CPU than a repeat)
        constant = tuple(current.shape) == step_shape
        offset = _constant((1,) * len(step_shape) if constant else (T,) + (1,) * len(step_shape),
                           (1.0 - beta) * (1.0 - alpha), *dims)
        vth = v_threshold if isinstance(v_threshold, torch.Tensor) else \
            torch.tensor(float(v_threshold), dtype=current.dtype, device=current.device)
        return torch.addcdiv(offset, current, vth, value=1.0 - beta)


def drive_coefficients(v_threshold, tau: float = 1.0, dt: float = 0.05, alpha: float = 0.3):
    """``(k, c)`` with ``X_t = k·I_t + c`` the fused LIF's input for the current ``I_t`` (see
    :func:`dsr_spikes`): ``k = (1 − β)/V_th``, ``c = (1 − β)(1 − α)``; ``k`` is a tensor when
    ``v_threshold`` is."""
    beta = math.exp(-dt / tau)
    return (1.0 - beta) / v_threshold, (1.0 - beta) * (1.0 - alpha)


def dsr_spikes_from_drive(drive: torch.Tensor, tau: float = 1.0, dt: float = 0.05, alpha: float = 0.3) -> torch.Tensor:
    """Binary spikes ``S [T, B, ...]`` for the fused LIF's input ``X [T, B, ...] = k·I + c``
    (:func:`drive_coefficients`): the membrane ``w = u/V_th + (1 − α)`` starts at ``1 − α``, leaks
    with ``β``, fires at 1 and subtracts 1 (see :func:`dsr_spikes`). No autograd."""
    from .functional import lif_multistep  # noqa: PLC0415

    beta = math.exp(-dt / tau)
    with torch.no_grad():
        w0 = _constant(tuple(drive.shape[1:]), 1.0 - alpha, drive.dtype, drive.device)
        spikes, _ = lif_multistep(drive, w0, tau=1.0 / (1.0 - beta), v_threshold=1.0, v_reset=None,
                                  decay_input=False, check_finite=False)
    return spikes


_CONSTANTS: dict = {}


def _constant(shape: tuple, value: float, dtype, device) -> torch.Tensor:
    """A cached read-only tensor filled with ``value`` (a few shapes per run: train and eval batches)."""
    key = (tuple(shape), value, dtype, str(device))
    if key not in _CONSTANTS:
        if len(_CONSTANTS) > 64:
            _CONSTANTS.clear()
        with torch.inference_mode(False):  # a normal tensor, usable in and out of inference mode
            _CONSTANTS[key] = torch.full(shape, value, dtype=dtype, device=device)
    return _CONSTANTS[key]


class DSRRate(torch.autograd.Function):
    """Rate-graph node ``ā = R(Ī)``: forward returns the simulated rate, backward the DSR gradient.

    ``forward(ctx, I_mean, v_threshold, spike_mean, value, I_weighted, tau, dt)``: the rate
    ``ā = spike_mean · value`` (``spike_mean = mean_t S_t`` of the simulated binary spikes,
    ``value = V_th/Δt``), with ``I_weighted = Î``; ``v_threshold`` is a 0-dim tensor (the bound
    ``V_th τ/Δt`` stays on the device).
    """

    @staticmethod
    def forward(ctx, I_mean, v_threshold, spike_mean, value, I_weighted, tau, dt):
        bound = value if tau == 1.0 else value * tau
        inside = (I_weighted > 0) & (I_weighted < bound)
        above = I_weighted > bound if ctx.needs_input_grad[1] else None
        ctx.save_for_backward(inside, above)
        ctx.tau, ctx.dt = tau, dt
        return spike_mean * value

    @staticmethod
    def backward(ctx, g):
        inside, above = ctx.saved_tensors
        grad_I = g * inside if ctx.tau == 1.0 else g * inside / ctx.tau
        grad_vth = (g * above).sum() * ctx.dt if ctx.needs_input_grad[1] else None
        return grad_I, grad_vth, None, None, None, None, None


class DSRLIF(nn.Module):
    """DSR LIF layer with a trainable threshold (init 0.3, floor ``v_floor``).

    ``forward(I_mean, I_seq=None, *, drive=None, rate=True)`` → ``(S [T, B, ...] binary spikes,
    rate ā [B, ...])``; the output spike value is :meth:`spike_value` ``= V_th/Δt``, so
    ``ā = mean_t S · V_th/Δt``. ``I_mean`` carries the autograd graph of ``mean_t I_t``;
    ``I_seq [T, B, ...]`` are the actual currents (no grad), or ``drive`` the fused LIF's input
    ``X = k·I + c`` for them (:meth:`drive_scale` ``k``, :attr:`drive_shift` ``c``: a caller that
    forms the currents as a product folds the two in, e.g. ``spike_matmul(s, w, value·k, c)``).
    Neither means a constant current ``I_mean`` (direct input); with a sequence given and no
    gradient recorded, ``I_mean`` is not read and may be ``None``. ``ā`` is the value
    ``mean_t o_t`` whose backward is the DSR gradient (see module docstring); ``rate=False``
    (only without a gradient to record) skips it and returns ``None``.
    """

    is_spiking = True

    def __getstate__(self):  # the kept V_th/Δt is recomputed by a copy's first forward
        state = self.__dict__.copy()
        for key in ("_value", "_scale", "_value_key"):
            state.pop(key, None)
        return state

    def __init__(self, T: int = 20, v_threshold: float = 0.3, tau: float = 1.0, dt: float = 0.05,
                 alpha: float = 0.3, v_floor: float = 5e-4, learn_threshold: bool = True):
        super().__init__()
        if T < 1:
            raise ValueError(f"T must be >= 1, got {T}")
        for name, val in (("v_threshold", v_threshold), ("tau", tau), ("dt", dt), ("alpha", alpha)):
            if not (isinstance(val, (int, float)) and math.isfinite(val) and val > 0):
                raise ValueError(f"{name} must be a positive finite number, got {val!r}")
        self.T, self.tau, self.dt, self.alpha, self.v_floor = int(T), float(tau), float(dt), float(alpha), float(v_floor)
        self.spike_total: Optional[torch.Tensor] = None
        vth = torch.tensor(float(v_threshold))
        self.v_threshold = nn.Parameter(vth) if learn_threshold else vth

    def _refresh(self) -> None:
        """Clamp the threshold to its floor and recompute ``V_th/Δt`` and ``k`` after it changed."""
        # computed again only after the threshold changed (an optimizer step or a load bumps its
        # version): a frozen threshold costs no op per call (not kept from inference mode: an
        # inference tensor cannot enter autograd later)
        vth = self.v_threshold
        with torch.no_grad():
            inference = torch.is_inference_mode_enabled()
            if inference or getattr(self, "_value_key", None) != (id(vth), vth.data_ptr(), vth._version):
                if isinstance(vth, nn.Parameter):
                    vth.clamp_(min=self.v_floor)
                self._value = vth / self.dt
                self._scale = drive_coefficients(vth, self.tau, self.dt, self.alpha)[0]
                self._value_key = None if inference else (id(vth), vth.data_ptr(), vth._version)

    @property
    def drive_shift(self) -> float:
        """``c = (1 − β)(1 − α)`` of the drive ``X = k·I + c``."""
        return drive_coefficients(1.0, self.tau, self.dt, self.alpha)[1]

    def drive_scale(self) -> torch.Tensor:
        """``k = (1 − β)/V_th`` (a 0-dim tensor on the threshold's device) of the drive ``X = k·I + c``."""
        self._refresh()
        return self._scale

    def forward(self, I_mean: Optional[torch.Tensor], I_seq: Optional[torch.Tensor] = None, *,
                drive: Optional[torch.Tensor] = None, rate: bool = True):
        vth = self.v_threshold  # a device scalar, never read by the host; no graph under no_grad
        if I_seq is not None and drive is not None:
            raise ValueError("give the currents I_seq or their drive, not both")
        seq = drive if drive is not None else I_seq
        if seq is not None and seq.shape[0] != self.T:
            name = "drive" if drive is not None else "I_seq"
            raise ValueError(f"{name} must have T = {self.T} steps, got shape {tuple(seq.shape)}")
        self._refresh()
        with torch.no_grad():
            if seq is None:
                spikes = dsr_spikes(I_mean, vth, T=self.T, tau=self.tau, dt=self.dt, alpha=self.alpha)
            elif drive is None:
                spikes = dsr_spikes(I_seq, vth, tau=self.tau, dt=self.dt, alpha=self.alpha)
            else:
                spikes = dsr_spikes_from_drive(drive, self.tau, self.dt, self.alpha)
            self.add_spikes(spikes)

        def weighted() -> torch.Tensor:  # Î, read by the backward pass only
            if seq is None:
                return I_mean
            if drive is None:
                return weighted_rate(I_seq, self.tau, self.dt)
            return self.current_of(weighted_rate(drive, self.tau, self.dt))  # the weights sum to 1

        if not (rate or self.records(I_mean)):
            return spikes, None
        return spikes, self.rate_of(I_mean, spikes.mean(0), weighted)

    def count_spikes(self, on: bool) -> None:
        """Start (``on``) or stop summing the emitted spikes into ``spike_total``, a float64 scalar
        on the threshold's device (what a forward hook on the spikes would count; the fused CPU
        stack, which keeps no spike tensor, adds its counts here)."""
        self.spike_total = torch.zeros((), dtype=torch.float64, device=self.v_threshold.device) if on else None

    def add_spikes(self, s: torch.Tensor) -> None:
        """Add ``Σ s`` (spikes, or spike counts) to ``spike_total`` while counting."""
        if self.spike_total is None:
            return
        # float32 sums of whole numbers are exact while below 2^24: each row of 0/1 spikes [T, B, N]
        # or of counts [B, N] (each at most T) is summed in float32, the row totals in float64
        rows = s.reshape(s.shape[0], -1) if s.dim() > 1 else s.reshape(1, -1)
        if s.dtype == torch.float32 and rows.shape[1] * (1 if s.dim() > 2 else self.T) < 2 ** 24:
            self.spike_total.add_(rows.sum(1).sum(dtype=torch.float64))
        else:
            self.spike_total.add_(s.sum(dtype=torch.float64))

    def records(self, I_mean: Optional[torch.Tensor]) -> bool:
        """Whether the rate graph is recorded (a gradient to ``I_mean`` or the threshold)."""
        return torch.is_grad_enabled() and ((I_mean is not None and I_mean.requires_grad) or
                                            self.v_threshold.requires_grad)

    def rate_of(self, I_mean: Optional[torch.Tensor], spike_mean: torch.Tensor, weighted) -> torch.Tensor:
        """``ā = spike_mean · V_th/Δt`` for ``spike_mean = mean_t S_t`` (taken over), through
        :class:`DSRRate` when :meth:`records`; ``weighted()`` gives ``Î`` then (called only then)."""
        if self.records(I_mean):
            with torch.no_grad():
                I_w = weighted()
            return DSRRate.apply(I_mean, self.v_threshold, spike_mean, self._value, I_w, self.tau, self.dt)
        return spike_mean.mul_(self._value)

    def current_of(self, drive: torch.Tensor) -> torch.Tensor:
        """The current ``I = (X − c)/k`` of a drive ``X`` (in place)."""
        return drive.sub_(self.drive_shift).div_(self._scale)

    def spike_value(self) -> torch.Tensor:
        """``V_th / Δt``, the value of one output spike (a 0-dim tensor on the threshold's device;
        the one of the latest forward, else computed)."""
        value = getattr(self, "_value", None)
        return value if value is not None else self.v_threshold.detach() / self.dt

    def extra_repr(self) -> str:
        return (f"T={self.T}, v_threshold={float(self.v_threshold.detach()):g}, tau={self.tau}, dt={self.dt}, "
                f"alpha={self.alpha}, v_floor={self.v_floor}")
