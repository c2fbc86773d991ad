"""``LIF``: the leaky integrate-and-fire layer as a ``torch.nn.Module``.

A thin stateful shell over :func:`spiking.neuron.functional.lif_multistep`; see that module for the
equations. Multi-step by default: ``LIF()(x)`` maps ``x [T, B, ...]`` to spikes ``[T, B, ...]``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .functional import BACKENDS, check_input, check_lif_params, lif_multistep, lif_step
from .surrogate import SurrogateLike, get_surrogate

__all__ = ["LIF"]


class LIF(nn.Module):
    r"""Multi-step leaky integrate-and-fire neurons with surrogate gradients.

    .. math::
        H_t = V_{t-1} + \frac{X_t - (V_{t-1} - V_{rest})}{\tau} \quad(\text{decay\_input}),\qquad
        H_t = V_{t-1} - \frac{V_{t-1} - V_{rest}}{\tau} + X_t \quad(\text{otherwise})

        S_t = \Theta(H_t - V_{th}),\qquad
        V_t = H_t(1 - S_t) + V_{reset} S_t \ \text{(hard)}\quad\text{or}\quad V_t = H_t - V_{th} S_t \ \text{(soft)}

    Args:
        tau: membrane time constant (> 0), in steps.
        v_threshold: firing threshold V_th.
        v_reset: reset potential for hard reset; ``None`` selects soft reset (subtract V_th).
        decay_input: whether the input is scaled by 1/tau.
        detach_reset: cut the gradient through the reset term.
        surrogate: ``"sigmoid"``, ``"atan"``, ``"fast_sigmoid"`` (``"superspike"``), ``"triangle"``,
            a ``(name, parameter)`` tuple or a :class:`~spiking.neuron.surrogate.Surrogate`.
        learn_threshold: make V_th a trainable scalar parameter.
        return_v: ``forward`` returns ``(spikes, v_seq)`` with the membrane after each step.
        stateful: keep the final membrane between ``forward`` calls (until :meth:`reset_state`);
            by default every call starts a fresh sequence from V_rest.
        backend: ``"auto"`` / ``"torch"`` / ``"cpu"`` / ``"cupy"``; ``None`` reads ``$SPIKING_BACKEND``.
        check_inputs: validate shapes and reject NaN/inf input (``ValueError``); the fused backends
            check x inside their kernel's pass (no extra cost), the torch backend scans x first.
    """

    is_spiking = True

    def __init__(
        self,
        tau: float = 2.0,
        v_threshold: float = 1.0,
        v_reset: Optional[float] = 0.0,
        decay_input: bool = True,
        detach_reset: bool = False,
        surrogate: SurrogateLike = "sigmoid",
        learn_threshold: bool = False,
        return_v: bool = False,
        stateful: bool = False,
        backend: Optional[str] = None,
        check_inputs: bool = True,
    ):
        super().__init__()
        check_lif_params(tau, v_threshold, v_reset)
        if backend is not None and backend.lower() not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
        self.tau = float(tau)
        self.v_reset = None if v_reset is None else float(v_reset)
        self.decay_input = bool(decay_input)
        self.detach_reset = bool(detach_reset)
        self.surrogate = get_surrogate(surrogate)
        self.return_v = bool(return_v)
        self.stateful = bool(stateful)
        self.backend = backend
        self.check_inputs = bool(check_inputs)
        if learn_threshold:
            self.v_threshold = nn.Parameter(torch.tensor(float(v_threshold)))
        else:
            self.v_threshold = float(v_threshold)
        self.v: Optional[torch.Tensor] = None

    def _params(self) -> dict:
        return dict(
            tau=self.tau, v_threshold=self.v_threshold, v_reset=self.v_reset, decay_input=self.decay_input,
            detach_reset=self.detach_reset, surrogate=self.surrogate,
        )

    def reset_state(self) -> None:
        """Forget the membrane kept by ``stateful=True`` (start of a new sequence)."""
        self.v = None

    def forward(self, x: torch.Tensor):
        """``x [T, B, ...]`` → spikes ``[T, B, ...]`` (and ``v_seq`` with ``return_v``)."""
        v0 = self.v if self.stateful else None
        if v0 is not None and v0.shape != x.shape[1:]:
            raise ValueError(
                f"x: a stateful LIF holds a state of shape {tuple(v0.shape)} but got steps of shape "
                f"{tuple(x.shape[1:])}; call reset_state() between sequences of different shape"
            )
        s, v = lif_multistep(
            x, v0, **self._params(), return_v=self.return_v, backend=self.backend,
            check_finite=self.check_inputs,
        )
        if self.stateful:
            self.v = (v[-1] if self.return_v else v).detach()
        return (s, v) if self.return_v else s

    def step(self, x: torch.Tensor, v: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Single-step mode with explicit state: ``(S_t, V_t) = step(X_t, V_{t-1})``.

        ``x`` is one time step ``[B, ...]``; ``v=None`` starts from V_rest.
        """
        if self.check_inputs:
            check_input(x, "x", min_dim=1)
        if v is None:
            v = torch.full_like(x, 0.0 if self.v_reset is None else self.v_reset)
        elif not isinstance(v, torch.Tensor):
            raise TypeError(f"v must be a torch.Tensor or None, got {type(v).__name__}")
        elif v.shape != x.shape:
            raise ValueError(f"v must have the shape of x {tuple(x.shape)}, got {tuple(v.shape)}")
        elif v.dtype != x.dtype:  # as forward: a float64 state would silently promote the output
            raise TypeError(f"v must have the dtype of x ({x.dtype}), got {v.dtype}")
        elif v.device != x.device:
            raise ValueError(f"v must be on the device of x ({x.device}), got {v.device}")
        elif self.check_inputs:
            check_input(v, "v", min_dim=1)
        return lif_step(x, v, **self._params())

    def extra_repr(self) -> str:
        reset = "soft" if self.v_reset is None else f"hard(v_reset={self.v_reset})"
        vth = float(self.v_threshold.detach()) if isinstance(self.v_threshold, torch.Tensor) else self.v_threshold
        return (
            f"tau={self.tau}, v_threshold={vth:g}, reset={reset}, "
            f"decay_input={self.decay_input}, detach_reset={self.detach_reset}, "
            f"surrogate={self.surrogate.name}({self.surrogate.param:g})"
        )
