"""``DeviceMean``: a running sum and count kept on the device, read by the host once.

    add(v):  s ← s + v,  n ← n + 1        (one device op; ``v`` a 0-dim tensor or a float)
    value(): s / n  as a Python float       (one host sync; NaN when nothing was added)

The runner keeps each task's training loss in one (``_SeedRun.task_loss``), so a training step
never waits for the device; ``finite()`` checks the sum without reading it twice.
"""
from __future__ import annotations

import math

import torch

__all__ = ["DeviceMean"]


class DeviceMean:
    """Sum (float64, on the values' device) and count of the values added since the last reset."""

    def __init__(self):
        self.sum: torch.Tensor | float = 0.0
        self.count = 0

    def reset(self) -> None:
        self.sum, self.count = 0.0, 0

    def add(self, v) -> None:
        if isinstance(v, torch.Tensor):
            with torch.no_grad():  # a loss with autograd history is read, not recorded (no detach op)
                if isinstance(self.sum, torch.Tensor):
                    self.sum.add_(v)
                else:
                    self.sum = v.to(torch.float64) + self.sum
        else:
            self.sum = self.sum + float(v)
        self.count += 1

    def total(self) -> float:
        """The sum as a Python float (one host sync)."""
        return float(self.sum)

    def value(self) -> float:
        """The mean of the added values (NaN when none was added); one host sync."""
        return self.total() / self.count if self.count else float("nan")

    def finite(self) -> bool:
        """Whether every added value was finite (a non-finite value makes the sum non-finite)."""
        return math.isfinite(self.total())
