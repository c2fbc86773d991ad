r"""RLIF: LIF neurons with an explicit recurrent weight (snnTorch ``RLeaky`` with ``all_to_all``).

.. math::
    I_t = X_t + W S_{t-1} + b,\qquad
    H_t = V_{t-1} + (I_t - (V_{t-1} - V_{rest}))\,k\ \ (\text{decay\_input})\quad\text{or}\quad
    V_{t-1} - (V_{t-1} - V_{rest})\,k + I_t

    S_t = \Theta(H_t - V_{th}),\qquad V_t = H_t(1 - S_t) + V_{reset} S_t\ \text{(hard)}\ \text{or}\ H_t - V_{th} S_t

``k = 1/tau``; ``S_{-1} = 0``, ``V_{-1} = V_rest`` unless a state is given. The recurrent term
couples all neurons of a layer within a step, so the fused paths run one matmul per step for the
layer (``R_t = S_{t-1} W^T + b``, the call ``nn.Linear`` makes) and then the neuron template's
element-wise LIF step on ``X_t + R_t`` (``cuda/rlif_step.cuh``); the backward walks T-1..0 the
same way and forms ``dL/dW = Σ_t (dL/dI_t)^T S_{t-1}`` in one matmul. CPU: one native call each
way (``spiking/kernels/rlif_cpu.cpp``); CUDA: cuBLAS matmul + one kernel per step
(``spiking/kernels/rlif_cuda.py``). :func:`rlif_multistep_torch` is the reference they are tested
against.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import nn

from .functional import check_input, check_lif_params
from .multistep import StepConfig, charge, fire_reset, make_config, requested_backend
from .surrogate import SurrogateLike

__all__ = ["RLIF", "RLIFParams", "rlif_step", "rlif_multistep", "rlif_multistep_torch"]


class RLIFParams(NamedTuple):
    """Per-layer numbers of RLIF (``v_reset`` is ignored with soft reset)."""

    k: float            # 1/tau
    v_threshold: float
    v_reset: float

    def rest(self, cfg: StepConfig) -> float:
        """``V_rest``: ``v_reset`` with hard reset, 0 with soft reset."""
        return self.v_reset if cfg.hard else 0.0


def rlif_step(x: torch.Tensor, v: torch.Tensor, s: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
              p: RLIFParams, cfg: StepConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """One step (torch reference): ``(S_t, V_t)`` from ``X_t``, ``V_{t-1}``, ``S_{t-1}``."""
    h = charge(x + nn.functional.linear(s, weight, bias), v, p.k, p.rest(cfg), cfg.decay_input)
    return fire_reset(h, p.v_threshold, p.v_reset, cfg)


def rlif_multistep_torch(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], v0: torch.Tensor,
                         s0: torch.Tensor, p: RLIFParams, cfg: StepConfig):
    """Reference loop in plain torch autograd: ``(spikes [T, B, N], (V_T, S_T))``."""
    v, s, out = v0, s0, []
    for xt in x.unbind(0):
        s, v = rlif_step(xt, v, s, weight, bias, p, cfg)
        out.append(s)
    return torch.stack(out), (v, s)


def _backend(backend: Optional[str], x: torch.Tensor) -> str:
    name = requested_backend(backend)
    if name != "auto":
        return name
    if x.device.type == "cuda":
        from ..kernels import rlif_cuda

        return "cupy" if rlif_cuda.available()[0] else "torch"
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        from ..kernels import rlif_cpu

        return "cpu" if rlif_cpu.available(warn=True) else "torch"
    return "torch"


def _check_state(t: Optional[torch.Tensor], name: str, x: torch.Tensor, fill: float, check_finite: bool):
    if t is None:
        return torch.full_like(x[0], fill)
    check_input(t, name, min_dim=1, check_finite=check_finite)
    if t.shape != x.shape[1:]:
        raise ValueError(f"{name} must have the shape of one time step {tuple(x.shape[1:])}, got {tuple(t.shape)}")
    return t


def rlif_multistep(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                   v0: Optional[torch.Tensor] = None, s0: Optional[torch.Tensor] = None, *, tau: float = 2.0,
                   v_threshold: float = 1.0, v_reset: Optional[float] = 0.0, decay_input: bool = True,
                   detach_reset: bool = False, surrogate: SurrogateLike = "sigmoid", backend: Optional[str] = None,
                   check_finite: bool = True):
    """Recurrent LIF on ``x [T, B, N]`` with ``weight [N, N]``, ``bias [N]``: ``(spikes, (V_T, S_T))``.

    ``v0`` / ``s0``: membrane and spikes before the first step (default ``V_rest`` / 0);
    ``backend``: ``"auto"`` (``$SPIKING_BACKEND``), ``"torch"``, ``"cpu"`` or ``"cupy"``;
    ``check_finite``: NaN/inf in x raise ``ValueError`` (the CPU kernel checks during its pass).
    """
    check_input(x, "x", min_dim=3, check_finite=False)
    if x.dim() != 3:
        raise ValueError(f"x must have shape [T, B, N], got {tuple(x.shape)}")
    n = x.shape[-1]
    if not isinstance(weight, torch.Tensor) or weight.shape != (n, n):
        raise ValueError(f"weight must be a [{n}, {n}] tensor for x of shape {tuple(x.shape)}, "
                         f"got {tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__}")
    if bias is not None and bias.shape != (n,):
        raise ValueError(f"bias must have shape [{n}], got {tuple(bias.shape)}")
    check_lif_params(tau, v_threshold, v_reset)
    cfg = make_config(v_reset, detach_reset, decay_input, surrogate)
    p = RLIFParams(1.0 / float(tau), float(v_threshold), 0.0 if v_reset is None else float(v_reset))
    name = _backend(backend, x)
    if check_finite and name != "cpu":
        check_input(x, "x", min_dim=3)
    v0 = _check_state(v0, "v0", x, p.rest(cfg), check_finite)
    s0 = _check_state(s0, "s0", x, 0.0, check_finite)
    if name == "torch":
        return rlif_multistep_torch(x, weight, bias, v0, s0, p, cfg)
    if name == "cpu":
        from ..kernels import rlif_cpu

        return rlif_cpu.run(x, weight, bias, v0, s0, p, cfg, check_x=check_finite)
    from ..kernels import rlif_cuda

    return rlif_cuda.run(x, weight, bias, v0, s0, p, cfg)


class RLIF(nn.Module):
    """Recurrent multi-step LIF over ``x [T, B, features]``; ``recurrent`` is an ``nn.Linear`` (W, b).

    ``stateful=True`` carries ``(V, S)`` across calls (``reset()`` clears it); ``backend`` and
    ``check_inputs`` as for the other neurons.
    """

    is_spiking = True

    def __init__(self, features: int, tau: float = 2.0, v_threshold: float = 1.0, v_reset: Optional[float] = 0.0,
                 decay_input: bool = True, detach_reset: bool = False, surrogate: SurrogateLike = "sigmoid",
                 bias: bool = True, stateful: bool = False, backend: Optional[str] = None, check_inputs: bool = True):
        super().__init__()
        if isinstance(features, bool) or not isinstance(features, int) or features < 1:
            raise ValueError(f"features must be a positive int, got {features!r}")
        check_lif_params(tau, v_threshold, v_reset)
        self.features = features
        self.recurrent = nn.Linear(features, features, bias=bias)
        self.kw = dict(tau=float(tau), v_threshold=float(v_threshold), v_reset=v_reset,
                       decay_input=bool(decay_input), detach_reset=bool(detach_reset),
                       surrogate=make_config(v_reset, detach_reset, decay_input, surrogate).surrogate)
        self.stateful, self.backend, self.check_inputs = bool(stateful), backend, bool(check_inputs)
        self.state: Optional[tuple] = None

    def reset(self) -> None:
        """Forget the carried state (``stateful=True``)."""
        self.state = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [T, B, features]`` → spikes ``[T, B, features]``."""
        if isinstance(x, torch.Tensor) and (x.dim() != 3 or x.shape[-1] != self.features):
            raise ValueError(f"RLIF: x must have shape [T, B, {self.features}], got {tuple(x.shape)}")
        v0, s0 = self.state if self.stateful and self.state is not None else (None, None)
        out, state = rlif_multistep(x, self.recurrent.weight, self.recurrent.bias, v0, s0, **self.kw,
                                    backend=self.backend, check_finite=self.check_inputs)
        if self.stateful:
            self.state = tuple(s.detach() for s in state)
        return out

    def step(self, x: torch.Tensor, state: Optional[tuple] = None):
        """Single step with explicit state: ``(S_t, (V_t, S_t)) = step(X_t [B, N], (V_{t-1}, S_{t-1}))``."""
        out, state = rlif_multistep(x.unsqueeze(0), self.recurrent.weight, self.recurrent.bias,
                                    *(state if state is not None else (None, None)), **self.kw,
                                    backend=self.backend, check_finite=self.check_inputs)
        return out[0], state

    def extra_repr(self) -> str:
        return f"features={self.features}, tau={self.kw['tau']:g}, v_threshold={self.kw['v_threshold']:g}, " \
               f"v_reset={self.kw['v_reset']}, decay_input={self.kw['decay_input']}"
