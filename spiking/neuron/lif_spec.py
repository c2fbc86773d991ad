"""LIF as a neuron of the template family: its parameter tuple and registry entry (``"lif"``).

The fused kernels run LIF's dynamics definition ``cuda/neurons/lif.cuh`` through the template's
loops; :func:`spiking.lif_multistep` and :class:`spiking.LIF` call them through their own torch
custom ops (:mod:`spiking.kernels.cpu` / :mod:`spiking.kernels.cuda`: fp16/bf16, learnable
threshold, ``return_v``). This entry lets the generic machinery (:func:`spiking.neuron.multistep.run`,
``get_neuron("lif")``) run the same definition. The step is :func:`~.functional.lif_step`'s::

    H_t = V_{t-1} + (X_t - (V_{t-1} - V_rest)) / tau   (decay_input)   or   V_{t-1} - (V_{t-1} - V_rest) / tau + X_t
    S_t = Θ(H_t - V_th);  V_t = H_t (1 - S_t) + V_reset S_t (hard)  or  H_t - V_th S_t (soft)

with ``V_rest = v_reset`` (pass ``v_reset = 0`` for soft reset, as for IF). The parameters are one
value per layer (the fused kernel keeps them in registers).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .multistep import fire_reset
from .registry import NeuronSpec, register

__all__ = ["LIFParams", "lif_spec_step", "SPEC"]


class LIFParams(NamedTuple):
    v_threshold: torch.Tensor  # the one parameter with a gradient on the fused path (learn_threshold)
    tau: torch.Tensor
    v_reset: torch.Tensor  # 0 for soft reset


def lif_spec_step(x, state, p: LIFParams, cfg):
    """One LIF step (torch reference, the operation order of ``lif_step``): ``(S_t, (V_t,))``."""
    v = state[0]
    if cfg.decay_input:
        h = v + (x - (v - p.v_reset)) / p.tau
    else:
        h = v - (v - p.v_reset) / p.tau + x
    s, v = fire_reset(h, p.v_threshold, p.v_reset, cfg)
    return s, (v,)


SPEC = register(NeuronSpec("lif", LIFParams, ("v",), lif_spec_step, lambda p, like: (p.v_reset,)))
