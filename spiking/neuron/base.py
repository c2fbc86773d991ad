"""``NeuronModule``: the stateful ``nn.Module`` shell shared by the neuron family.

A subclass names its :class:`~.registry.NeuronSpec` (``spec``) and sets the spec's parameter tuple
``self._p`` (or overrides ``params(x)``, e.g. for learnable parameters) and its step configuration
``self._cfg``; this class validates the
backend, runs :func:`~.multistep.run`, and keeps the last state between calls with ``stateful``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .multistep import BACKENDS, StepConfig, run
from .functional import check_input
from .registry import NeuronSpec

__all__ = ["NeuronModule"]


class NeuronModule(nn.Module):
    """Multi-step neuron layer: ``x [T, B, ...]`` → output ``[T, B, ...]`` (spikes, or V for LI)."""

    spec: NeuronSpec
    is_spiking = True

    def __init__(self, stateful: bool = False, backend: Optional[str] = None, check_inputs: bool = True):
        super().__init__()
        if backend is not None and (not isinstance(backend, str) or backend.lower() not in BACKENDS):
            raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
        self.stateful = bool(stateful)
        self.backend = backend
        self.check_inputs = bool(check_inputs)
        self.state: Optional[tuple] = None

    def params(self, x: torch.Tensor) -> tuple:
        """The spec's parameter tuple for input ``x [T, B, ...]`` (``self._p`` unless overridden)."""
        return self._p

    def config(self) -> StepConfig:
        """Reset mode, detach, decay_input and surrogate (``self._cfg``)."""
        return self._cfg

    def reset_state(self) -> None:
        """Forget the state kept by ``stateful=True`` (start of a new sequence)."""
        self.state = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [T, B, ...]`` → ``[T, B, ...]``; with ``stateful`` the last state seeds the next call."""
        state0 = self.state if self.stateful else None
        if state0 is not None and state0[0].shape != x.shape[1:]:
            raise ValueError(f"x: a stateful {type(self).__name__} holds a state of shape {tuple(state0[0].shape)} "
                             f"but got steps of shape {tuple(x.shape[1:])}; call reset_state() first")
        out, state = run(self.spec, x, self.params(x), self.config(), state0, self.backend, self.check_inputs)
        if self.stateful:
            self.state = tuple(s.detach() for s in state)
        return out

    def step(self, x: torch.Tensor, state: Optional[tuple] = None):
        """Single step with explicit state: ``(out_t, state_t) = step(x_t, state_{t-1})`` (torch path)."""
        if self.check_inputs:
            check_input(x, "x", min_dim=1)
        params = tuple(torch.as_tensor(p, dtype=x.dtype, device=x.device) for p in self.params(x.unsqueeze(0)))
        params = self.spec.params(*params)
        if state is None:
            state = self.spec.initial(params, x)
        return self.spec.step(x, tuple(state), params, self.config())
