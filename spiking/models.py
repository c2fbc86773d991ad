"""Reference classifiers for the runner: ``SpikingMLP`` (LIF, direct input) and ``MLP`` (ReLU).

SpikingMLP with sizes [n_0, n_1, ..., n_L] and T steps, direct encoding (the analog input is the
input current at every step, no Poisson sampling):

    I¹_t = W¹ x              (the same for every t: computed once and broadcast over T)
    s^l_t = LIF(I^l)_t,      I^{l+1}_t = W^{l+1} s^l_t           for the hidden layers l = 1..L−1
    logits = (1/T) Σ_t W^L s^{L−1}_t = W^L ((1/T) Σ_t s^{L−1}_t)

i.e. the readout is the mean over T of the output layer's input current (no output neurons);
by linearity it is computed as one matmul on the mean spike train. The default neuron is the
HLOP paper's BPTT neuron (docs/hlop.md): V ← V(1 − 1/τ) + X with τ = 2 (decay_input=False),
V_th = 1, soft reset, detached reset, sigmoid surrogate α = 4.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .linear import Linear
from .neuron import LIF

#: The HLOP paper's BPTT LIF (τ = 2, V_th = 1, soft reset, detached reset, sigmoid α = 4).
PAPER_LIF = dict(tau=2.0, v_threshold=1.0, v_reset=None, decay_input=False, detach_reset=True,
                 surrogate=("sigmoid", 4.0))


def _check_sizes(sizes) -> list[int]:
    sizes = list(sizes)
    if len(sizes) < 2 or not all(isinstance(s, int) and s >= 1 for s in sizes):
        raise ValueError(f"sizes must be >= 2 positive ints (input, ..., outputs), got {sizes!r}")
    return sizes


class _TimeMean(torch.autograd.Function):
    """``mean_t s_t`` of ``s [T, ...]``; backward ``∂s_t = ∂m / T`` as autograd's mean computes it
    (expand, then divide) without its ``unsqueeze``: one op fewer per step."""

    @staticmethod
    def forward(ctx, s):
        ctx.shape = s.shape
        return s.mean(0)

    @staticmethod
    def backward(ctx, g):
        return g.expand(ctx.shape).div(ctx.shape[0])


def time_mean(s: torch.Tensor) -> torch.Tensor:
    """``s.mean(0)`` (the same values), with a one-op-shorter backward when ``s`` needs a gradient."""
    return _TimeMean.apply(s) if torch.is_grad_enabled() and s.requires_grad else s.mean(0)


class SpikingMLP(nn.Module):
    """Linear→LIF per hidden layer, direct input over ``T`` steps, mean-current readout."""

    def __init__(self, sizes: Sequence[int] = (784, 800, 800, 10), T: int = 6, bias: bool = False,
                 **neuron):
        super().__init__()
        sizes = _check_sizes(sizes)
        if not isinstance(T, int) or T < 1:
            raise ValueError(f"T must be a positive int, got {T!r}")
        self.T = T
        self.sizes = sizes
        self.fcs = nn.ModuleList(Linear(a, b, bias=bias) for a, b in zip(sizes, sizes[1:]))
        kwargs = {**PAPER_LIF, **neuron}
        self.lifs = nn.ModuleList(LIF(**kwargs) for _ in sizes[1:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1) if x.dim() != 2 else x
        if len(self.lifs) == 0:
            return self.fcs[0](x)
        current = self.fcs[0](x)  # constant over T: computed once, repeated for the fused LIF
        s = self.lifs[0](current.repeat(self.T, *([1] * current.dim())))
        for fc, lif in zip(self.fcs[1:-1], self.lifs[1:]):
            s = lif(fc(s))
        return self.fcs[-1](time_mean(s))


class MLP(nn.Module):
    """Non-spiking Linear→ReLU network with the same ``sizes`` convention (for quick tests)."""

    def __init__(self, sizes: Sequence[int] = (784, 100, 10), bias: bool = True):
        super().__init__()
        sizes = _check_sizes(sizes)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            layers.append(nn.Linear(a, b, bias=bias))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))
