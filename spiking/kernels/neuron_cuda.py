"""Fused multi-step neurons on the GPU: ``cuda/neurons.cu`` (the neuron template) through CuPy.

Kernels ``nrn_forward<D, T>`` / ``nrn_backward<D, SG, T>`` are compiled by NVRTC on first use per
(neuron, dtype, surrogate) with ``-fmad=false`` and ``-I cuda/``, cached per device, and launched
on torch's current stream (the LIF loader's helpers in :mod:`.cuda`). The autograd wrapper is the
CPU one's (:class:`.neuron_cpu.FusedNeuron` semantics), with these kernels behind it.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch

from ..native_sources import cuda_source
from ._common import needs_grad

__all__ = ["run", "available", "kernel_name"]

DTYPES = {torch.float32: "float", torch.float64: "double"}
# registry name -> C++ dynamics type (cuda/neuron_template.cuh, NRN_FOR_EACH)
TYPES = {"if": "nrn::IF", "plif": "nrn::PLIF", "alif": "nrn::ALIF", "cuba_lif": "nrn::CubaLIF", "li": "nrn::LI"}
LAYOUT = {"if": (1, 2, 1), "plif": (1, 3, 2), "alif": (2, 5, 2), "cuba_lif": (2, 4, 1), "li": (1, 2, 0)}
_lock = threading.Lock()
_functions: dict = {}


def available() -> tuple[bool, str]:
    """``(True, "")`` when CuPy imports and torch sees a CUDA device."""
    from . import cuda

    return cuda.available()


def kernel_name(direction: str, neuron: str, dtype: torch.dtype, sg_id: int = 0) -> str:
    """NVRTC name expression, e.g. ``nrn_backward<nrn::ALIF,0,float>``."""
    if direction == "forward":
        return f"nrn_forward<{TYPES[neuron]},{DTYPES[dtype]}>"
    return f"nrn_backward<{TYPES[neuron]},{int(sg_id)},{DTYPES[dtype]}>"


def _function(name: str, device_index: int):
    from .cuda import _import_cupy

    key = (name, device_index)
    with _lock:
        fn = _functions.get(key)
        if fn is None:
            cupy = _import_cupy()
            with cupy.cuda.Device(device_index):
                source = cuda_source("neurons.cu")
                options = ("--std=c++14", "-fmad=false", "-DNRN_NO_INSTANTIATE", f"-I{source.parent}")
                module = cupy.RawModule(code=source.read_text(), options=options,
                                        name_expressions=[name])
                fn = _functions[key] = module.get_function(name)
    return fn


def _ptr(t):
    return np.uint64(0 if t is None or t.numel() == 0 else t.data_ptr())


def _launch(name: str, x: torch.Tensor, n: int, args: tuple) -> None:
    from .cuda import _launch as launch

    launch(_function(name, x.get_device()), x, n, args)


class FusedNeuronCuda(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, state0, params, neuron, cfg, save):
        steps, n = x.shape[0], math.prod(x.shape[1:])
        nsave = LAYOUT[neuron][2]
        out, state = torch.empty_like(x), torch.empty_like(state0)
        saved = x.new_empty((nsave, steps, n)) if save and nsave else None
        _launch(kernel_name("forward", neuron, x.dtype), x, n, (
            _ptr(x), _ptr(state0), _ptr(params), _ptr(out), _ptr(state), _ptr(saved), np.int64(n), np.int32(steps),
            np.int32(cfg.hard), np.int32(cfg.decay_input)))
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, saved if saved is not None else x.new_empty((0,)), params)
        ctx.neuron, ctx.cfg, ctx.state_shape = neuron, cfg, state0.shape
        return out, state

    @staticmethod
    def backward(ctx, g_out, g_state):
        x, saved, params = ctx.saved_tensors
        cfg = ctx.cfg
        steps, n = x.shape[0], math.prod(x.shape[1:])
        gx, gs0, gp = torch.empty_like(x), x.new_empty(ctx.state_shape), torch.empty_like(params)
        g_out = None if g_out is None else g_out.contiguous()
        g_state = None if g_state is None else g_state.contiguous()
        _launch(kernel_name("backward", ctx.neuron, x.dtype, cfg.surrogate.kernel_id), x, n, (
            _ptr(x), _ptr(saved), _ptr(params), _ptr(g_out), _ptr(g_state), _ptr(gx), _ptr(gs0), _ptr(gp),
            np.int64(n), np.int32(steps), np.int32(cfg.hard), np.int32(cfg.detach_reset), np.int32(cfg.decay_input),
            np.float64(cfg.surrogate.param)))
        return gx, gs0, gp if ctx.needs_input_grad[2] else None, None, None, None


def check_run(x: torch.Tensor, what: str) -> None:
    """``RuntimeError`` / ``TypeError`` unless the CUDA kernels can run on ``x``."""
    ok, why = available()
    if not ok:
        raise RuntimeError(f"backend 'cupy' is not usable: {why}")
    if not x.is_cuda:
        raise RuntimeError(f"backend 'cupy' needs CUDA tensors, but x is on {x.device}")
    if x.dtype not in DTYPES:
        raise TypeError(f"x: {what} support float32 and float64, got {x.dtype}")


def run(spec, x: torch.Tensor, state0: tuple, params: tuple, cfg):
    """Fused CUDA run of ``spec`` with the arguments and results of ``multistep.run_torch``."""
    check_run(x, "the fused neurons")
    if spec.name not in TYPES:
        raise RuntimeError(f"neuron {spec.name!r} has no CUDA kernel (known: {sorted(TYPES)})")
    step_shape = x.shape[1:]  # the CUDA kernels read per-neuron [K, N] state and parameters
    st = torch.stack([s.to(x.dtype).expand(step_shape) for s in state0]).contiguous()
    pr = torch.stack([p.expand(step_shape) for p in params]).contiguous()
    out, state = FusedNeuronCuda.apply(x.contiguous(), st, pr, spec.name, cfg, needs_grad(x, st, pr))
    return out, tuple(state.unbind(0))
