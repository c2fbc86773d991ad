"""Input encoders: ``x [B, ...]`` → ``[T, B, ...]``.

- :func:`direct`: the analog value as input current every step, ``X_t = x``.
- :func:`rate`: Bernoulli spikes, ``P(S_t = 1) = clamp(gain·x, 0, 1)``; or Poisson events per step,
  ``P(S_t = 1) = 1 - exp(-gain·x)`` (at least one event of a Poisson process of rate gain·x).
- :func:`latency`: one spike at the time-to-first-spike, earlier for larger x:
  linear ``t = round((1 - x)·(T - 1))``, or log ``t = round(tau·ln(x / (x - threshold)))``
  clipped to T − 1; values ``x <= threshold`` never spike.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from .neuron.functional import check_input

__all__ = ["direct", "rate", "latency"]


def _check_T(T: int) -> int:
    if isinstance(T, bool) or not isinstance(T, int):
        raise TypeError(f"T must be an int, got {type(T).__name__}")
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    return T


def direct(x: torch.Tensor, T: int) -> torch.Tensor:
    """Repeat ``x`` over T steps as input current: ``[T, B, ...]`` (an expanded view, no copy)."""
    check_input(x, "x", min_dim=1)
    return x.unsqueeze(0).expand(_check_T(T), *x.shape)


def _check_unit(x: torch.Tensor) -> None:
    check_input(x, "x", min_dim=1)
    if bool((x < 0).any()) or bool((x > 1).any()):
        raise ValueError("x must lie in [0, 1] for rate/latency coding (scale it first)")


def rate(
    x: torch.Tensor,
    T: int,
    *,
    gain: float = 1.0,
    method: str = "bernoulli",
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Rate code: independent spikes each step with ``p = clamp(gain·x, 0, 1)`` (``"bernoulli"``)
    or ``p = 1 - exp(-gain·x)`` (``"poisson"``). Seed through ``generator``."""
    _check_unit(x)
    _check_T(T)
    if not math.isfinite(gain) or gain <= 0:
        raise ValueError(f"gain must be a positive finite number, got {gain!r}")
    if method == "bernoulli":
        p = (gain * x).clamp(0.0, 1.0)
    elif method == "poisson":
        p = 1.0 - torch.exp(-gain * x)
    else:
        raise ValueError(f"method must be 'bernoulli' or 'poisson', got {method!r}")
    u = torch.rand((T, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
    return (u < p.unsqueeze(0)).to(x.dtype)


def latency(
    x: torch.Tensor,
    T: int,
    *,
    method: str = "linear",
    tau: float = 5.0,
    threshold: float = 0.01,
) -> torch.Tensor:
    """Time-to-first-spike code: one spike per input at ``t(x)``, none where ``x <= threshold``."""
    _check_unit(x)
    _check_T(T)
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must lie in [0, 1), got {threshold!r}")
    active = x > threshold
    if method == "linear":
        t = torch.round((1.0 - x) * (T - 1))
    elif method == "log":
        if not math.isfinite(tau) or tau <= 0:
            raise ValueError(f"tau must be a positive finite number, got {tau!r}")
        safe = torch.where(active, x, torch.ones_like(x))
        t = torch.round(tau * torch.log(safe / (safe - threshold).clamp_min(1e-12)))
    else:
        raise ValueError(f"method must be 'linear' or 'log', got {method!r}")
    t = t.clamp(0, T - 1).long()
    steps = torch.arange(T, device=x.device).view(T, *([1] * x.dim()))
    return ((steps == t.unsqueeze(0)) & active.unsqueeze(0)).to(x.dtype)
