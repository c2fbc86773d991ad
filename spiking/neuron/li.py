r"""LI: leaky integrator readout (no spikes); the output is the membrane.

.. math::
    V_t = V_{t-1} + (X_t - (V_{t-1} - V_{leak}))/\tau\ \ (\text{decay\_input})\quad\text{or}\quad
    V_{t-1} - (V_{t-1} - V_{leak})/\tau + X_t

``V_0 = V_leak``. Fused definition: ``cuda/neurons/li.cuh`` (nothing saved: the step is linear).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from .base import NeuronModule
from .multistep import charge, check_range, make_config, run
from .registry import NeuronSpec, register

__all__ = ["LI", "LIParams", "li_step", "li_multistep"]


class LIParams(NamedTuple):
    k: torch.Tensor       # 1/tau
    v_leak: torch.Tensor


def li_step(x, state, p: LIParams, cfg):
    """One LI step (torch reference): ``(V_t, (V_t,))``."""
    v = charge(x, state[0], p.k, p.v_leak, cfg.decay_input)
    return v, (v,)


SPEC = register(NeuronSpec("li", LIParams, ("v",), li_step, lambda p, like: (p.v_leak,),
                           spiking=False))


def li_params(tau: float, v_leak: float) -> LIParams:
    """Validated :class:`LIParams`."""
    tau = check_range("tau", tau, 1.0, why=" (1/tau of the gap to v_leak is closed per step)")
    return LIParams(1.0 / tau, check_range("v_leak", v_leak))


def li_multistep(x: torch.Tensor, v0: Optional[torch.Tensor] = None, *, tau: float = 2.0, v_leak: float = 0.0,
                 decay_input: bool = True, backend: Optional[str] = None):
    """LI on ``x [T, B, ...]``: returns ``(v_seq, v_last)``."""
    out, (v,) = run(SPEC, x, li_params(tau, v_leak), make_config(0.0, False, decay_input, "sigmoid"),
                    None if v0 is None else (v0,), backend)
    return out, v


class LI(NeuronModule):
    """Multi-step leaky-integrator readout: ``x [T, B, ...]`` → membrane ``[T, B, ...]``.

    Args: ``tau`` (>= 1 step), ``v_leak``, ``decay_input``, ``stateful``, ``backend``, ``check_inputs``.
    """

    spec = SPEC
    is_spiking = False

    def __init__(self, tau: float = 2.0, v_leak: float = 0.0, decay_input: bool = True, stateful: bool = False,
                 backend: Optional[str] = None, check_inputs: bool = True):
        super().__init__(stateful, backend, check_inputs)
        self._p = li_params(tau, v_leak)
        self.tau = float(tau)
        self._cfg = make_config(0.0, False, decay_input, "sigmoid")

    def extra_repr(self):
        return f"tau={self.tau:g}, v_leak={self._p.v_leak:g}, decay_input={self._cfg.decay_input}"
