"""Fused multi-step LIF on the GPU: ``cuda/lif.cu`` through CuPy, as torch custom ops.

* Loading: ``cupy.RawModule`` (NVRTC, ``-fmad=false`` so every op rounds like torch) with the
  source of ``cuda/lif.cu`` and ``cuda/lif_step.cuh`` inlined; one module per configuration
  (``lif_forward<T, HARD, DECAY_INPUT>``, ``lif_backward<T, SURROGATE, HARD, DETACH>``),
  compiled on first use, cached in-process per device (and on disk by CuPy).
* Launch: on torch's current CUDA stream (``cupy.cuda.ExternalStream``), so the kernels are
  ordered with the surrounding torch work; tensors are passed as raw device pointers of
  contiguous torch tensors, never copied or converted.
* Autograd: ``spiking::lif_cupy_forward`` / ``spiking::lif_cupy_backward`` custom ops
  (``torch.library.custom_op`` with ``register_autograd`` / ``register_fake``), so
  ``torch.compile`` treats the LIF as one opaque node. A learnable threshold is read from device
  memory (no host sync); its gradient is a per-block reduction plus one ``atomicAdd`` per block.
* Forward saves only ``h_seq`` (H_t) when a gradient is needed; backward recomputes spikes and
  σ' from it in one reverse-time loop (see ``cuda/lif.cu``).
* NaN/inf in ``x``: the forward kernel checks x while reading it and sets a device flag (one int
  per device and stream, kept at 0). With the check on, the flag is read right after the launch:
  one host sync per call, where the former separate ``isfinite(x).all()`` scan also synced, but
  without its extra pass over x. A lazier read (on a later call) would report the error on the
  wrong call or never, so it was not chosen; ``check_inputs=False`` skips the read (no sync).

Asking for this backend without CuPy, without a GPU or with CPU tensors raises ``RuntimeError``.
"""

from __future__ import annotations

import math
import threading
import warnings
from typing import Optional, Union

import numpy as np
import torch

from ..native_sources import cuda_source
from ._common import check_v0, make_config, make_ops, nonfinite_x_error, run_fused

__all__ = ["lif_multistep_cupy", "available", "kernel_source", "SUPPORTED_DTYPES", "BLOCK"]

SUPPORTED_DTYPES = {
    torch.float32: "float",
    torch.float64: "double",
    torch.float16: "lif::f16",
    torch.bfloat16: "lif::bf16",
}
BLOCK = 256
NVRTC_OPTIONS = ("--std=c++14", "-fmad=false")

_lock = threading.Lock()
_functions: dict = {}
_source: Optional[str] = None


def _import_cupy():
    try:
        import cupy
    except Exception as exc:  # ImportError, or a CuPy that cannot load its CUDA libraries
        raise RuntimeError(
            f"backend 'cupy' needs CuPy (e.g. `pip install cupy-cuda12x`), which failed to import: {exc}"
        ) from exc
    return cupy


def available() -> tuple[bool, str]:
    """``(True, "")`` when CuPy imports and torch sees a CUDA device, else ``(False, reason)``."""
    if not torch.cuda.is_available():
        return False, "torch sees no CUDA device"
    try:
        _import_cupy()
    except RuntimeError as exc:
        return False, str(exc)
    return True, ""


def kernel_source() -> str:
    """``cuda/lif.cu`` with ``lif_step.cuh`` inlined (NVRTC then needs no include path)."""
    global _source
    if _source is None:
        header = cuda_source("lif_step.cuh").read_text()
        body = cuda_source("lif.cu").read_text()
        include = '#include "lif_step.cuh"'
        if include not in body:
            raise RuntimeError(f"{cuda_source('lif.cu')} no longer includes lif_step.cuh; update spiking/kernels/cuda.py")
        _source = body.replace(include, header)
    return _source


def _function(name: str, device_index: int):
    """The compiled kernel ``name`` (a template-id name expression) for one device, cached."""
    key = (name, device_index)
    fn = _functions.get(key)
    if fn is not None:
        return fn
    cupy = _import_cupy()
    with _lock:
        fn = _functions.get(key)
        if fn is None:
            with cupy.cuda.Device(device_index):
                module = cupy.RawModule(code=kernel_source(), options=NVRTC_OPTIONS, name_expressions=[name])
                fn = module.get_function(name)
            _functions[key] = fn
    return fn


def _b(flag: bool) -> str:
    return "true" if flag else "false"


def _ptr(t: Optional[torch.Tensor]) -> np.uint64:
    return np.uint64(0 if t is None or t.numel() == 0 else t.data_ptr())


_streams: dict = {}


def _cupy_stream(cupy, dev: int, ptr: int):
    """CuPy's view of torch's stream ``ptr`` on device ``dev``, made once per stream (creating the
    wrapper on every launch costs more than a small kernel)."""
    key = (dev, ptr)
    st = _streams.get(key)
    if st is None:
        with warnings.catch_warnings():
            # CuPy 14 deprecates ExternalStream(ptr) for Stream.from_external(<__cuda_stream__
            # object>), which older CuPy lacks; the kernels only need the raw stream pointer.
            warnings.simplefilter("ignore", DeprecationWarning)
            st = _streams[key] = cupy.cuda.ExternalStream(ptr, dev)
    return st


def _launch(fn, x: torch.Tensor, n: int, args: tuple) -> None:
    dev = x.get_device()
    stream = _cupy_stream(_import_cupy(), dev, torch.cuda.current_stream(dev).cuda_stream)
    grid = (max(1, (n + BLOCK - 1) // BLOCK),)
    if dev == torch.cuda.current_device():
        fn(grid, (BLOCK,), args, stream=stream)
    else:  # a kernel is launched with its own device current
        with _import_cupy().cuda.Device(dev):
            fn(grid, (BLOCK,), args, stream=stream)


def _vth64(vth: Optional[torch.Tensor], like: torch.Tensor) -> Optional[torch.Tensor]:
    """Threshold as a float64 device scalar (read by the kernel: no host synchronisation)."""
    if vth is None:
        return None
    return vth.detach().to(device=like.device, dtype=torch.float64).reshape(()).contiguous()


def _check_cuda(t: torch.Tensor, name: str) -> None:
    if not t.is_cuda:
        raise RuntimeError(f"backend 'cupy' needs CUDA tensors, but {name} is on {t.device}")


_flags: dict = {}


def _nonfinite_flag(dev: int, stream_ptr: int) -> torch.Tensor:
    """The int32 device flag that forward kernels on this device and stream set on NaN/inf x."""
    key = (dev, stream_ptr)
    flag = _flags.get(key)
    if flag is None:
        flag = _flags[key] = torch.zeros((), dtype=torch.int32, device=torch.device("cuda", dev))
    return flag


def _forward_impl(x, v0, vth, v_threshold, tau, v_reset, hard, decay_input, save_h, return_v, check_x):
    _check_cuda(x, "x")
    steps, n = x.shape[0], math.prod(x.shape[1:])
    name = f"lif_forward<{SUPPORTED_DTYPES[x.dtype]},{_b(hard)},{_b(decay_input)}>"
    fn = _function(name, x.get_device())
    x = x.contiguous()
    v0 = v0.contiguous() if v0 is not None else None
    s = torch.empty_like(x)
    h = torch.empty_like(x) if save_h else x.new_empty((0,))
    v = torch.empty_like(x) if return_v else x.new_empty(x.shape[1:])
    vth64 = _vth64(vth, x)
    dev = x.get_device()
    flag = _nonfinite_flag(dev, torch.cuda.current_stream(dev).cuda_stream) if check_x else None
    args = (
        _ptr(x), _ptr(v0), _ptr(vth64), _ptr(s), _ptr(h if save_h else None), _ptr(v), _ptr(flag),
        np.float64(tau), np.float64(v_threshold), np.float64(v_reset), np.int64(n), np.int32(steps),
        np.int32(1 if return_v else 0),
    )
    _launch(fn, x, n, args)
    if flag is not None and bool(flag.item()):  # the host sync described in the module docstring
        flag.zero_()
        raise nonfinite_x_error()
    return s, v, h


def _backward_impl(h_seq, grad_s, grad_v, vth, v_threshold, tau, v_reset, hard, decay_input, detach_reset,
                   sg_id, sg_param, return_v, need_v0, need_vth):
    _check_cuda(h_seq, "h_seq")
    steps, n = h_seq.shape[0], math.prod(h_seq.shape[1:])
    name = f"lif_backward<{SUPPORTED_DTYPES[h_seq.dtype]},{int(sg_id)},{_b(hard)},{_b(detach_reset)}>"
    fn = _function(name, h_seq.get_device())
    gx = torch.empty_like(h_seq)
    gv0 = h_seq.new_empty(h_seq.shape[1:]) if need_v0 else h_seq.new_empty((0,))
    gvth = (h_seq.new_zeros((), dtype=torch.float64) if need_vth else h_seq.new_empty((0,), dtype=torch.float64))
    vth64 = _vth64(vth, h_seq)
    args = (
        _ptr(h_seq), _ptr(grad_s), _ptr(grad_v), _ptr(vth64), _ptr(gx), _ptr(gv0 if need_v0 else None),
        _ptr(gvth if need_vth else None), np.float64(tau), np.float64(v_threshold), np.float64(v_reset),
        np.float64(sg_param), np.int32(1 if decay_input else 0), np.int64(n), np.int32(steps),
        np.int32(1 if return_v else 0),
    )
    _launch(fn, h_seq, n, args)
    return gx, gv0, gvth


_ops = make_ops("cupy", _forward_impl, _backward_impl)
_forward_op = _ops.op  # the registered custom op (opcheck, torch.compile)


def lif_multistep_cupy(
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
    """Fused CUDA LIF with the arguments and results of ``lif_multistep_torch``.

    Returns ``(spikes, v_last)`` or, with ``return_v``, ``(spikes, v_seq)``; differentiable in
    ``x``, ``v0`` and a tensor ``v_threshold``. ``RuntimeError`` without CuPy, without a GPU, or
    for tensors not on a CUDA device; ``ValueError("x contains NaN or inf")`` when
    ``check_finite`` and the kernel read a non-finite x.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not torch.cuda.is_available():
        raise RuntimeError("backend 'cupy' needs a CUDA GPU, but torch sees none")
    _import_cupy()
    _check_cuda(x, "x")
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"x: backend 'cupy' supports dtypes {tuple(SUPPORTED_DTYPES)}, got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"x must have shape [T, batch, ...], got {tuple(x.shape)}")
    check_v0(x, v0)
    cfg, vth = make_config(tau, v_threshold, v_reset, decay_input, detach_reset, surrogate, return_v, check_finite)
    if vth is not None and vth.device != x.device:
        raise RuntimeError(f"backend 'cupy': v_threshold is on {vth.device} but x is on {x.device}")
    return run_fused(_ops, x, v0, cfg, vth)
