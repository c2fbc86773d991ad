"""OTTT's online LIF layer on the CPU as two native ops: ``torch.ops.spiking_online.forward`` / ``backward``.

Forward (one pass over ``x [T·…]`` per chunk of neurons, the soft-reset LIF step of ``cuda/neurons/lif.cuh``
from rest, as the fused CPU kernel runs it)::

    S_t = Θ(H_t − V_th),   V_t = H_t − V_th S_t,   Z_t = V_t + V_th S_t − V_th   (= H_t − V_th)
    A_t = λ A_{t−1} + S_t,   R = [S_1; A_1; S_2; A_2; …]      (only with a trace λ)

Backward: ``gX = g σ'(Z)`` (``/ τ`` with ``decay_input``), σ' of ``cuda/lif_step.cuh``.

Each is ONE dispatched op allocating its own outputs (the module path :func:`spiking.neuron.online.lif_online`
otherwise costs ~11 ops per layer and step); spikes, Z, traces and rows are equal to that path's, the
gradient within a few float ulp (the kernels' exp). ``spiking/kernels/online_lif_cpu.cpp``, built through the
cached build (:class:`.extension.CachedExtension`, ``spiking build``).
"""

from __future__ import annotations

import torch

from ..native_sources import cuda_source, native_source
from .extension import CachedExtension

__all__ = ["extension", "usable", "forward", "backward"]

_EXT = CachedExtension("online_lif", lambda: [native_source("spiking.kernels", "online_lif_cpu.cpp"),
                                              cuda_source("lif_step.cuh"), (cuda_source("neurons/lif.cuh"),
                                                                            "neurons/lif.cuh")],
                       "the native online-LIF ops")
DTYPES = (torch.float32, torch.float64)


def extension() -> CachedExtension:
    """The cached C++ extension (for ``spiking build`` and diagnostics)."""
    return _EXT


def usable(x: torch.Tensor) -> bool:
    """True when the ops run ``x``: a CPU float32/float64 tensor and the extension builds (on first call)."""
    return x.device.type == "cpu" and x.dtype in DTYPES and _EXT.available()


def forward(x: torch.Tensor, steps: int, v_threshold: float, tau: float, decay_input: bool,
            trace_lambda: float | None = None, check_finite: bool = True):
    """``(S, Z, A, R)`` of the module docstring for ``x`` whose leading dimension holds ``steps`` time
    steps (``A``, ``R`` empty without ``trace_lambda``); ``ValueError("x contains NaN or inf")`` with
    ``check_finite``."""
    _EXT.load()
    lam = -1.0 if trace_lambda is None else float(trace_lambda)
    if trace_lambda is not None and not 0.0 <= lam <= 1.0:
        raise ValueError(f"trace_lambda must be in [0, 1], got {trace_lambda!r}")
    return torch.ops.spiking_online.forward(x, int(steps), float(v_threshold), float(tau), bool(decay_input), lam,
                                            bool(check_finite))


def backward(g: torch.Tensor, z: torch.Tensor, surrogate, tau: float, decay_input: bool) -> torch.Tensor:
    """``g σ'(z)`` (``/ tau`` with ``decay_input``) for a :class:`~spiking.neuron.surrogate.Surrogate`."""
    _EXT.load()
    return torch.ops.spiking_online.backward(g, z, surrogate.kernel_id, surrogate.param, float(tau),
                                             bool(decay_input))
