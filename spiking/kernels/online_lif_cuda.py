"""OTTT's online LIF layer on the GPU: ``cuda/online_lif.cu`` through CuPy, with the signatures of the
CPU ops in :mod:`.online_lif` (the module doc's equations).

``forward`` launches ``online_forward`` (one thread per neuron, the loop over the steps inside: the
soft-reset LIF step of ``cuda/neurons/lif.cuh`` as the fused CUDA LIF runs it, so spikes and ``Z``
equal the reference path's on the same GPU); ``backward`` launches ``online_backward``
(``g σ'(Z)``, ``/ τ`` with ``decay_input``). Each allocates its outputs with torch on x's device
and launches on torch's current stream: per layer and training step 5 dispatched ops (4 outputs,
1 gradient), where the reference path of torch ops dispatches the multi-step LIF, the membrane
recovery, the traces as two matrix products, the surrogate's ops and the reshapes between them.
Kernels are compiled by NVRTC on first use per (dtype, surrogate), as :mod:`.cuda` does.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._common import device_ptr as _ptr

__all__ = ["usable", "forward", "backward", "kernel_name"]

DTYPES = {torch.float32: "float", torch.float64: "double"}


def usable(x: torch.Tensor) -> bool:
    """True when the kernels run ``x``: a CUDA float32/float64 tensor, with CuPy importable."""
    if not (x.is_cuda and x.dtype in DTYPES):
        return False
    from .cuda import available

    return available()[0]


def kernel_name(direction: str, dtype: torch.dtype, sg_id: int = 0) -> str:
    """NVRTC name expression, e.g. ``online_backward<1,float>``."""
    if direction == "forward":
        return f"online_forward<{DTYPES[dtype]}>"
    return f"online_backward<{int(sg_id)},{DTYPES[dtype]}>"


def _launch(name: str, like: torch.Tensor, n: int, args: tuple) -> None:
    from .cuda import _function, _launch as launch

    launch(_function(name, like.get_device(), "online_lif.cu"), like, n, args)


def _check(t: torch.Tensor, name: str) -> None:
    """``RuntimeError`` for a tensor off the GPU, ``TypeError`` for a dtype without kernels (as the CPU ops)."""
    from . import cuda

    if not isinstance(t, torch.Tensor):
        raise TypeError(f"online LIF: {name} must be a torch.Tensor, got {type(t).__name__}")
    cuda._check_cuda(t, name)
    if t.dtype not in DTYPES:
        raise TypeError(f"online LIF: {name} must be float32 or float64, got {t.dtype}")


def forward(x: torch.Tensor, steps: int, v_threshold: float, tau: float, decay_input: bool,
            trace_lambda: float | None = None, check_finite: bool = True):
    """``(S, Z, A, R)`` for ``x`` whose leading dimension holds ``steps`` time steps (``A``, ``R``
    empty without ``trace_lambda``); ``ValueError("x contains NaN or inf")`` with ``check_finite``
    (the kernel's device flag, read after the launch: a host sync)."""
    from .cuda import nonfinite_flag, raise_if_nonfinite

    _check(x, "x")
    if (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1 or x.dim() < 1 or x.numel() == 0
            or x.shape[0] % steps):
        raise ValueError(f"online LIF: x must be non-empty with a leading dimension divisible by steps = "
                         f"{steps!r}, got shape {tuple(x.shape)}")
    if trace_lambda is not None and not 0.0 <= float(trace_lambda) <= 1.0:
        raise ValueError(f"trace_lambda must be in [0, 1], got {trace_lambda!r}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau!r}")
    x = x.contiguous()
    n = math.prod(x.shape) // steps
    s, z = torch.empty_like(x), torch.empty_like(x)
    if trace_lambda is None:
        a = r = None
    else:
        a, r = torch.empty_like(x), x.new_empty((2 * x.shape[0], *x.shape[1:]))
    flag = nonfinite_flag(x, check_finite)
    _launch(kernel_name("forward", x.dtype), x, n, (
        _ptr(x), _ptr(s), _ptr(z), _ptr(a), _ptr(r), _ptr(flag), np.int64(n), np.int32(steps),
        np.float64(v_threshold), np.float64(tau), np.int32(decay_input), np.float64(trace_lambda or 0.0)))
    raise_if_nonfinite(flag)
    if a is None:  # no trace asked for: empty tensors, as the CPU ops return
        a = r = x.new_empty((0,))
    return s, z, a, r


def backward(g: torch.Tensor, z: torch.Tensor, surrogate, tau: float, decay_input: bool) -> torch.Tensor:
    """``g σ'(z)`` (``/ tau`` with ``decay_input``) for a :class:`~spiking.neuron.surrogate.Surrogate`."""
    _check(g, "g")
    _check(z, "z")
    if g.shape != z.shape or g.dtype != z.dtype:
        raise ValueError(f"online LIF: g and z must match, got {tuple(g.shape)} {g.dtype} and "
                         f"{tuple(z.shape)} {z.dtype}")
    if surrogate.kernel_id not in (0, 1, 2, 3):
        raise ValueError(f"online LIF: surrogate id must be 0..3, got {surrogate.kernel_id!r}")
    g, z = g.contiguous(), z.contiguous()
    gx = torch.empty_like(z)
    _launch(kernel_name("backward", z.dtype, surrogate.kernel_id), z, z.numel(), (
        _ptr(g), _ptr(z), _ptr(gx), np.int64(z.numel()), np.float64(surrogate.param), np.float64(tau),
        np.int32(decay_input)))
    return gx
