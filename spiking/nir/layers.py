"""Layers that :func:`spiking.nir.load` builds besides ``nn.Linear`` and the neurons.

``TimeDistributed`` applies a per-step layer (Conv2d, pooling, Flatten) to ``x [T, B, ...]`` by
folding T into the batch; ``Scale`` is NIR's elementwise ``y = s ⊙ x``; ``SumPool2d`` is NIR's sum
pooling (``AvgPool2d`` times the window size).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["TimeDistributed", "Scale", "SumPool2d"]


class TimeDistributed(nn.Module):
    """``y[t] = module(x[t])`` for ``x [T, B, ...]``, computed as one call on ``[T·B, ...]``."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3:
            raise ValueError(f"x must have shape [T, B, ...] (a per-step layer of {type(self.module).__name__}), "
                             f"got {tuple(x.shape)}")
        y = self.module(x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]))
        return y.reshape(x.shape[0], x.shape[1], *y.shape[1:])


class Scale(nn.Module):
    """``y = scale ⊙ x`` (``scale`` broadcast over one step's per-sample shape)."""

    def __init__(self, scale: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype)


class SumPool2d(nn.AvgPool2d):
    """Sum over each window: ``AvgPool2d`` (no padding counted) times the window area."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size if isinstance(self.kernel_size, tuple) else (self.kernel_size, self.kernel_size)
        return super().forward(x) * math.prod(k)
