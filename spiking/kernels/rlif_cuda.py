"""Fused recurrent LIF on the GPU: a host loop of cuBLAS matmuls and ``cuda/rlif.cu`` step kernels.

Per step the forward runs ``R_t = S_{t-1} W^T + b`` (``torch.addmm``, cuBLAS) and the template's
element-wise LIF step ``rlif_forward_step`` over the ``[B, N]`` layer; the backward runs
``rlif_backward_step`` and ``dL/dS_{t-1} = (dL/dI_t) W`` from T-1 down to 0, then
``dL/dW = Σ_t (dL/dI_t)^T S_{t-1}`` in one matmul. Kernels are compiled by NVRTC on first use per
(dtype, surrogate) with ``-fmad=false`` and ``-I cuda/``, cached per device, and launched on
torch's current stream. The autograd function is the CPU path's
(:class:`.rlif_cpu.RLIFFunction`) with :data:`IMPL` behind it.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ._common import device_ptr as _ptr
from ._common import needs_grad
from .neuron_cuda import DTYPES, check_run

__all__ = ["run", "available", "kernel_name", "IMPL", "HostLoop"]


def available() -> tuple[bool, str]:
    """``(True, "")`` when CuPy imports and torch sees a CUDA device."""
    from . import cuda

    return cuda.available()


def kernel_name(direction: str, dtype: torch.dtype, sg_id: int = 0) -> str:
    """NVRTC name expression, e.g. ``rlif_backward_step<1,float>``."""
    if direction == "forward":
        return f"rlif_forward_step<{DTYPES[dtype]}>"
    return f"rlif_backward_step<{int(sg_id)},{DTYPES[dtype]}>"


def _launch(name: str, like: torch.Tensor, args: tuple) -> None:
    from .cuda import _function, _launch as launch

    launch(_function(name, like.get_device(), "rlif.cu"), like, like.numel(), args)


class HostLoop:
    """The CPU extension's ``forward`` / ``backward`` signatures as a host loop of matmuls and
    element-wise steps; :meth:`step_forward` / :meth:`step_backward` launch ``cuda/rlif.cu``."""

    def step_forward(self, x, rec, v, out, h, consts, hard, decay_input):
        """``out = S_t``, ``h = H_t`` (if given), ``v``: V_{t-1} → V_t, for one step's ``[B, N]``."""
        _launch(kernel_name("forward", x.dtype), v, (
            _ptr(x), _ptr(rec), _ptr(v), _ptr(out), _ptr(h), np.int64(v.numel()),
            *(np.float64(c) for c in consts), np.int32(hard), np.int32(decay_input)))

    def step_backward(self, h, g_out, g_s, g_v, g_x, consts, hard, detach, decay_input, sg, sg_param):
        """``g_x = dL/dI_t``; ``g_v``: dL/dV_t → dL/dV_{t-1}; ``g_out`` may be None."""
        _launch(kernel_name("backward", h.dtype, sg), g_v, (
            _ptr(h), _ptr(g_out), _ptr(g_s), _ptr(g_v), _ptr(g_x), np.int64(g_v.numel()),
            *(np.float64(c) for c in consts), np.int32(hard), np.int32(detach), np.int32(decay_input),
            np.float64(sg_param)))

    def forward(self, x, weight, bias, v0, s0, k, rest, theta, v_reset, hard, decay_input, save):
        out, v = torch.empty_like(x), v0.clone()
        h = torch.empty_like(x) if save else None
        wt = weight.t()
        for t in range(x.shape[0]):
            s_prev = s0 if t == 0 else out[t - 1]
            rec = s_prev @ wt if bias is None else torch.addmm(bias, s_prev, wt)
            self.step_forward(x[t], rec, v, out[t], None if h is None else h[t], (k, rest, theta, v_reset), hard,
                              decay_input)
        return out, v, x.new_empty((0,)) if h is None else h, False

    def backward(self, h, out, s0, weight, g_out, g_v, g_s, k, rest, theta, v_reset, hard, detach, decay_input, sg,
                 sg_param, need_s0, need_w, need_b):
        if h.dim() != 3:
            raise RuntimeError("rlif: saved H must be [T, B, N] (the forward saved nothing for backward)")
        steps, n = h.shape[0], h.shape[-1]
        g_v = torch.zeros_like(s0) if g_v is None else g_v.clone()
        g_s = torch.zeros_like(s0) if g_s is None else g_s.contiguous()
        g_x = torch.empty_like(h)
        for t in range(steps - 1, -1, -1):
            self.step_backward(h[t], None if g_out is None else g_out[t], g_s, g_v, g_x[t], (k, rest, theta, v_reset),
                               hard, detach, decay_input, sg, sg_param)
            if t > 0 or need_s0:
                g_s = g_x[t] @ weight  # dL/dS_{t-1} = (dL/dI_t) W
        gi, none = g_x.reshape(-1, n), h.new_empty((0,))
        g_w = none
        if need_w:  # Σ_t (dL/dI_t)^T S_{t-1}
            g_w = gi[: s0.shape[0]].t() @ s0
            if steps > 1:
                g_w = g_w.addmm_(gi[s0.shape[0]:].t(), out[:-1].reshape(-1, n))
        return g_x, g_v, g_s if need_s0 else none, g_w, gi.sum(0) if need_b else none


IMPL = HostLoop()


def run(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], v0: torch.Tensor, s0: torch.Tensor, p,
        cfg):
    """Fused CUDA run with the arguments and results of :func:`~spiking.neuron.rlif.rlif_multistep_torch`."""
    from .rlif_cpu import RLIFFunction

    check_run(x, "the fused RLIF kernels")
    args = [t if t is None else t.contiguous() for t in (x, weight, bias, v0, s0)]
    out, v, s = RLIFFunction.apply(IMPL, *args, p, cfg, needs_grad(*args), False)
    return out, (v, s)
