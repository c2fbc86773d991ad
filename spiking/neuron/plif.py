r"""PLIF: LIF with a learnable membrane time constant (Fang et al. 2021; SpikingJelly's
``ParametricLIFNode``).

.. math::
    k = \mathrm{sigmoid}(w) = 1/\tau,\qquad
    H_t = V_{t-1} + (X_t - (V_{t-1} - V_{rest}))\,k\ \ (\text{decay\_input})\quad\text{or}\quad
    V_{t-1} - (V_{t-1} - V_{rest})\,k + X_t

    S_t = \Theta(H_t - V_{th}),\qquad V_t = H_t(1 - S_t) + V_{reset} S_t\ \text{(hard)}\ \text{or}\ H_t - V_{th} S_t

``V_rest = V_reset`` (0 for soft reset); ``w`` is initialised to ``-log(tau - 1)`` (so tau > 1), shared
(a scalar) or one per channel (``channels=C``: dim 2 of ``x [T, B, C, ...]``). Fused definition:
``cuda/neurons/plif.cuh`` (it also returns dL/dk per neuron; autograd reduces it to ``w``).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import nn

from .base import NeuronModule
from .multistep import charge, check_range, fire_reset, make_config, run
from .registry import NeuronSpec, register
from .surrogate import SurrogateLike

__all__ = ["PLIF", "PLIFParams", "plif_step", "plif_multistep"]


class PLIFParams(NamedTuple):
    k: torch.Tensor            # 1/tau = sigmoid(w)
    v_threshold: torch.Tensor
    v_reset: torch.Tensor      # also V_rest; 0 for soft reset


def plif_step(x, state, p: PLIFParams, cfg):
    """One PLIF step (torch reference): ``(S_t, (V_t,))``."""
    h = charge(x, state[0], p.k, p.v_reset, cfg.decay_input)
    s, v = fire_reset(h, p.v_threshold, p.v_reset, cfg)
    return s, (v,)


SPEC = register(NeuronSpec("plif", PLIFParams, ("v",), plif_step,
                           lambda p, like: (p.v_reset,)))


def _decay(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """k = sigmoid(w), shaped to broadcast over one step ``[B, C, ...]`` of ``x``."""
    k = torch.sigmoid(w).to(x.dtype)
    if k.dim() == 0:
        return k
    if x.dim() < 3 or x.shape[2] != k.shape[0]:
        raise ValueError(f"x: a per-channel PLIF with {k.shape[0]} channels needs x [T, B, {k.shape[0]}, ...], "
                         f"got shape {tuple(x.shape)}")
    return k.reshape(k.shape[0], *([1] * (x.dim() - 3)))


def plif_multistep(x: torch.Tensor, w: torch.Tensor, v0: Optional[torch.Tensor] = None, *, v_threshold: float = 1.0,
                   v_reset: Optional[float] = 0.0, decay_input: bool = True, detach_reset: bool = False,
                   surrogate: SurrogateLike = "sigmoid", backend: Optional[str] = None):
    """PLIF on ``x [T, B, ...]`` with decay ``sigmoid(w)`` (scalar or ``[C]``): ``(spikes, v_last)``."""
    check_range("v_threshold", v_threshold)
    rest = 0.0 if v_reset is None else check_range("v_reset", v_reset)
    cfg = make_config(v_reset, detach_reset, decay_input, surrogate)
    params = PLIFParams(_decay(w, x), float(v_threshold), rest)
    out, (v,) = run(SPEC, x, params, cfg, None if v0 is None else (v0,), backend)
    return out, v


class PLIF(NeuronModule):
    """Multi-step PLIF layer; ``w`` (``nn.Parameter``) is the learnable decay logit.

    Args: ``tau`` (initial, > 1); ``channels`` (``None``: one shared tau, else one per channel);
    ``v_threshold``; ``v_reset`` (``None``: soft); ``decay_input``; ``detach_reset``; ``surrogate``;
    ``stateful``; ``backend``; ``check_inputs``.
    """

    spec = SPEC

    def __init__(self, tau: float = 2.0, channels: Optional[int] = None, v_threshold: float = 1.0,
                 v_reset: Optional[float] = 0.0, decay_input: bool = True, detach_reset: bool = False,
                 surrogate: SurrogateLike = "sigmoid", stateful: bool = False, backend: Optional[str] = None,
                 check_inputs: bool = True):
        super().__init__(stateful, backend, check_inputs)
        tau = check_range("tau", tau, 1.0, low_open=True, why=" (w = -log(tau - 1))")
        self.v_threshold = check_range("v_threshold", v_threshold)
        self.v_reset = None if v_reset is None else check_range("v_reset", v_reset)
        if channels is not None and (isinstance(channels, bool) or not isinstance(channels, int) or channels < 1):
            raise ValueError(f"channels must be a positive int or None, got {channels!r}")
        shape = () if channels is None else (channels,)
        self.w = nn.Parameter(torch.full(shape, -math.log(tau - 1.0)))
        self._cfg = make_config(v_reset, detach_reset, decay_input, surrogate)

    @property
    def tau(self) -> torch.Tensor:
        """Current time constant(s) 1/sigmoid(w)."""
        return 1.0 / torch.sigmoid(self.w.detach())

    def params(self, x):
        return PLIFParams(_decay(self.w, x), self.v_threshold, 0.0 if self.v_reset is None else self.v_reset)

    def extra_repr(self):
        return f"channels={self.w.numel() if self.w.dim() else None}, v_threshold={self.v_threshold:g}, " \
               f"v_reset={self.v_reset}, decay_input={self._cfg.decay_input}"
