"""Event-driven synaptic input: ``scale · (s @ w) + shift`` for a spike matrix ``s`` that is mostly zeros.

    out[m, :] = scale · Σ_{k : s[m,k] ≠ 0} s[m,k] · w[k, :] + shift

A layer fed by spikes only needs the weight rows of the inputs that fired: with 5 % of the inputs
active the work is 1/20 of a dense product. On the CPU the C++ kernel
(``spiking/kernels/spike_matmul_cpu.cpp``) collects each row's active inputs and sums their
weight rows in vector registers; when more than ``max_density`` of ``s`` is nonzero it runs the
dense product instead, which is then the faster of the two.
Elsewhere (CUDA, other dtypes, a gradient needed, no compiler) it is ``torch.mm(s, w) * scale + shift``,
which is also the reference the tests hold the kernel to. The two differ only in the order in
which the products are summed (float rounding).
"""

from __future__ import annotations

import math
from typing import Union

import torch

from ..native_sources import native_source
from .extension import CachedExtension

__all__ = ["spike_matmul", "spike_matmul_reference", "weight_rows", "MAX_DENSITY"]

MAX_DENSITY = 0.2

_EXT = CachedExtension("spike_matmul_cpu", lambda: [native_source("spiking.kernels", "spike_matmul_cpu.cpp")],
                       "the event-driven CPU spike-matmul extension")


def extension() -> CachedExtension:
    """The cached C++ extension (for ``spiking build`` and diagnostics)."""
    return _EXT


Scale = Union[float, torch.Tensor]


def spike_matmul_reference(s: torch.Tensor, w: torch.Tensor, scale: Scale = 1.0, shift: float = 0.0) -> torch.Tensor:
    """``torch.mm(s, w) * scale + shift`` (the dense reference of :func:`spike_matmul`)."""
    out = torch.mm(s, w)
    if not (isinstance(scale, (int, float)) and scale == 1.0):
        out = out.mul_(scale)
    return out.add_(shift) if shift != 0.0 else out


_ONES: dict = {}


def _scale_tensor(scale: Scale, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(scale, torch.Tensor):
        if scale.numel() != 1:
            raise ValueError(f"scale must be a single value, got shape {tuple(scale.shape)}")
        if scale.dim() == 0 and scale.dtype == dtype:
            return scale  # read from memory by the kernel: no op
        return scale.detach().reshape(()).to(dtype)
    key = (float(scale), dtype)
    if key not in _ONES:  # cached: a constant scale costs no op per call
        with torch.inference_mode(False):
            _ONES[key] = torch.tensor(float(scale), dtype=dtype)
    return _ONES[key]


def spike_matmul(s: torch.Tensor, w: torch.Tensor, scale: Scale = 1.0, shift: float = 0.0,
                 max_density: float = MAX_DENSITY) -> torch.Tensor:
    """``scale · (s @ w) + shift`` for ``s [M, K]`` (mostly zeros, e.g. spikes) and ``w [K, N]``, no autograd.

    ``scale``: a number or a one-value tensor (a CPU scalar is read in the kernel, no host sync);
    ``shift``: a number added to every output (in the same pass).
    On CPU float32/float64 tensors without a gradient to track, only the rows of ``w`` where ``s``
    is nonzero are summed (event-driven), unless more than ``max_density`` of ``s`` is nonzero.
    """
    if s.dim() != 2 or w.dim() != 2 or s.shape[1] != w.shape[0]:
        raise ValueError(f"spike_matmul: s [M, K] and w [K, N] needed, got {tuple(s.shape)} and {tuple(w.shape)}")
    if s.dtype != w.dtype or not s.is_floating_point():
        raise TypeError(f"spike_matmul: s and w must share one floating dtype, got {s.dtype} and {w.dtype}")
    if not 0.0 <= max_density <= 1.0:
        raise ValueError(f"max_density must lie in [0, 1], got {max_density!r}")
    if not (isinstance(shift, (int, float)) and math.isfinite(shift)):
        raise ValueError(f"shift must be a finite number, got {shift!r}")
    fused = (s.device.type == "cpu" and w.device.type == "cpu" and s.dtype == w.dtype
             and s.dtype in (torch.float32, torch.float64)
             and not (isinstance(scale, torch.Tensor) and scale.device.type != "cpu")
             and not (torch.is_grad_enabled() and (s.requires_grad or w.requires_grad)) and _EXT.available())
    if not fused:
        return spike_matmul_reference(s, w, scale, shift)
    out, _ = _EXT.load().spike_matmul(s.contiguous(), w.contiguous(), _scale_tensor(scale, s.dtype),
                                      float(shift), float(max_density))
    return out


def weight_rows(w: torch.Tensor) -> torch.Tensor:
    """``wᵀ`` as a new contiguous tensor without autograd history: for a weight stored ``[out, in]``,
    row ``k`` holds the weights leaving input ``k`` (what :func:`spike_matmul` reads). On CPU
    float32 the extension's tiled transpose (a strided ``w.t().contiguous()`` of an 800 × 800
    weight takes several times longer); elsewhere ``w.t().contiguous()``. Exact either way."""
    if w.dim() != 2:
        raise ValueError(f"weight_rows: a 2-d weight needed, got shape {tuple(w.shape)}")
    w = w.detach()
    if w.device.type == "cpu" and w.dtype == torch.float32 and _EXT.available():
        return _EXT.load().transpose(w)
    return w.t().contiguous()
