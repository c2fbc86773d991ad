"""Fused multi-step neurons on the CPU: the neuron template's loops as one ``autograd.Function``.

The C++ extension of :mod:`.cpu` (``spiking/kernels/neuron_cpu_loops.h``) instantiates one forward and
one backward loop per dynamics definition of ``cuda/neuron_template.cuh``; :func:`run` wraps them
in :class:`FusedNeuron` for the generic multi-step machinery (:mod:`spiking.neuron.multistep`).
Forward saves only what the definition asks for (``NSAVE`` values per step, e.g. H_t) and only
when a gradient is needed; backward is one reverse-time sweep that also sums every per-neuron
parameter gradient over T (in double), which autograd then reduces to the parameter's own shape
(a learnable tau shared or per channel). Outputs use the recycled buffers of ``cpu_buffers.h``
(``$SPIKING_CPU_CACHE_MB``; :func:`empty_cache` frees them) and x is probed for NaN/inf in the
same pass. LIF's public functions use the same extension through :mod:`.cpu`'s custom ops.
"""

from __future__ import annotations

import warnings

import torch

from . import cpu
from ._common import check_params, constant, keeps_x, needs_grad, nonfinite_x_error
from .cpu import build_directory, empty_cache, load_extension

__all__ = ["run", "available", "has_kernel", "load_extension", "build_directory", "build_error", "empty_cache"]

_warned = False


def build_error() -> str:
    """Why the extension could not be built ("" when it was, or was not tried yet)."""
    return cpu._EXT.error()


def available(warn: bool = False) -> bool:
    """True if the extension builds/loads; with ``warn``, a failure is warned about once."""
    global _warned
    ok, why = cpu.available()
    if not ok and warn and not _warned:
        _warned = True
        warnings.warn(f"spiking: neurons fall back to the torch reference: {why}", RuntimeWarning, stacklevel=3)
    return ok


def has_kernel(name: str) -> bool:
    """Whether the template registry of the built extension has a dynamics definition ``name``."""
    return name in cpu.dynamics_names()


def per_neuron(values: tuple, x: torch.Tensor) -> torch.Tensor:
    """Stack of tensors broadcastable to one step of ``x``: ``[K, 1]`` when every one is a single
    value (no per-neuron copy is made; a cached constant when none requires grad), else
    ``[K, *x.shape[1:]]``."""
    if all(v.dim() == 0 and not v.requires_grad for v in values):
        return constant(tuple(v.item() for v in values), x.dtype, x.device)
    values = [v.to(x.dtype) for v in values]
    if all(v.numel() == 1 for v in values):
        return torch.stack([v.reshape(()) for v in values]).reshape(len(values), 1)
    return torch.stack([v.expand(x.shape[1:]) for v in values]).contiguous()


class FusedNeuron(torch.autograd.Function):
    """``(out, state_last) = f(x, state0, params)`` by the fused loops; differentiable in all three."""

    @staticmethod
    def forward(ctx, x, state0, params, dyn_id, cfg, save, check_x, keep_x=True):
        ext = load_extension()
        out, state, saved, nonfinite = ext.forward(dyn_id, x, state0, params, cfg.hard, cfg.decay_input, save, False)
        if check_x and nonfinite:
            raise nonfinite_x_error()
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x if keep_x else None, saved, params)  # x only where the backward reads it
        ctx.dyn_id, ctx.cfg, ctx.state_shape = dyn_id, cfg, state0.shape
        return out, state.view(state0.shape[0], *x.shape[1:])  # [NS, ...] (the kernel drops NS = 1)

    @staticmethod
    def backward(ctx, g_out, g_state):
        x, saved, params = ctx.saved_tensors
        cfg = ctx.cfg
        gx, gs0, gp = load_extension().backward(
            ctx.dyn_id, x, saved, params, None if g_out is None else g_out.contiguous(), None,
            None if g_state is None else g_state.contiguous(), cfg.hard, cfg.detach_reset, cfg.decay_input,
            cfg.surrogate.kernel_id, cfg.surrogate.param, bool(ctx.needs_input_grad[2]),
        )
        if ctx.needs_input_grad[1]:
            gs0 = gs0.reshape(ctx.state_shape[0], -1)
            gs0 = gs0.sum(1, keepdim=True) if ctx.state_shape[1:].numel() == 1 else gs0
            gs0 = gs0.view(ctx.state_shape)
        else:
            gs0 = None
        if ctx.needs_input_grad[2]:
            gp = gp.sum(1, keepdim=True) if params[0].numel() == 1 else gp
            gp = gp.to(params.dtype).view(params.shape)
        return gx, gs0, gp if ctx.needs_input_grad[2] else None, None, None, None, None, None


def run(spec, x: torch.Tensor, state0: tuple, params: tuple, cfg, check_x: bool = True):
    """Fused CPU run of ``spec`` with the arguments and results of ``multistep.run_torch``;
    ``check_x``: ``ValueError`` when x holds NaN/inf (probed during the kernel's pass over x)."""
    if x.device.type != "cpu":
        raise RuntimeError(f"backend 'cpu' needs CPU tensors, but x is on {x.device}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"x: the fused neurons support float32 and float64, got {x.dtype}")
    dyn_id = cpu.dynamics_id(spec.name)
    ext = load_extension()
    scalar, _, bwd_x, grad_mask = ext.traits(dyn_id)
    check_params(spec, params, bool(scalar), grad_mask)
    st, pr = per_neuron(state0, x), per_neuron(params, x)
    keep_x = keeps_x(bool(bwd_x), ext.layout(dyn_id)[2])
    out, state = FusedNeuron.apply(x.contiguous(), st, pr, dyn_id, cfg, needs_grad(x, st, pr), check_x, keep_x)
    return out, tuple(state.unbind(0))
