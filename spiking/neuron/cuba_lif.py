r"""CubaLIF: a current-based synapse feeding a LIF membrane (snnTorch ``Synaptic``, Norse ``LIFCell``).

.. math::
    I_t = \alpha I_{t-1} + X_t,\quad \alpha = 1 - 1/\tau_{syn},\qquad
    H_t = V_{t-1} + (I_t - (V_{t-1} - V_{rest}))/\tau_{mem}\ \ (\text{decay\_input})\ \text{or}\
    V_{t-1} - (V_{t-1} - V_{rest})/\tau_{mem} + I_t

    S_t = \Theta(H_t - V_{th}),\qquad V_t = H_t(1 - S_t) + V_{reset} S_t\ \text{(hard)}\ \text{or}\ H_t - V_{th} S_t

``I_0 = 0``, ``V_0 = V_rest = V_reset`` (0 for soft). Fused definition: ``cuda/neurons/cuba_lif.cuh``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from .base import NeuronModule
from .multistep import charge, check_range, fire_reset, make_config, run
from .registry import NeuronSpec, register
from .surrogate import SurrogateLike

__all__ = ["CubaLIF", "CubaLIFParams", "cuba_lif_step", "cuba_lif_multistep"]


class CubaLIFParams(NamedTuple):
    alpha: torch.Tensor        # synaptic decay 1 - 1/tau_syn
    k: torch.Tensor            # 1/tau_mem
    v_threshold: torch.Tensor
    v_reset: torch.Tensor      # also V_rest; 0 for soft reset


def cuba_lif_step(x, state, p: CubaLIFParams, cfg):
    """One CubaLIF step (torch reference): ``(S_t, (I_t, V_t))``."""
    i = p.alpha * state[0] + x
    h = charge(i, state[1], p.k, p.v_reset, cfg.decay_input)
    s, v = fire_reset(h, p.v_threshold, p.v_reset, cfg)
    return s, (i, v)


SPEC = register(NeuronSpec("cuba_lif", CubaLIFParams, ("i", "v"), cuba_lif_step,
                           lambda p, like: (torch.zeros_like(p.alpha), p.v_reset)))


def cuba_lif_params(tau_syn: float, tau_mem: float, v_threshold: float, v_reset: Optional[float]) -> CubaLIFParams:
    """Validated :class:`CubaLIFParams` (``ValueError`` naming the argument out of range)."""
    tau_syn = check_range("tau_syn", tau_syn, 1.0, why=" (alpha = 1 - 1/tau_syn must be in [0, 1))")
    tau_mem = check_range("tau_mem", tau_mem, 1.0, why=" (1/tau_mem of the gap to rest is closed per step)")
    rest = 0.0 if v_reset is None else check_range("v_reset", v_reset)
    return CubaLIFParams(1.0 - 1.0 / tau_syn, 1.0 / tau_mem, check_range("v_threshold", v_threshold), rest)


def cuba_lif_multistep(x: torch.Tensor, state0: Optional[tuple] = None, *, tau_syn: float = 2.0,
                       tau_mem: float = 2.0, v_threshold: float = 1.0, v_reset: Optional[float] = 0.0,
                       decay_input: bool = True, detach_reset: bool = False, surrogate: SurrogateLike = "sigmoid",
                       backend: Optional[str] = None):
    """CubaLIF on ``x [T, B, ...]``: returns ``(spikes, (i_last, v_last))``."""
    cfg = make_config(v_reset, detach_reset, decay_input, surrogate)
    return run(SPEC, x, cuba_lif_params(tau_syn, tau_mem, v_threshold, v_reset), cfg, state0, backend)


class CubaLIF(NeuronModule):
    """Multi-step CubaLIF layer. Args: ``tau_syn``, ``tau_mem`` (>= 1 step), ``v_threshold``, ``v_reset``
    (``None``: soft), ``decay_input``, ``detach_reset``, ``surrogate``, ``stateful``, ``backend``,
    ``check_inputs``."""

    spec = SPEC

    def __init__(self, tau_syn: float = 2.0, tau_mem: float = 2.0, v_threshold: float = 1.0,
                 v_reset: Optional[float] = 0.0, decay_input: bool = True, detach_reset: bool = False,
                 surrogate: SurrogateLike = "sigmoid", stateful: bool = False, backend: Optional[str] = None,
                 check_inputs: bool = True):
        super().__init__(stateful, backend, check_inputs)
        self._p = cuba_lif_params(tau_syn, tau_mem, v_threshold, v_reset)
        self.tau_syn, self.tau_mem, self.v_reset = float(tau_syn), float(tau_mem), v_reset
        self._cfg = make_config(v_reset, detach_reset, decay_input, surrogate)

    def extra_repr(self):
        return f"tau_syn={self.tau_syn:g}, tau_mem={self.tau_mem:g}, v_threshold={self._p.v_threshold:g}, " \
               f"v_reset={self.v_reset}, decay_input={self._cfg.decay_input}"
