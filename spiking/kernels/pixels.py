"""Stored 8-bit images to float32 model input in one pass (the task streams' batches).

    x[i, j] = float(images[rows[i], perm[j]]) · scale + shift

On the CPU the C++ kernel (``spiking/kernels/pixels_cpu.cpp``) picks the rows, permutes the pixels
and scales them in one pass through a 256-entry table of the results (a pixel has 256 values), with
the float operations of :func:`pixels_reference`'s torch ops (to float32, multiply, add), so the
two are identical. Elsewhere (CUDA, other dtypes, no compiler) it is :func:`pixels_reference`.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..native_sources import native_source
from .extension import CachedExtension

__all__ = ["pixels", "pixels_reference"]

_EXT = CachedExtension("pixels_cpu", lambda: [native_source("spiking.kernels", "pixels_cpu.cpp")],
                       "the CPU pixel-transform extension")
_NONE = torch.empty(0, dtype=torch.long)


def extension() -> CachedExtension:
    """The cached C++ extension (for ``spiking build`` and diagnostics)."""
    return _EXT


def pixels_reference(images: torch.Tensor, rows: torch.Tensor, perm: Optional[torch.Tensor] = None,
                     scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    """:func:`pixels` from torch ops: gather the rows, to float32, permute, ``x · scale + shift``."""
    x = images[rows].to(torch.float32)  # before the permutation: float index_select is faster than uint8
    x = x.reshape(x.shape[0], -1)
    if perm is not None:
        x = x.index_select(1, perm)
    if scale != 1.0 or shift != 0.0:
        x = x.mul(scale).add_(shift)
    return x


def pixels(images: torch.Tensor, rows: torch.Tensor, perm: Optional[torch.Tensor] = None,
           scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    """float32 ``[len(rows), P]``: the images ``rows`` (of ``images [N, ...]``, P pixels each),
    pixels reordered by ``perm`` (``x[:, j] = image[perm[j]]``; None: as stored), then
    ``x · scale + shift``."""
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (scale, shift)):
        raise ValueError(f"scale and shift must be finite numbers, got scale={scale!r}, shift={shift!r}")
    if rows.dim() != 1 or rows.dtype != torch.long:
        raise ValueError(f"rows must be a 1-d int64 tensor, got shape {tuple(rows.shape)} and {rows.dtype}")
    n_pixels = images[0].numel() if images.shape[0] else 0
    if perm is not None and (perm.dim() != 1 or perm.numel() != n_pixels or perm.dtype != torch.long):
        raise ValueError(f"perm must be int64 [{n_pixels}] (one index per pixel), got shape {tuple(perm.shape)} "
                         f"and {perm.dtype}")
    if (images.dtype == torch.uint8 and images.device.type == "cpu" and rows.device.type == "cpu"
            and images.is_contiguous() and images.shape[0] > 0 and _EXT.available()):
        return _EXT.load().pixels(images.view(images.shape[0], -1), rows, _NONE if perm is None else perm,
                                  float(scale), float(shift))
    return pixels_reference(images, rows, perm, scale, shift)
