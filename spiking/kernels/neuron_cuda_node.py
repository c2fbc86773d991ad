"""The fused CUDA neurons' eager call as a C++ autograd node (``neuron_cuda_node.cpp``).

The kernels are those of :mod:`.cuda` / :mod:`.neuron_cuda` (``nrn_forward`` / ``nrn_backward`` of
``cuda/neurons.cu``, compiled by CuPy's NVRTC on first use); what changes is who launches them. Here
one C++ call allocates the outputs, launches the forward kernel with the CUDA driver's
``cuLaunchKernel`` on torch's current stream, reads the NaN/inf flag and records a C++ autograd node
whose backward launches the backward kernel and reduces the gradients: no Python ``autograd.Function``,
no CuPy argument packing, no Python in the backward. The kernels' ``CUfunction`` handles are looked
up once per (kernel, device) and passed in as integers, as are the addresses of ``cuLaunchKernel`` and
``cuStreamIsCapturing`` (from ``libcuda``), so the extension needs no CUDA headers and builds like the
CPU extensions: ``spiking build`` builds it ahead of time; a first use that finds no finished build
compiles it in a background thread (announced on stderr), the calls going
through CuPy meanwhile.

Semantics are those of the Python launchers it replaces: the same kernels and arguments, the
NaN/inf check read right after the forward launch (one host sync; none while the stream is being
captured into a CUDA graph), gradients of ``x``, the initial state and the parameters.
``SPIKING_CUDA_LAUNCH=cupy`` launches through CuPy and Python ``autograd.Function`` objects instead
(also used when the extension cannot be built: said once at INFO level). ``torch.compile`` keeps
using the custom ops of :mod:`.cuda`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import warnings
from typing import NamedTuple, Optional

import torch

from ..native_sources import native_source
from ._common import needs_grad
from .extension import CachedExtension

__all__ = ["node", "run", "extension", "ENV", "Launcher", "LaunchFailed"]

ENV = "SPIKING_CUDA_LAUNCH"  # "cupy": launch through CuPy and Python autograd Functions

_EXT = CachedExtension("neuron_cuda_node", lambda: [native_source("spiking.kernels", "neuron_cuda_node.cpp")],
                       "the C++ launcher of the CUDA neuron kernels")
_lock = threading.Lock()
_ready = None  # the Launcher once loaded; False when it cannot be used
_builder: Optional[threading.Thread] = None  # compiles the extension in the background (first use)
_handles: dict = {}
_launched = False  # a launch has succeeded in this process (later failures are raised as they are)
_log = logging.getLogger(__name__)


def extension() -> CachedExtension:
    return _EXT


def _driver() -> tuple[int, int]:
    """Addresses of ``cuLaunchKernel`` and ``cuStreamIsCapturing`` in the CUDA driver library."""
    lib = ctypes.CDLL("libcuda.so.1")
    return (ctypes.cast(lib.cuLaunchKernel, ctypes.c_void_p).value,
            ctypes.cast(lib.cuStreamIsCapturing, ctypes.c_void_p).value)


class Launcher(NamedTuple):
    """The loaded extension and the driver functions its calls use (``ext.Driver``)."""

    ext: object
    driver: object


def _start() -> None:
    """Load the extension and find the driver functions (``_ready``: a :class:`Launcher`, or False)."""
    global _ready
    try:
        ext = _EXT.load()
        _ready = Launcher(ext, ext.Driver(*_driver(), False))
    except (RuntimeError, OSError, AttributeError) as exc:
        _log.info("spiking: CUDA neuron kernels are launched through CuPy: %s", exc)
        _ready = False


def node(wait: bool = False) -> Optional[Launcher]:
    """The :class:`Launcher` (the loaded extension and its driver functions), or ``None``:
    ``SPIKING_CUDA_LAUNCH=cupy``, the extension or the driver library cannot be loaded (the reason
    logged once at INFO), or it is still being compiled. A first use that finds no finished build
    in the cache (``spiking build`` makes one ahead of time) starts the compile in a background
    thread (announced on stderr) and the calls go through CuPy until it is done, so the first call
    does not wait for the compiler;
    ``wait=True`` waits for it (tests, benchmarks of the steady state)."""
    global _builder
    if os.environ.get(ENV) == "cupy":
        return None
    if _ready is None:
        with _lock:
            if _ready is None and _builder is None:
                if _EXT.built():
                    _start()
                else:
                    _builder = threading.Thread(target=_start, name="spiking-cuda-launcher-build", daemon=True)
                    _builder.start()
        if _ready is None and wait and _builder is not None:
            _builder.join()
    return _ready or None


def _handles_of(neuron: str, dtype: torch.dtype, sg_id: Optional[int], device: int) -> tuple[int, int]:
    """``(forward, backward)`` CUfunction handles of ``neuron``'s kernels for ``dtype`` on ``device``
    (backward 0 when ``sg_id`` is None: a call without a gradient compiles no backward kernel)."""
    key = (neuron, dtype, sg_id, device)
    h = _handles.get(key)
    if h is None:  # a first call of its kind: checked here, so later calls pay nothing for it
        from .cuda import kernel_handle
        from .neuron_cuda import SUPPORTED_DTYPES, TYPES, kernel_name

        if neuron not in TYPES:
            raise ValueError(f"neuron {neuron!r} has no CUDA kernel (known: {sorted(TYPES)})")
        if dtype not in SUPPORTED_DTYPES or (neuron != "lif" and dtype not in (torch.float32, torch.float64)):
            raise TypeError(f"x: the CUDA kernels of {neuron!r} do not take {dtype}")

        fwd = kernel_handle(kernel_name("forward", neuron, dtype), device)
        bwd = 0 if sg_id is None else kernel_handle(kernel_name("backward", neuron, dtype, sg_id), device)
        h = _handles[key] = (fwd, bwd)
    return h


class LaunchFailed(RuntimeError):
    """The launcher's first forward launch failed (e.g. the driver refused the kernel handle): it is
    switched off for the process (warned once) and the caller makes the call through CuPy."""


def _launch_failed(exc: RuntimeError) -> LaunchFailed:
    global _ready
    _ready = False
    warnings.warn(f"spiking: the C++ launcher of the CUDA neuron kernels failed ({exc}); launching through "
                  "CuPy from now on", RuntimeWarning, stacklevel=4)
    return LaunchFailed(str(exc))


def run(launcher: Launcher, neuron: str, x: torch.Tensor, state0: torch.Tensor, params: torch.Tensor, ns: int,
        nsave: int, hard: bool, decay_input: bool, detach_reset: bool, sg_id: int, sg_param: float, return_seq: bool,
        check_x: bool, keep_x: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out, state)`` of ``neuron``'s kernels through ``launcher`` (:func:`node`), for contiguous
    CUDA ``x [T, ...]``, ``state0 [NS, ...]`` or ``[NS, 1]`` in x's dtype and ``params [NP, N]`` or
    ``[NP, 1]`` in the compute dtype. ``state``: the last state (``[NS, ...]``, no leading dim when
    ``ns == 1``), or with ``return_seq`` the state after every step. A C++ autograd node when a
    gradient is recorded, else the forward kernel alone; ``ValueError`` on NaN/inf x with ``check_x``
    or an unknown neuron, ``TypeError`` for a dtype its kernels lack, ``RuntimeError`` (from C++, before
    any launch) for shapes, layouts, devices or dtypes that do not fit;
    :class:`LaunchFailed` when the first launch of the process fails (the launcher is then off)."""
    global _launched
    ext, driver = launcher
    dev = x.get_device()
    try:
        if needs_grad(x, state0, params):
            fwd, bwd = _handles_of(neuron, x.dtype, sg_id, dev)
            out = ext.apply(driver, fwd, bwd, x, state0, params, ns, nsave, hard, decay_input, detach_reset, sg_param,
                            return_seq, check_x, keep_x)
        else:
            fwd, _ = _handles_of(neuron, x.dtype, None, dev)
            out = ext.forward(driver, fwd, x, state0, params, ns, hard, decay_input, return_seq, check_x)
    except RuntimeError as exc:
        if not _launched and "cuLaunchKernel failed" in str(exc):
            raise _launch_failed(exc) from exc
        raise
    _launched = True
    return out
