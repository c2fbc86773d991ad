"""CuPy loader for ``cuda/sparsey.cu``: packed input sums (popcount) and per-CM selection on GPU.

Operates on CUDA torch tensors (shared with CuPy through DLPack, no copies). ``available()`` is
False without CuPy or a CUDA device; :class:`~spiking.memory.Macrocolumn` then uses the torch path.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ..native_sources import cuda_source
from .csa import CSAParams

_THREADS = 256          # power of two (block reduction in sparsey_select)
_NULL = np.uint64(0)    # a null pointer argument


def available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import cupy  # noqa: F401
    except ImportError:
        return False
    cuda_source("sparsey.cu")  # RuntimeError naming the file when the installation lacks it
    return True


@lru_cache(maxsize=None)
def _module(device_index: int):
    import cupy
    with cupy.cuda.Device(device_index):
        return cupy.RawModule(code=cuda_source("sparsey.cu").read_text(), options=("-std=c++14",))


def _cp(t: torch.Tensor):
    import cupy
    return cupy.from_dlpack(t.contiguous())


def packed_sums(xp: torch.Tensor, wp: torch.Tensor) -> torch.Tensor:
    """u = popcount(x AND W) for packed ``xp [B, nw]`` and ``wp [QK, nw]`` (int64, CUDA) -> float32 ``[B, QK]``."""
    if not (xp.is_cuda and wp.is_cuda):
        raise ValueError("xp and wp must be CUDA tensors")
    if xp.shape[1] != wp.shape[1]:
        raise ValueError(f"xp has {xp.shape[1]} words per row, wp has {wp.shape[1]}")
    B, nw = xp.shape
    QK = wp.shape[0]
    u = torch.empty(B, QK, dtype=torch.float32, device=xp.device)
    if B == 0:
        return u
    fn = _module(xp.device.index or 0).get_function("sparsey_packed_sums")
    import cupy
    with cupy.cuda.Device(xp.device.index or 0):
        fn((B, (QK + _THREADS - 1) // _THREADS), (_THREADS,),
           (_cp(xp), _cp(wp), cupy.int32(B), cupy.int32(QK), cupy.int32(nw), _cp(u)))
    return u


def select(u: torch.Tensor, n_active: torch.Tensor, Q: int, K: int, params: CSAParams,
           r: torch.Tensor | None = None, hd: torch.Tensor | None = None):
    """Per-CM selection from input sums ``u [B, Q·K]``: (codes ``[B, Q]`` int64, G ``[B]`` float32).
    ``r [B, Q]`` float64 uniforms: draw (learning); None: argmax (retrieval). ``hd``: H·D factor."""
    import cupy
    B = u.shape[0]
    if u.shape[1] != Q * K:
        raise ValueError(f"u has {u.shape[1]} units, expected Q*K = {Q * K}")
    dev = u.device
    codes = torch.empty(B, Q, dtype=torch.int64, device=dev)
    G = torch.empty(B, dtype=torch.float32, device=dev)
    if B == 0:
        return codes, G
    n = n_active.to(dev, torch.float32).contiguous()
    rr = None if r is None else r.to(dev, torch.float64).contiguous()
    h = None if hd is None else hd.to(dev, torch.float32).contiguous()
    p = params
    fn = _module(dev.index or 0).get_function("sparsey_select")
    with cupy.cuda.Device(dev.index or 0):
        fn((B,), (_THREADS,),
           (_cp(u.float()), _cp(n), _NULL if h is None else _cp(h), _NULL if rr is None else _cp(rr),
            cupy.int32(B), cupy.int32(Q), cupy.int32(K), cupy.float32(p.lambda_u), cupy.float32(p.g_minus),
            cupy.float32(p.gamma), cupy.float32(p.chi), cupy.float32(p.s), cupy.float32(p.c),
            _cp(codes), _cp(G)),
           shared_mem=4 * (Q + _THREADS))
    return codes, G
