"""Fused multi-step LIF on the CPU: a C++ extension built from ``cuda/lif_step.cuh``.

The same per-neuron step code as the CUDA kernels (``cuda/lif.cu``) runs on the host:
``spiking/kernels/lif_cpu.cpp`` walks chunks of 512 neurons through all T steps (OpenMP over
chunks), so there is no per-step autograd graph and no per-step tensor. Forward saves only
``h_seq`` (H_t) and only when a gradient is needed; backward is one reverse-time sweep::

    gV_t = dL/dV_t + gH_{t+1}(1 - 1/tau);  gH_t = gS_t σ'(H_t - V_th) + gV_t dV_t/dH_t;  gX_t = gH_t dH/dX

Why a C++ extension (measured, bench/results/lif_throughput_cpu.json): the fused loop is
memory-bound, does one pass over x/spikes/h per direction, and runs the exact step code that the
CUDA kernel runs (one source for both, which is what lets the host tests prove the GPU step).
A numpy in-place loop reaches ~500 M updates/s forward on this machine (shared/notes/peers.md)
but has no backward and needs a temporary per operation and step; numba is not a dependency;
torch.compile of the per-step loop was not pursued (the graph and its compile grow with T).

Build: ``torch.utils.cpp_extension.load`` (ninja, ``-O3 -ffp-contract=off -fno-trapping-math
-fno-math-errno -fopenmp``, plus ``-mavx2`` when the CPU has it), cached in torch's extensions
directory (``$TORCH_EXTENSIONS_DIR`` or ``~/.cache/torch_extensions``); the sources and flags
are hashed into the extension's name, so a stale or foreign build is never reused. The first
build takes ~35-60 s on 2 cores; later imports load the cached library.
``backend="cpu"`` raises ``RuntimeError`` when the build is impossible (no compiler / ninja);
:func:`available` reports it without raising, and ``backend="auto"`` then warns once
(``RuntimeWarning``) and uses the torch reference.

Output buffers of 8 MiB and more are 2 MiB-aligned with transparent huge pages advised, and
recycled through a small exact-size cache (``$SPIKING_CPU_CACHE_MB``, default 1024, 0 disables;
:func:`empty_cache` frees it): fresh pages from the OS (a fault per 4 KiB plus zeroing) otherwise
cost about as much as the LIF pass itself.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Optional, Union

import torch

from ._common import check_v0, cuda_source_dir, make_config, make_ops, nonfinite_x_error, run_fused

__all__ = ["lif_multistep_cpu", "available", "load_extension", "empty_cache", "SUPPORTED_DTYPES"]

SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_SOURCE = Path(__file__).with_name("lif_cpu.cpp")
_CFLAGS = ["-O3", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno", "-fopenmp"]


def _cpu_flags() -> list[str]:
    """``-mavx2`` when this CPU has AVX2 (part of the extension's name, so never reused elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return ["-mavx2"] if " avx2" in line else []
    except OSError:
        pass
    return []

_lock = threading.Lock()
_ext = None
_error: Optional[str] = None


def _build():
    from torch.utils import cpp_extension

    cuda_dir = cuda_source_dir()
    digest = hashlib.sha1()
    for p in (_SOURCE, _SOURCE.with_name("cpu_buffers.h"), cuda_dir / "lif_step.cuh"):
        digest.update(p.read_bytes())
    cflags = _CFLAGS + _cpu_flags()
    digest.update(" ".join(cflags).encode())
    name = f"spiking_lif_cpu_{digest.hexdigest()[:12]}"
    return cpp_extension.load(
        name=name,
        sources=[str(_SOURCE)],
        extra_include_paths=[str(cuda_dir)],
        extra_cflags=cflags,
        extra_ldflags=["-fopenmp"],
        verbose=False,
    )


def load_extension():
    """Build (first call, ~30-60 s) or load the cached extension; ``RuntimeError`` if impossible."""
    global _ext, _error
    with _lock:
        if _ext is not None:
            return _ext
        if _error is not None:
            raise RuntimeError(_error)
        try:
            _ext = _build()
        except Exception as exc:  # compiler or ninja missing, build failure
            _error = (
                "backend 'cpu': could not build the fused LIF C++ extension "
                f"(needs a C++ compiler and ninja): {type(exc).__name__}: {exc}"
            )
            raise RuntimeError(_error) from exc
        return _ext


def empty_cache() -> int:
    """Free the output buffers the extension keeps for reuse (see lif_cpu.cpp); returns bytes freed."""
    return int(load_extension().empty_cache()) if _ext is not None else 0


def available() -> tuple[bool, str]:
    """``(True, "")`` if the extension builds/loads, else ``(False, reason)``; never raises."""
    try:
        load_extension()
        return True, ""
    except RuntimeError as exc:
        return False, str(exc)


# ---------------------------------------------------------------------------------------------
# kernels behind the torch custom ops (spiking::lif_cpu_forward / spiking::lif_cpu_backward)


def _forward_impl(x, v0, vth, v_threshold, tau, v_reset, hard, decay_input, save_h, return_v, check_x):
    ext = load_extension()
    v_th = float(vth.item()) if vth is not None else v_threshold
    s, v, h, x_nonfinite = ext.forward(x, v0, v_th, vth is not None, tau, v_reset, hard, decay_input, save_h,
                                       return_v)
    if check_x and x_nonfinite:
        raise nonfinite_x_error()
    return s, v, h


def _backward_impl(h_seq, grad_s, grad_v, vth, v_threshold, tau, v_reset, hard, decay_input, detach_reset,
                   sg_id, sg_param, return_v, need_v0, need_vth):
    ext = load_extension()
    v_th = float(vth.item()) if vth is not None else v_threshold
    gx, gv0, gvth = ext.backward(
        h_seq, grad_s, grad_v, v_th, vth is not None, tau, v_reset, hard, decay_input, detach_reset,
        sg_id, sg_param, return_v, need_v0, need_vth,
    )
    return gx, gv0, gvth


_ops = make_ops("cpu", _forward_impl, _backward_impl)
_forward_op = _ops.op  # the registered custom op (opcheck, torch.compile)


def lif_multistep_cpu(
    x: torch.Tensor,
    v0: Optional[torch.Tensor] = None,
    *,
    tau: float = 2.0,
    v_threshold: Union[float, torch.Tensor] = 1.0,
    v_reset: Optional[float] = 0.0,
    decay_input: bool = True,
    detach_reset: bool = False,
    surrogate="sigmoid",
    return_v: bool = False,
    check_finite: bool = True,
):
    """Fused CPU LIF with the arguments and results of ``lif_multistep_torch``.

    Returns ``(spikes, v_last)`` or, with ``return_v``, ``(spikes, v_seq)``; differentiable in
    ``x``, ``v0`` and a tensor ``v_threshold``. ``RuntimeError`` for non-CPU tensors or when the
    extension cannot be built; ``ValueError("x contains NaN or inf")`` when ``check_finite`` and
    the kernel read a non-finite x (the check rides on the kernel's own pass over x).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.device.type != "cpu":
        raise RuntimeError(f"backend 'cpu' needs CPU tensors, but x is on {x.device}")
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"x: backend 'cpu' supports dtypes {SUPPORTED_DTYPES}, got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"x must have shape [T, batch, ...], got {tuple(x.shape)}")
    check_v0(x, v0)
    cfg, vth = make_config(tau, v_threshold, v_reset, decay_input, detach_reset, surrogate, return_v, check_finite)
    if vth is not None and vth.device.type != "cpu":
        raise RuntimeError(f"backend 'cpu' needs a CPU v_threshold tensor, got one on {vth.device}")
    return run_fused(_ops, x, v0, cfg, vth)
