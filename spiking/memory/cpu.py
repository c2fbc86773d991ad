"""Loader for the C fast path (``_csa_cpu.c``: sequential code selection + learning on packed
weights, one-pass input validation + bit packing, AND-popcount overlaps), built once with the
system C compiler into the build cache of :mod:`spiking.build` (``$SPIKING_CACHE``, keyed by
source, compiler, flags and CPU instruction set, since it is built with ``-march=native``) and
called through ctypes.

``available()`` is False when no compiler is found; callers then use the torch reference
(:func:`spiking.memory.learn.select_sequence_torch`), which has identical semantics.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import torch

from ..build import cached_build, compiler_id, cpu_isa
from ..native_sources import native_source

_LIB = None
_ERR: str | None = None
_DIR: Path | None = None
_FLAGS = ["-O3", "-shared", "-fPIC"]
_LIBNAME = "sparsey_csa.so"


def _compile(cc: str, src: Path, directory: Path) -> None:
    """``-march=native`` when the compiler accepts it, else the portable flags."""
    cmd = [cc, *_FLAGS, "-march=native", str(src), "-o", str(directory / _LIBNAME), "-lm"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        cmd.remove("-march=native")
        res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"compiling {src.name} failed: {res.stderr[-2000:]}")


def _build() -> ctypes.CDLL:
    global _DIR
    src = native_source("spiking.memory", "_csa_cpu.c")
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (cc/gcc) found")
    key = [src.read_bytes(), compiler_id(cc), " ".join(_FLAGS + ["-march=native"]), cpu_isa()]
    _DIR = cached_build("sparsey_csa", key, lambda d: _compile(cc, src, d), "the Sparsey C library")
    lib = ctypes.CDLL(str(_DIR / _LIBNAME))
    fn = lib.sparsey_select_sequence
    P = ctypes.c_void_p
    fn.argtypes = [ctypes.c_int] * 3 + [ctypes.c_int, P, P, P] + [ctypes.c_int, P, P] + \
        [ctypes.c_int, P, P, P] + [P, P, P] + [ctypes.c_int, ctypes.c_int64, ctypes.c_int64] + [P, P, P, P]
    fn.restype = ctypes.c_int
    lib.sparsey_and_popcount.argtypes = [ctypes.c_int] * 3 + [P, P, P]
    lib.sparsey_and_popcount.restype = None
    lib.sparsey_pack_validate.argtypes = [ctypes.c_int64, ctypes.c_int, ctypes.c_int, P, ctypes.c_int, P, P]
    lib.sparsey_pack_validate.restype = ctypes.c_int64
    return lib


def build_error() -> str:
    """Why the C path is unavailable (empty when it loaded or was not tried yet)."""
    return _ERR or ""


def build_directory() -> str:
    """Where the loaded library lives (empty before it loaded)."""
    return "" if _DIR is None else str(_DIR)


def available() -> bool:
    """True when the C fast path compiled and loaded (built on first call)."""
    global _LIB, _ERR
    if _LIB is None and _ERR is None:
        if os.environ.get("SPIKING_NO_CPU_KERNEL"):
            _ERR = "disabled by SPIKING_NO_CPU_KERNEL"
        else:
            try:
                _LIB = _build()
            except (RuntimeError, OSError) as e:   # no compiler / failed build: use the torch path
                _ERR = str(e)
    return _LIB is not None


def _ptr(t: torch.Tensor | None):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def select_sequence_cpu(xp, nx, wu, wh, prev0, dp, nd, wd, ok, params, r, learn, n_set, cap, Q, K):
    """Run the C loop; tensors are CPU, contiguous: packed words int64, |x| int64, r float64.

    Mutates ``wu``/``wh``/``wd`` (packed) in place when learning. Returns (codes, G, written, n_set)."""
    if not available():
        raise RuntimeError(f"C fast path unavailable: {_ERR}")
    B = xp.shape[0]
    codes = torch.empty(B, Q, dtype=torch.int64)
    G = torch.empty(B, dtype=torch.float64)
    written = torch.zeros(B, dtype=torch.uint8)
    n_out = ctypes.c_int64(0)
    args = [x.contiguous() if x is not None else None for x in (xp, nx, prev0, dp, nd, ok, params, r)]
    xp, nx, prev0, dp, nd, ok, params, r = args
    for w in (wu, wh, wd):
        if w is not None and not w.is_contiguous():
            raise ValueError("packed weights must be contiguous")
    rc = _LIB.sparsey_select_sequence(
        B, Q, K, wu.shape[1], _ptr(xp), _ptr(nx), _ptr(wu),
        int(wh is not None), _ptr(wh), _ptr(prev0),
        0 if wd is None else wd.shape[1], _ptr(dp), _ptr(nd), _ptr(wd),
        _ptr(ok), _ptr(params), _ptr(r), int(learn), int(n_set), int(cap),
        _ptr(codes), _ptr(G), _ptr(written), ctypes.byref(n_out))
    if rc != 0:
        raise MemoryError("sparsey_select_sequence: allocation failed")
    return codes, G, written.bool(), int(n_out.value)


def and_popcount(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``out[i, j] = popcount(a_i AND b_j)`` for packed int64 rows ``a [A, nw]``, ``b [B, nw]`` -> int32 ``[A, B]``."""
    if not available():
        raise RuntimeError(f"C fast path unavailable: {_ERR}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a has {a.shape[1]} words per row, b has {b.shape[1]}")
    a, b = a.contiguous(), b.contiguous()
    out = torch.empty(a.shape[0], b.shape[0], dtype=torch.int32)
    _LIB.sparsey_and_popcount(a.shape[0], b.shape[0], a.shape[1], _ptr(a), _ptr(b), _ptr(out))
    return out


PACK_DTYPES = {torch.uint8: 0, torch.bool: 0, torch.float32: 1}


def pack_validate(x: torch.Tensor):
    """Bit-pack a CPU ``[B, n]`` uint8 / bool / float32 tensor in one pass (C).

    Returns (packed int64 ``[B, ceil(n/64)]``, |x| int64 ``[B]``, first non-binary row or -1)."""
    if not available():
        raise RuntimeError(f"C fast path unavailable: {_ERR}")
    if x.dtype not in PACK_DTYPES or x.dim() != 2 or x.device.type != "cpu":
        raise ValueError(f"x must be a 2-D CPU uint8/bool/float32 tensor, got {x.dtype} {tuple(x.shape)}")
    x = x.contiguous()
    B, n = x.shape
    nw = (n + 63) // 64
    out = torch.empty(B, nw, dtype=torch.int64)
    nx = torch.empty(B, dtype=torch.int64)
    bad = _LIB.sparsey_pack_validate(B, n, nw, _ptr(x), PACK_DTYPES[x.dtype], _ptr(out), _ptr(nx))
    return out, nx, int(bad)
