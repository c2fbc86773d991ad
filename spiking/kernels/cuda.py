"""Fused multi-step LIF on the GPU: LIF's template definition (``cuda/neurons.cu`` instantiated
with ``cuda/neurons/lif.cuh``) through CuPy, as torch custom ops.

* Loading: ``cupy.RawModule`` (NVRTC, ``-fmad=false`` so every op rounds like torch, ``-I cuda/``)
  with the source of ``cuda/neurons.cu``; one module per kernel (``nrn_forward<nrn::LIF, T>``,
  ``nrn_backward<nrn::LIF, SURROGATE, T>``), compiled on first use, cached in-process per device
  (and on disk by CuPy). The template neurons (:mod:`.neuron_cuda`) share the loader.
* Launch: on torch's current CUDA stream, so the kernels are ordered with the surrounding torch
  work; tensors are passed as raw device pointers of contiguous torch tensors, never copied or
  converted. Eager calls (recorded or not) go through the C++ launcher of
  :mod:`.neuron_cuda_node` (``cuLaunchKernel``, a C++ autograd node); the Python launchers below
  (``cupy.cuda.ExternalStream``, an ``autograd.Function``) serve ``torch.compile``'s custom ops, and
  eager calls with ``SPIKING_CUDA_LAUNCH=cupy`` or where the launcher cannot be built.
* Autograd: ``spiking::lif_cupy_forward`` / ``spiking::lif_cupy_backward`` custom ops
  (``torch.library.custom_op`` with ``register_autograd`` / ``register_fake``), so
  ``torch.compile`` treats the LIF as one opaque node. The parameters ``(v_th, tau, v_reset)`` are
  a small device tensor (cached per value; a learnable threshold is put in place on the device,
  so there is no host sync); the threshold gradient is summed per neuron in the kernel and over
  neurons by torch.
* Forward saves only ``h_seq`` (H_t) when a gradient is needed; backward recomputes spikes and
  σ' from it in one reverse-time loop (see ``cuda/neurons/lif.cuh``).
* NaN/inf in ``x``: the forward kernel checks x while reading it and sets a device flag (one int
  per device and stream, kept at 0). With the check on, the flag is read right after the launch:
  one host sync per call, where the former separate ``isfinite(x).all()`` scan also synced, but
  without its extra pass over x. A lazier read (on a later call) would report the error on the
  wrong call or never, so it was not chosen; ``check_inputs=False`` skips the read (no sync).
  While torch's current stream is being captured into a CUDA graph (``torch.cuda.graph``) the
  check is off: a captured call cannot read the flag back, and the graph's replays run unchecked.

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
from . import neuron_cuda_node
from ._common import check_v0, constant, make_config, make_ops, nonfinite_x_error, run_fused
from ._common import device_ptr as _ptr

__all__ = ["lif_multistep_cupy", "available", "kernel_source", "SUPPORTED_DTYPES", "BLOCK"]

SUPPORTED_DTYPES = {
    torch.float32: "float",
    torch.float64: "double",
    torch.float16: "lif::f16",
    torch.bfloat16: "lif::bf16",
}
BLOCK = 256
NVRTC_OPTIONS = ("--std=c++14", "-fmad=false", "-DNRN_NO_INSTANTIATE")

_lock = threading.Lock()
_functions: dict = {}
_sources: dict = {}


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


def kernel_source(name: str = "neurons.cu") -> str:
    """The source NVRTC compiles: ``cuda/<name>`` (its headers are found through ``-I cuda/``)."""
    text = _sources.get(name)
    if text is None:
        text = _sources[name] = cuda_source(name).read_text()
    return text


def nvrtc_options() -> tuple:
    """NVRTC options: no FMA contraction, the loaders' own instantiations only, ``-I cuda/``."""
    return NVRTC_OPTIONS + (f"-I{cuda_source('neurons.cu').parent}",)


def _function(name: str, device_index: int, source: str = "neurons.cu"):
    """The compiled kernel ``name`` (a template-id name expression) of ``cuda/<source>`` for one
    device, cached."""
    key = (source, name, device_index)
    fn = _functions.get(key)
    if fn is not None:
        return fn
    cupy = _import_cupy()
    with _lock:
        fn = _functions.get(key)
        if fn is None:
            with cupy.cuda.Device(device_index):
                module = cupy.RawModule(code=kernel_source(source), options=nvrtc_options(), name_expressions=[name])
                fn = module.get_function(name)
            _functions[key] = fn
    return fn


_handles: dict = {}


def kernel_handle(name: str, device_index: int) -> int:
    """The ``CUfunction`` handle (an integer) of kernel ``name`` of ``cuda/neurons.cu`` on one device,
    compiled and loaded by :func:`_function`; for the C++ launcher (:mod:`.neuron_cuda_node`)."""
    key = (name, device_index)
    h = _handles.get(key)
    if h is None:
        fn = _function(name, device_index)
        with _import_cupy().cuda.Device(device_index):
            h = _handles[key] = int(fn.kernel.ptr)
    return h


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


def _lif_params(like: torch.Tensor, tau: float, vth: Optional[torch.Tensor], v_threshold: float,
                v_reset: float) -> torch.Tensor:
    """``(v_th, tau, v_reset)`` as the ``[3, 1]`` device tensor the kernels read, in the compute dtype
    (float32 for fp16/bf16). A tensor threshold is rounded to the input dtype first (as torch does
    for a same-category 0-dim tensor) and copied in on the device: no host synchronisation."""
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    base = constant((v_threshold, tau, v_reset), dtype, like.device)
    if vth is None:
        return base
    params = base.clone()
    params[0, 0] = vth.detach().to(device=like.device, dtype=like.dtype).to(dtype).reshape(())
    return params


def _check_cuda(t: torch.Tensor, name: str) -> None:
    if not t.is_cuda:
        raise RuntimeError(f"backend 'cupy' needs CUDA tensors, but {name} is on {t.device}")


_flags: dict = {}


def _nonfinite_flag(dev: int, stream_ptr: int) -> torch.Tensor:
    """The int32 device flag that forward kernels on this device and stream set on NaN/inf x."""
    key = (dev, stream_ptr)
    flag = _flags.get(key)
    if flag is None:
        with torch.inference_mode(False):  # zeroed in place later, also outside inference_mode
            flag = _flags[key] = torch.zeros((), dtype=torch.int32, device=torch.device("cuda", dev))
    return flag


def nonfinite_flag(x: torch.Tensor, check_x: bool) -> Optional[torch.Tensor]:
    """The flag a forward kernel on x's device and torch's current stream sets on NaN/inf x, or
    ``None`` (no check): ``check_x`` is off, or the stream is being captured into a CUDA graph."""
    if not check_x or torch.cuda.is_current_stream_capturing():
        return None
    dev = x.get_device()
    return _nonfinite_flag(dev, torch.cuda.current_stream(dev).cuda_stream)


def raise_if_nonfinite(flag: Optional[torch.Tensor]) -> None:
    """Read a forward launch's NaN/inf flag (``None``: the check is off): the one host sync of the
    check; ``ValueError`` (the flag reset to 0) when the kernel saw NaN or ±inf in x."""
    if flag is not None and bool(flag.item()):
        flag.zero_()
        raise nonfinite_x_error()


def _forward_impl(x, v0, vth, v_threshold, tau, v_reset, hard, decay_input, save_h, return_v, check_x):
    _check_cuda(x, "x")
    steps, n = x.shape[0], math.prod(x.shape[1:])
    fn = _function(f"nrn_forward<nrn::LIF,{SUPPORTED_DTYPES[x.dtype]}>", x.get_device())
    x = x.contiguous()
    v0 = v0.contiguous() if v0 is not None else constant((v_reset if hard else 0.0,), x.dtype, x.device)
    s = torch.empty_like(x)
    h = torch.empty_like(x) if save_h else x.new_empty((0,))
    v_seq = torch.empty_like(x) if return_v else None
    v_last = x.new_empty(x.shape[1:])
    params = _lif_params(x, tau, vth, v_threshold, v_reset)
    flag = nonfinite_flag(x, check_x)
    args = (
        _ptr(x), _ptr(v0), _ptr(params), _ptr(s), _ptr(v_last), _ptr(h if save_h else None), _ptr(v_seq), _ptr(flag),
        np.int64(n), np.int64(v0.numel()), np.int64(1), np.int32(steps), np.int32(hard), np.int32(decay_input),
    )
    _launch(fn, x, n, args)
    raise_if_nonfinite(flag)  # the host sync described in the module docstring
    return s, v_seq if return_v else v_last, h


def _backward_impl(h_seq, grad_s, grad_v, vth, v_threshold, tau, v_reset, hard, decay_input, detach_reset,
                   sg_id, sg_param, return_v, need_v0, need_vth):
    _check_cuda(h_seq, "h_seq")
    steps, n = h_seq.shape[0], math.prod(h_seq.shape[1:])
    fn = _function(f"nrn_backward<nrn::LIF,{int(sg_id)},{SUPPORTED_DTYPES[h_seq.dtype]}>", h_seq.get_device())
    gx = torch.empty_like(h_seq)
    gv0 = h_seq.new_empty(h_seq.shape[1:])
    gp = torch.empty((3, n), dtype=torch.float64, device=h_seq.device) if need_vth else None
    params = _lif_params(h_seq, tau, vth, v_threshold, v_reset)
    args = (
        _ptr(None), _ptr(h_seq), _ptr(params), _ptr(grad_s), _ptr(grad_v if return_v else None),
        _ptr(None if return_v else grad_v), _ptr(gx), _ptr(gv0), _ptr(gp), np.int64(n), np.int64(1),
        np.int32(steps), np.int32(hard), np.int32(detach_reset), np.int32(decay_input), np.float64(sg_param),
    )
    _launch(fn, h_seq, n, args)
    gvth = gp[0].sum() if need_vth else h_seq.new_empty((0,), dtype=torch.float64)
    return gx, gv0, gvth  # grad_v0 is used only when need_v0


def _node_call(launcher, x, v0, vth, cfg):
    """``(spikes, v_out)`` through the C++ launcher (:mod:`.neuron_cuda_node`): LIF's definition with
    ``(v_th, tau, v_reset)`` as its ``[3, 1]`` parameters; a tensor threshold (rounded to x's dtype)
    enters as the first one, so its gradient flows back to it through autograd."""
    state0 = v0 if v0 is not None else constant((cfg.v_reset if cfg.hard else 0.0,), x.dtype, x.device)
    params = _lif_params(x, cfg.tau, None, cfg.v_threshold, cfg.v_reset)
    if vth is not None:
        params = torch.cat([vth.reshape(1, 1).to(x.dtype).to(params.dtype), params[1:]])
    return neuron_cuda_node.run(launcher, "lif", x, state0, params, 1, 1, cfg.hard, cfg.decay_input, cfg.detach_reset,
                                cfg.sg_id, cfg.sg_param, cfg.return_v, cfg.check_x, False)


def _through_node(python_call):
    """``python_call`` (an eager call of the Python launchers) made through the C++ launcher instead,
    unless that is off or unavailable (:func:`.neuron_cuda_node.node`)."""
    def call(x, v0, vth, cfg):
        launcher = neuron_cuda_node.node()
        if launcher is not None:
            try:
                return _node_call(launcher, x, v0, vth, cfg)
            except neuron_cuda_node.LaunchFailed:  # warned once; the launcher is off from now on
                pass
        return python_call(x, v0, vth, cfg)
    return call


# the custom ops (torch.compile) and the Python launchers; eager calls go through the C++ launcher
_python_ops = make_ops("cupy", _forward_impl, _backward_impl)
_ops = _python_ops._replace(eager=_through_node(_python_ops.eager), forward=_through_node(_python_ops.forward))
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
