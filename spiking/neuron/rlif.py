r"""RLIF: LIF neurons with an explicit recurrent weight (snnTorch ``RLeaky`` with ``all_to_all``).

.. math::
    H_t = V_{t-1} + (X_t + W S_{t-1} + b - (V_{t-1} - V_{rest}))/\tau\ \ (\text{decay\_input})\quad\text{or}\quad
    V_{t-1} - (V_{t-1} - V_{rest})/\tau + X_t + W S_{t-1} + b

    S_t = \Theta(H_t - V_{th}),\qquad V_t = H_t(1 - S_t) + V_{reset} S_t\ \text{(hard)}\ \text{or}\ H_t - V_{th} S_t

``S_0 = 0``, ``V_0 = V_rest``. Why RLIF is not on the fused template: ``W S_{t-1}`` couples every
neuron of a layer to every other within one time step (a dense matmul per step), while the
template's loops keep each neuron's state private and never synchronise neurons inside the time
loop. RLIF therefore runs the recurrent matmul and :func:`~spiking.neuron.functional.lif_step` in
torch, step by step.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .functional import check_input, check_lif_params, lif_step
from .surrogate import SurrogateLike, get_surrogate

__all__ = ["RLIF"]


class RLIF(nn.Module):
    """Recurrent multi-step LIF over ``x [T, B, features]``; ``recurrent`` is an ``nn.Linear``."""

    is_spiking = True

    def __init__(self, features: int, tau: float = 2.0, v_threshold: float = 1.0, v_reset: Optional[float] = 0.0,
                 decay_input: bool = True, detach_reset: bool = False, surrogate: SurrogateLike = "sigmoid",
                 bias: bool = True):
        super().__init__()
        if isinstance(features, bool) or not isinstance(features, int) or features < 1:
            raise ValueError(f"features must be a positive int, got {features!r}")
        check_lif_params(tau, v_threshold, v_reset)
        if tau < 1:
            raise ValueError(f"tau must be >= 1 (1/tau of the gap to rest is closed per step), got {tau!r}")
        self.features = features
        self.recurrent = nn.Linear(features, features, bias=bias)
        self.kw = dict(tau=float(tau), v_threshold=float(v_threshold), v_reset=v_reset,
                       decay_input=bool(decay_input), detach_reset=bool(detach_reset),
                       surrogate=get_surrogate(surrogate))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [T, B, features]`` → spikes ``[T, B, features]``."""
        check_input(x, "x", min_dim=3)
        if x.shape[-1] != self.features or x.dim() != 3:
            raise ValueError(f"x must have shape [T, B, {self.features}], got {tuple(x.shape)}")
        rest = 0.0 if self.kw["v_reset"] is None else self.kw["v_reset"]
        v = torch.full_like(x[0], rest)
        s = torch.zeros_like(x[0])
        out = []
        for xt in x.unbind(0):
            s, v = lif_step(xt + self.recurrent(s), v, **self.kw)
            out.append(s)
        return torch.stack(out)

    def extra_repr(self) -> str:
        return f"features={self.features}, tau={self.kw['tau']:g}, v_threshold={self.kw['v_threshold']:g}, " \
               f"v_reset={self.kw['v_reset']}, decay_input={self.kw['decay_input']}"
