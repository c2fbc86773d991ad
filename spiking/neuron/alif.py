r"""ALIF: LIF with an adaptive threshold, the LSNN form of Bellec et al. (2018).

.. math::
    \theta_t = V_{th} + \beta a_{t-1},\qquad H_t = V_{t-1} + (X_t - (V_{t-1} - V_{rest}))/\tau\ \ (\text{or the
    decay\_input=False form}),\qquad S_t = \Theta(H_t - \theta_t)

    V_t = H_t(1 - S_t) + V_{reset} S_t\ \text{(hard)}\ \text{or}\ H_t - \theta_t S_t\ \text{(soft)},\qquad
    a_t = \rho\, a_{t-1} + (1 - \rho) S_t,\quad \rho = 1 - 1/\tau_{adapt}

Bellec's ``b_{t+1} = ρ b_t + (1 − ρ) z_t``, ``A_t = b_0 + β b_t`` is ``a_t`` here (the gradient flows
through the adaptation, as in BPTT for LSNNs); their ``ρ = exp(−δt/τ_a)`` is ``tau_adapt = 1/(1 − ρ)``.
``a_0 = 0``. Fused definition: ``cuda/neurons/alif.cuh``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from .base import NeuronModule
from .multistep import charge, check_range, fire_reset, make_config, run
from .registry import NeuronSpec, register
from .surrogate import SurrogateLike

__all__ = ["ALIF", "ALIFParams", "alif_step", "alif_multistep"]


class ALIFParams(NamedTuple):
    k: torch.Tensor            # 1/tau
    v_threshold: torch.Tensor  # baseline threshold
    v_reset: torch.Tensor      # also V_rest; 0 for soft reset
    beta: torch.Tensor         # adaptation strength
    rho: torch.Tensor          # adaptation decay, 1 - 1/tau_adapt


def alif_step(x, state, p: ALIFParams, cfg):
    """One ALIF step (torch reference): ``(S_t, (V_t, a_t))``."""
    v, a = state
    theta = p.v_threshold + p.beta * a
    h = charge(x, v, p.k, p.v_reset, cfg.decay_input)
    s, v = fire_reset(h, theta, p.v_reset, cfg)
    return s, (v, p.rho * a + (1.0 - p.rho) * s)


SPEC = register(NeuronSpec("alif", ALIFParams, ("v", "a"), alif_step,
                           lambda p, like: (p.v_reset, torch.zeros_like(p.rho))))


def alif_params(tau: float, v_threshold: float, v_reset: Optional[float], beta: float, tau_adapt: float) -> ALIFParams:
    """Validated :class:`ALIFParams` (``ValueError`` naming the argument out of range)."""
    tau = check_range("tau", tau, 1.0, why=" (1/tau of the gap to rest is closed per step)")
    tau_adapt = check_range("tau_adapt", tau_adapt, 1.0)
    beta = check_range("beta", beta, 0.0)
    rest = 0.0 if v_reset is None else check_range("v_reset", v_reset)
    return ALIFParams(1.0 / tau, check_range("v_threshold", v_threshold), rest, beta, 1.0 - 1.0 / tau_adapt)


def alif_multistep(x: torch.Tensor, state0: Optional[tuple] = None, *, tau: float = 2.0, v_threshold: float = 1.0,
                   v_reset: Optional[float] = 0.0, beta: float = 1.8, tau_adapt: float = 20.0,
                   decay_input: bool = True, detach_reset: bool = False, surrogate: SurrogateLike = "sigmoid",
                   backend: Optional[str] = None):
    """ALIF on ``x [T, B, ...]``: returns ``(spikes, (v_last, a_last))``."""
    cfg = make_config(v_reset, detach_reset, decay_input, surrogate)
    return run(SPEC, x, alif_params(tau, v_threshold, v_reset, beta, tau_adapt), cfg, state0, backend)


class ALIF(NeuronModule):
    """Multi-step ALIF layer. Args: ``tau``, ``v_threshold``, ``v_reset`` (``None``: soft), ``beta``,
    ``tau_adapt`` (both >= 1 step), ``decay_input``, ``detach_reset``, ``surrogate``, ``stateful``,
    ``backend``, ``check_inputs``."""

    spec = SPEC

    def __init__(self, tau: float = 2.0, v_threshold: float = 1.0, v_reset: Optional[float] = 0.0, beta: float = 1.8,
                 tau_adapt: float = 20.0, decay_input: bool = True, detach_reset: bool = False,
                 surrogate: SurrogateLike = "sigmoid", stateful: bool = False, backend: Optional[str] = None,
                 check_inputs: bool = True):
        super().__init__(stateful, backend, check_inputs)
        self._p = alif_params(tau, v_threshold, v_reset, beta, tau_adapt)
        self.tau, self.tau_adapt, self.v_reset = float(tau), float(tau_adapt), v_reset
        self._cfg = make_config(v_reset, detach_reset, decay_input, surrogate)

    def extra_repr(self):
        return f"tau={self.tau:g}, v_threshold={self._p.v_threshold:g}, beta={self._p.beta:g}, " \
               f"tau_adapt={self.tau_adapt:g}, v_reset={self.v_reset}"
