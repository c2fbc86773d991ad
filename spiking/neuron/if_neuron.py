r"""IF: integrate-and-fire neurons (no leak), SpikingJelly's ``IFNode``.

.. math::
    H_t = V_{t-1} + X_t,\qquad S_t = \Theta(H_t - V_{th}),\qquad
    V_t = H_t(1 - S_t) + V_{reset} S_t\ \text{(hard)}\quad\text{or}\quad H_t - V_{th} S_t\ \text{(soft)}

``V_0 = V_reset`` (0 for soft reset). Fused CPU/CUDA definition: ``cuda/neurons/if.cuh``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from .base import NeuronModule
from .multistep import check_range, fire_reset, make_config, run
from .registry import NeuronSpec, register
from .surrogate import SurrogateLike

__all__ = ["IF", "IFParams", "if_step", "if_multistep"]


class IFParams(NamedTuple):
    v_threshold: torch.Tensor
    v_reset: torch.Tensor  # 0 for soft reset


def if_step(x, state, p: IFParams, cfg):
    """One IF step (torch reference): ``(S_t, (V_t,))``."""
    s, v = fire_reset(state[0] + x, p.v_threshold, p.v_reset, cfg)
    return s, (v,)


SPEC = register(NeuronSpec("if", IFParams, ("v",), if_step, lambda p, like: (p.v_reset,)))


def _params(v_threshold, v_reset) -> IFParams:
    check_range("v_threshold", v_threshold)
    if v_reset is not None:
        check_range("v_reset", v_reset)
    return IFParams(float(v_threshold), 0.0 if v_reset is None else float(v_reset))


def if_multistep(x: torch.Tensor, v0: Optional[torch.Tensor] = None, *, v_threshold: float = 1.0,
                 v_reset: Optional[float] = 0.0, detach_reset: bool = False, surrogate: SurrogateLike = "sigmoid",
                 backend: Optional[str] = None):
    """IF on ``x [T, B, ...]``: returns ``(spikes, v_last)``."""
    cfg = make_config(v_reset, detach_reset, True, surrogate)
    out, (v,) = run(SPEC, x, _params(v_threshold, v_reset), cfg, None if v0 is None else (v0,), backend)
    return out, v


class IF(NeuronModule):
    """Multi-step IF layer (see the module docstring for the equations).

    Args: ``v_threshold``; ``v_reset`` (``None``: soft reset); ``detach_reset``; ``surrogate``;
    ``stateful``; ``backend`` (``"auto"``/``"torch"``/``"cpu"``/``"cupy"``); ``check_inputs``.
    """

    spec = SPEC

    def __init__(self, v_threshold: float = 1.0, v_reset: Optional[float] = 0.0, detach_reset: bool = False,
                 surrogate: SurrogateLike = "sigmoid", stateful: bool = False, backend: Optional[str] = None,
                 check_inputs: bool = True):
        super().__init__(stateful, backend, check_inputs)
        self._p = _params(v_threshold, v_reset)
        self.v_threshold, self.v_reset = float(v_threshold), v_reset
        self._cfg = make_config(v_reset, detach_reset, True, surrogate)

    def extra_repr(self):
        return f"v_threshold={self.v_threshold:g}, v_reset={self.v_reset}, surrogate={self._cfg.surrogate.name}"
