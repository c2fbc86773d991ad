"""Fused multi-step neurons on the GPU: ``cuda/neurons.cu`` (the neuron template) through CuPy.

Kernels ``nrn_forward<D, T>`` / ``nrn_backward<D, SG, T>`` are compiled by NVRTC on first use per
(neuron, dtype, surrogate) with ``-fmad=false`` and ``-I cuda/``, cached per device, and launched
on torch's current stream (the loader and launch helpers of :mod:`.cuda`, which runs LIF's
definition from the same source). By default the C++ launcher of :mod:`.neuron_cuda_node` makes the
call (one C++ autograd node, no Python in forward or backward); with ``SPIKING_CUDA_LAUNCH=cupy``, or
where that extension cannot be built, a call that records a gradient goes through
:class:`FusedNeuronCuda` (an ``autograd.Function`` with the CPU node's semantics, launching through
CuPy). Either way a call that records none (``no_grad``, inference, inputs without ``requires_grad``)
launches the forward kernel alone, saving nothing. NaN/inf in x is probed by the forward kernel
while it reads x (a device flag read after the launch, as for LIF: one host sync with the check on,
none with ``check_finite=False``), not by a separate ``isfinite(x).all()`` pass over x. Per-layer
states and parameters go in as cached ``[K, 1]`` stacks (:func:`_stacked`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import neuron_cuda_node
from ._common import check_params, keeps_x, needs_grad
from ._common import device_ptr as _ptr
from .cuda import SUPPORTED_DTYPES

__all__ = ["run", "available", "kernel_name"]

DTYPES = {torch.float32: "float", torch.float64: "double"}
# registry name -> C++ dynamics type (cuda/neuron_template.cuh, NRN_FOR_EACH)
TYPES = {"lif": "nrn::LIF", "if": "nrn::IF", "plif": "nrn::PLIF", "alif": "nrn::ALIF", "cuba_lif": "nrn::CubaLIF",
         "li": "nrn::LI"}
LAYOUT = {"lif": (1, 3, 1), "if": (1, 2, 1), "plif": (1, 3, 2), "alif": (2, 5, 2), "cuba_lif": (2, 4, 1),
          "li": (1, 2, 0)}
# traits of cuda/neurons/*.cuh (checked against the CPU extension's by tests/test_neuron_template.py)
SCALAR_PARAMS = {"lif"}  # parameters are one value per layer (SCALAR_PARAMS = 1)
# bit mask of the parameters with gradients where not all (GRAD_PARAMS)
GRAD_PARAMS = {"lif": 0b001, "if": 0b01, "li": 0b00, "alif": 0b00000, "cuba_lif": 0b0100, "plif": 0b011}
IGNORES_X = {"lif", "if"}  # backward reads only the saved values (BWD_X = 0)


def available() -> tuple[bool, str]:
    """``(True, "")`` when CuPy imports and torch sees a CUDA device."""
    from . import cuda

    return cuda.available()


def kernel_name(direction: str, neuron: str, dtype: torch.dtype, sg_id: int = 0) -> str:
    """NVRTC name expression, e.g. ``nrn_backward<nrn::ALIF,0,float>`` (fp16/bf16: LIF only)."""
    if direction == "forward":
        return f"nrn_forward<{TYPES[neuron]},{SUPPORTED_DTYPES[dtype]}>"
    return f"nrn_backward<{TYPES[neuron]},{int(sg_id)},{SUPPORTED_DTYPES[dtype]}>"


def _launch(name: str, x: torch.Tensor, n: int, args: tuple) -> None:
    from .cuda import _function, _launch as launch

    launch(_function(name, x.get_device()), x, n, args)


def _forward(x, state0, params, neuron: str, cfg, save: bool, check_x: bool):
    """Launch ``nrn_forward`` of ``neuron``: ``(out, state_last, saved or None)``; ``ValueError`` on
    NaN/inf x with ``check_x``."""
    from .cuda import nonfinite_flag, raise_if_nonfinite

    steps, n = x.shape[0], math.prod(x.shape[1:])
    nsave = LAYOUT[neuron][2]
    out, state = torch.empty_like(x), x.new_empty((state0.shape[0], *x.shape[1:]))
    saved = x.new_empty((nsave, steps, n)) if save and nsave else None
    flag = nonfinite_flag(x, check_x)
    _launch(kernel_name("forward", neuron, x.dtype), x, n, (
        _ptr(x), _ptr(state0), _ptr(params), _ptr(out), _ptr(state), _ptr(saved), _ptr(None), _ptr(flag),
        np.int64(n), np.int64(state0[0].numel()), np.int64(params.shape[1]), np.int32(steps), np.int32(cfg.hard),
        np.int32(cfg.decay_input)))
    raise_if_nonfinite(flag)
    return out, state, saved


class FusedNeuronCuda(torch.autograd.Function):
    """The recorded call: forward saving what the backward kernel reads, backward launching it."""

    @staticmethod
    def forward(ctx, x, state0, params, neuron, cfg, check_x):
        out, state, saved = _forward(x, state0, params, neuron, cfg, True, check_x)
        keep_x = keeps_x(neuron not in IGNORES_X, LAYOUT[neuron][2])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x if keep_x else None, saved if saved is not None else x.new_empty((0,)), params)
        ctx.neuron, ctx.cfg, ctx.state_shape, ctx.x_shape = neuron, cfg, state0.shape, x.shape
        return out, state

    @staticmethod
    def backward(ctx, g_out, g_state):
        x, saved, params = ctx.saved_tensors
        cfg = ctx.cfg
        like = saved if x is None else x  # dtype and device (x is not kept where backward ignores it)
        steps, n = ctx.x_shape[0], math.prod(ctx.x_shape[1:])
        need_p = bool(ctx.needs_input_grad[2])
        gx, gs0 = like.new_empty(ctx.x_shape), like.new_empty((ctx.state_shape[0], n))
        gp = like.new_empty((params.shape[0], n), dtype=torch.float64) if need_p else None
        g_out = None if g_out is None else g_out.contiguous()
        g_state = None if g_state is None else g_state.contiguous()
        _launch(kernel_name("backward", ctx.neuron, like.dtype, cfg.surrogate.kernel_id), like, n, (
            _ptr(x), _ptr(saved), _ptr(params), _ptr(g_out), _ptr(None), _ptr(g_state), _ptr(gx), _ptr(gs0),
            _ptr(gp), np.int64(n), np.int64(params.shape[1]), np.int32(steps), np.int32(cfg.hard),
            np.int32(cfg.detach_reset), np.int32(cfg.decay_input), np.float64(cfg.surrogate.param)))
        if need_p:
            gp = (gp.sum(1, keepdim=True) if params.shape[1] == 1 else gp).to(params.dtype)
        # the initial state's gradient per neuron, summed where one value serves the layer ([K, 1])
        gs0 = (gs0.sum(1, keepdim=True) if math.prod(ctx.state_shape[1:]) == 1 else gs0).view(ctx.state_shape)
        return gx, gs0, gp, None, None, None


def check_run(x: torch.Tensor, what: str) -> None:
    """``RuntimeError`` / ``TypeError`` unless the CUDA kernels can run on ``x``."""
    ok, why = available()
    if not ok:
        raise RuntimeError(f"backend 'cupy' is not usable: {why}")
    if not x.is_cuda:
        raise RuntimeError(f"backend 'cupy' needs CUDA tensors, but x is on {x.device}")
    if x.dtype not in DTYPES:
        raise TypeError(f"x: {what} support float32 and float64, got {x.dtype}")


_stacks: dict = {}


def _stacked(values: tuple, x: torch.Tensor) -> torch.Tensor:
    """The kernels' ``[K, 1]`` (every value a single number) or ``[K, *x.shape[1:]]`` stack of a state
    or parameter tuple, in x's dtype. A ``[K, 1]`` stack of tensors that require no grad is made once
    per (the tensors, their versions) and reused: a layer passes the same cached constants on every
    call, and on a GPU each new stack costs an allocation and a kernel launch."""
    if not all(v.numel() == 1 for v in values):
        return torch.stack([v.to(x.dtype).expand(x.shape[1:]) for v in values]).contiguous()
    if any(v.requires_grad or v.is_inference() for v in values):
        return torch.stack([v.to(x.dtype).reshape(()) for v in values]).reshape(len(values), 1)
    key = (x.dtype, x.device, *((id(v), v._version) for v in values))
    hit = _stacks.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], values)):
        return hit[1]
    with torch.inference_mode(False):  # read by recorded calls too
        stacked = torch.stack([v.to(x.dtype).reshape(()) for v in values]).reshape(len(values), 1)
    if len(_stacks) > 256:
        _stacks.clear()
    _stacks[key] = (values, stacked)  # holding the tensors keeps their ids from being reused
    return stacked


def run(spec, x: torch.Tensor, state0: tuple, params: tuple, cfg, check_x: bool = True):
    """Fused CUDA run of ``spec`` with the arguments and results of ``multistep.run_torch``;
    ``check_x``: ``ValueError`` when x holds NaN/inf (probed by the forward kernel)."""
    check_run(x, "the fused neurons")
    if spec.name not in TYPES:
        raise RuntimeError(f"neuron {spec.name!r} has no CUDA kernel (known: {sorted(TYPES)})")
    check_params(spec, params, spec.name in SCALAR_PARAMS, GRAD_PARAMS.get(spec.name, -1))
    st, pr = _stacked(state0, x), _stacked(params, x)
    x = x.contiguous()
    ns, _, nsave = LAYOUT[spec.name]
    launcher = neuron_cuda_node.node()
    if launcher is not None:  # the C++ launcher (state without its leading dim when ns == 1)
        try:
            out, state = neuron_cuda_node.run(
                launcher, spec.name, x, st, pr, ns, nsave, cfg.hard, cfg.decay_input, cfg.detach_reset,
                cfg.surrogate.kernel_id, cfg.surrogate.param, False, check_x,
                keeps_x(spec.name not in IGNORES_X, nsave))
            return out, (state,) if ns == 1 else tuple(state.unbind(0))
        except neuron_cuda_node.LaunchFailed:  # warned once; the launcher is off from now on
            pass
    if needs_grad(x, st, pr):
        out, state = FusedNeuronCuda.apply(x, st, pr, spec.name, cfg, check_x)
    else:  # nothing to record: the forward kernel alone, nothing saved
        out, state, _ = _forward(x, st, pr, spec.name, cfg, False, check_x)
    return out, tuple(state.unbind(0))
