"""Surrogate gradients for the Heaviside spike function.

Forward, every surrogate is the same step function of ``z = H - V_th``::

    S = Θ(z) = 1 if z >= 0 else 0

Backward, dS/dz is replaced by a smooth σ'(z). The four shapes are defined the way the peer
libraries define them, so gradients can be compared one to one:

=================  ==========================  ==============================================
name               parameter (default)         σ'(z)
=================  ==========================  ==============================================
``sigmoid``        alpha (4.0)                 alpha · sig(alpha z) · (1 - sig(alpha z))
``atan``           alpha (2.0)                 (alpha / 2) / (1 + (π/2 · alpha · z)²)
``fast_sigmoid``   slope (25.0)                1 / (1 + slope · |z|)²   (a.k.a. SuperSpike)
``triangle``       width (1.0)                 max(0, 1 - |z| / width) / width
=================  ==========================  ==============================================

The same formulas are implemented for the fused kernels in ``cuda/lif_step.cuh`` (``lif::surrogate_grad``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Union

import torch

__all__ = [
    "Surrogate",
    "SURROGATES",
    "sigmoid",
    "atan",
    "fast_sigmoid",
    "superspike",
    "triangle",
    "get_surrogate",
    "spike",
]


def sigmoid_grad(z: torch.Tensor, alpha: float) -> torch.Tensor:
    """σ'(z) = alpha · sig(alpha z) · (1 − sig(alpha z))."""
    s = torch.sigmoid(alpha * z)
    return alpha * s * (1.0 - s)


def atan_grad(z: torch.Tensor, alpha: float) -> torch.Tensor:
    """σ'(z) = (alpha/2) / (1 + (π/2 · alpha · z)²)."""
    return (alpha / 2.0) / (1.0 + (math.pi / 2.0 * alpha * z) ** 2)


def fast_sigmoid_grad(z: torch.Tensor, slope: float) -> torch.Tensor:
    """σ'(z) = 1 / (1 + slope · |z|)²."""
    return 1.0 / (1.0 + slope * z.abs()) ** 2


def triangle_grad(z: torch.Tensor, width: float) -> torch.Tensor:
    """σ'(z) = max(0, 1 − |z|/width) / width."""
    return (1.0 - z.abs() / width).clamp(min=0.0) / width


# name -> (σ' function, parameter name, default parameter, integer id used by the kernels)
SURROGATES: dict[str, tuple[Callable[[torch.Tensor, float], torch.Tensor], str, float, int]] = {
    "sigmoid": (sigmoid_grad, "alpha", 4.0, 0),
    "atan": (atan_grad, "alpha", 2.0, 1),
    "fast_sigmoid": (fast_sigmoid_grad, "slope", 25.0, 2),
    "triangle": (triangle_grad, "width", 1.0, 3),
}
_ALIASES = {"superspike": "fast_sigmoid", "arctan": "atan", "triangular": "triangle"}


@dataclass(frozen=True)
class Surrogate:
    """A named surrogate with its width/steepness parameter.

    ``Surrogate("atan", 2.0).grad(z)`` evaluates σ'(z); ``.spike(z)`` is Θ(z) with σ' as gradient.
    """

    name: str
    param: float

    def __post_init__(self):
        if self.name not in SURROGATES:
            raise ValueError(
                f"surrogate: unknown name {self.name!r}; choose one of {sorted(SURROGATES)}"
                f" (aliases {sorted(_ALIASES)})"
            )
        p = float(self.param)
        if not math.isfinite(p) or p <= 0:
            pname = SURROGATES[self.name][1]
            raise ValueError(f"surrogate {self.name!r}: {pname} must be a positive finite number, got {self.param!r}")
        object.__setattr__(self, "param", p)

    @property
    def kernel_id(self) -> int:
        """Integer id of this shape in ``cuda/lif_step.cuh``."""
        return SURROGATES[self.name][3]

    def grad(self, z: torch.Tensor) -> torch.Tensor:
        """σ'(z)."""
        return SURROGATES[self.name][0](z, self.param)

    def spike(self, z: torch.Tensor) -> torch.Tensor:
        """Θ(z) forward, σ'(z) backward."""
        return _SpikeFunction.apply(z, self)


def sigmoid(alpha: float = 4.0) -> Surrogate:
    """Sigmoid surrogate, σ'(z) = alpha·sig(alpha z)(1 − sig(alpha z))."""
    return Surrogate("sigmoid", alpha)


def atan(alpha: float = 2.0) -> Surrogate:
    """Arctan surrogate, σ'(z) = (alpha/2) / (1 + (π/2·alpha·z)²)."""
    return Surrogate("atan", alpha)


def fast_sigmoid(slope: float = 25.0) -> Surrogate:
    """Fast-sigmoid / SuperSpike surrogate, σ'(z) = 1 / (1 + slope·|z|)²."""
    return Surrogate("fast_sigmoid", slope)


superspike = fast_sigmoid


def triangle(width: float = 1.0) -> Surrogate:
    """Triangle surrogate, σ'(z) = max(0, 1 − |z|/width) / width."""
    return Surrogate("triangle", width)


SurrogateLike = Union[str, Surrogate, tuple]


def get_surrogate(surrogate: SurrogateLike) -> Surrogate:
    """Resolve ``"atan"``, ``("atan", 3.0)`` or a :class:`Surrogate` to a :class:`Surrogate`."""
    if isinstance(surrogate, Surrogate):
        return surrogate
    if isinstance(surrogate, str):
        return _named(surrogate)
    if isinstance(surrogate, tuple) and len(surrogate) == 2 and isinstance(surrogate[0], str):
        name = _ALIASES.get(surrogate[0].lower(), surrogate[0].lower())
        return Surrogate(name, surrogate[1])
    raise TypeError(
        f"surrogate: expected a name, a (name, parameter) tuple or a Surrogate, got {type(surrogate).__name__}"
    )


def _named(surrogate: str) -> Surrogate:
    """The surrogate of a name or alias with its default parameter (one shared object per name)."""
    name = _ALIASES.get(surrogate.lower(), surrogate.lower())
    if name not in SURROGATES:
        raise ValueError(
            f"surrogate: unknown name {surrogate!r}; choose one of {sorted(SURROGATES)}"
            f" (aliases {sorted(_ALIASES)})"
        )
    sg = _DEFAULTS.get(name)
    if sg is None:
        sg = _DEFAULTS[name] = Surrogate(name, SURROGATES[name][2])
    return sg


_DEFAULTS: dict = {}


class _SpikeFunction(torch.autograd.Function):
    """S = Θ(z) with dS/dz := σ'(z)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, sg: Surrogate) -> torch.Tensor:
        ctx.save_for_backward(z)
        ctx.sg = sg
        return (z >= 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (z,) = ctx.saved_tensors
        return grad_out * ctx.sg.grad(z), None


def spike(z: torch.Tensor, surrogate: SurrogateLike = "sigmoid") -> torch.Tensor:
    """Θ(z) with the given surrogate gradient (functional form)."""
    return get_surrogate(surrogate).spike(z)
