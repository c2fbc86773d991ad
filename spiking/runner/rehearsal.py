"""Rehearsal schedules: how much of a rehearsal budget each old task gets, as a function of age.

At phase k (0-based index of the task being trained or just finished) an old task j < k has age
a = k − j >= 1 and weight

    uniform:      w_j = 1
    exponential:  w_j = exp(−rate · (a − 1))
    power:        w_j = a^(−rate)                 (power-law decay, Gandhi et al. 2024)

and share p_j = w_j / Σ_i w_i. Used by the timeline's rehearse events and by the replay strategy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

KINDS = ("uniform", "exponential", "power")


@dataclass(frozen=True)
class RehearsalSchedule:
    kind: str = "uniform"
    rate: float = 1.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"rehearsal kind must be one of {KINDS}, got {self.kind!r}")
        if not (isinstance(self.rate, (int, float)) and math.isfinite(self.rate) and self.rate >= 0):
            raise ValueError(f"rehearsal rate must be a finite number >= 0, got {self.rate!r}")

    def weights(self, phase: int, tasks) -> torch.Tensor:
        """Shares p_j (summing to 1) for the old ``tasks`` (indices < ``phase``)."""
        ages = torch.tensor([phase - j for j in tasks], dtype=torch.float64)
        if len(ages) == 0:
            raise ValueError("tasks must name at least one old task")
        if (ages < 1).any():
            raise ValueError(f"tasks must all be older than phase {phase}, got {list(tasks)}")
        if self.kind == "uniform":
            w = torch.ones_like(ages)
        elif self.kind == "exponential":
            w = torch.exp(-self.rate * (ages - 1))
        else:
            w = ages.pow(-self.rate)
        return w / w.sum()

    def shares(self, phase: int, tasks) -> list[float]:
        """:meth:`weights` as Python floats computed on the host (no tensor op), for host-side draws."""
        ages = [phase - j for j in tasks]
        if not ages:
            raise ValueError("tasks must name at least one old task")
        if min(ages) < 1:
            raise ValueError(f"tasks must all be older than phase {phase}, got {list(tasks)}")
        if self.kind == "uniform":
            w = [1.0] * len(ages)
        elif self.kind == "exponential":
            w = [math.exp(-self.rate * (a - 1)) for a in ages]
        else:
            w = [a ** -self.rate for a in ages]
        total = sum(w)
        return [v / total for v in w]

    def sample_tasks(self, phase: int, tasks, n: int, generator: torch.Generator) -> torch.Tensor:
        """Draw ``n`` task indices from ``tasks`` with the schedule's shares (with replacement)."""
        p = self.weights(phase, tasks)
        pick = torch.multinomial(p, n, replacement=True, generator=generator)
        return torch.as_tensor(list(tasks), dtype=torch.int64)[pick]
