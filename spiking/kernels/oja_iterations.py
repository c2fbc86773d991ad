"""The Oja-subspace iterations of several lateral banks as one native op: ``torch.ops.spiking_oja.oja_iterations``.

Per bank and iteration (in place; see :func:`spiking.plasticity.hebbian.oja_iterations_many`)::

    Y = q(X H_newᵀ);   ΔH = clip(Yᵀ (X_res − Y H_new) / B, ±clip)
    m ← momentum·m + (1 − momentum)·ΔH;   H_new ← H_new + lr·m

``spiking/kernels/oja_iterations.cpp`` runs them with the Python reference's ``at::`` ops in the same
order (equal results), registered as a torch custom op (``TORCH_LIBRARY``): the whole update of all
banks is ONE dispatched op per training step instead of ~30 per iteration, on whatever device the
tensors live on (CPU or CUDA, no device code of its own; graph-capturable, no host sync). Built
through the cached build (:class:`.extension.CachedExtension`, ``spiking build``) like the other
C++ extensions.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..native_sources import native_source
from .extension import CachedExtension

__all__ = ["extension", "available", "oja_iterations"]

_EXT = CachedExtension("oja_iterations", lambda: [native_source("spiking.kernels", "oja_iterations.cpp")],
                       "the native Oja-iterations op")


def extension() -> CachedExtension:
    """The cached C++ extension (for ``spiking build`` and diagnostics)."""
    return _EXT


def available() -> bool:
    """True when the op is built and registered (built on first call; False without a compiler)."""
    return _EXT.available()


def oja_iterations(banks: list, iters: int, clip: float, momentum: float,
                   quantise: Optional[tuple[float, float]] = None) -> None:
    """Run the op on ``banks = [(H_new, m_new, X, X_res, lr[, H_newᵀ, basis]), ...]`` (the fields of
    :class:`spiking.plasticity.hebbian.OjaBank`; ``X_res = None``: computed from ``basis`` in the op);
    ``RuntimeError`` when the extension cannot be built, ``ValueError``/``TypeError`` naming the
    argument for inconsistent shapes, dtypes or devices."""
    _EXT.load()
    torch.ops.spiking_oja.oja_iterations([b[0] for b in banks], [b[1] for b in banks], [b[2] for b in banks],
                                         [b[3] for b in banks], [b[6] if len(b) > 6 else None for b in banks],
                                         [float(b[4]) for b in banks], int(iters),
                                         float(clip), float(momentum),
                                         None if quantise is None else [float(v) for v in quantise])
