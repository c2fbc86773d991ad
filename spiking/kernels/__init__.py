"""Fused LIF backends: :mod:`.cpu` (C++ extension) and :mod:`.cuda` (CuPy kernels from ``cuda/neurons.cu``).

Both run LIF's dynamics definition ``cuda/neurons/lif.cuh`` in the neuron template's loops and are imported lazily by
:func:`spiking.neuron.functional.lif_multistep`, which asks :func:`auto_backend` what
``backend="auto"`` means for a given input.
"""

from __future__ import annotations

import logging
import warnings

import torch

__all__ = ["auto_backend", "fused_lif"]

_log = logging.getLogger(__name__)
_warned: set[str] = set()


def _once(key: str, message: str, warn: bool) -> None:
    """``message`` once per process: a ``RuntimeWarning`` (``warn``) or an INFO log record, not both
    (a warning also logged would print twice)."""
    if key in _warned:
        return
    _warned.add(key)
    if warn:
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    else:
        _log.info(message)


def auto_backend(x: torch.Tensor) -> str:
    """The backend ``"auto"`` picks for ``x``: ``"cupy"`` for CUDA tensors when CuPy and a GPU are
    usable, ``"cpu"`` (fused C++ path) for CPU tensors of a supported dtype when the extension
    builds, else ``"torch"``. A CPU fallback to ``"torch"`` caused by a failed build is warned about
    once (``RuntimeWarning``); CUDA without CuPy is logged once at INFO level.
    """
    if x.is_cuda:
        from . import cuda

        ok, why = cuda.available()
        if ok:
            return "cupy"
        _once("cupy", f"spiking: LIF on CUDA uses the torch reference path ({why})", warn=False)
        return "torch"
    if x.is_cpu:
        from . import cpu

        if x.dtype not in cpu.SUPPORTED_DTYPES:
            return "torch"
        ok, why = cpu.available()
        if ok:
            return "cpu"
        _once("cpu", f"spiking: LIF uses the slower torch reference path on CPU because {why}", warn=True)
        return "torch"
    return "torch"


def fused_lif(backend: str):
    """The fused LIF entry point of ``backend`` (``"cpu"``: :func:`.cpu.lif_multistep_cpu`, ``"cupy"``:
    :func:`.cuda.lif_multistep_cupy`), imported on first use."""
    fn = _fused.get(backend)
    if fn is None:
        if backend == "cpu":
            from .cpu import lif_multistep_cpu as fn
        elif backend == "cupy":
            from .cuda import lif_multistep_cupy as fn
        else:
            raise ValueError(f"no fused LIF backend {backend!r} (fused backends: 'cpu', 'cupy')")
        _fused[backend] = fn
    return fn


_fused: dict = {}
