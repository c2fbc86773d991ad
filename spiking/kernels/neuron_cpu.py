"""Fused multi-step neurons on the CPU: the neuron template's loops as one C++ autograd node.

The C++ extension of :mod:`.cpu` (``spiking/kernels/neuron_cpu_loops.h``) instantiates one forward and
one backward loop per dynamics definition of ``cuda/neuron_template.cuh``, and ``neuron_cpu.cpp``
joins them in one ``torch::autograd::Function`` (``ext.apply``: the backward runs without Python);
:func:`run` calls it for the generic multi-step machinery (:mod:`spiking.neuron.multistep`), and
:func:`.cpu.fused` (also LIF's eager path) the forward loop alone when no gradient is recorded.
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
from ._common import check_params, constant, keeps_x
from .cpu import build_directory, empty_cache, fused, load_extension

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


def run(spec, x: torch.Tensor, state0: tuple, params: tuple, cfg, check_x: bool = True):
    """Fused CPU run of ``spec`` with the arguments and results of ``multistep.run_torch``;
    ``check_x``: ``ValueError`` when x holds NaN/inf (probed during the kernel's pass over x)."""
    if not x.is_cpu:
        raise RuntimeError(f"backend 'cpu' needs CPU tensors, but x is on {x.device}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"x: the fused neurons support float32 and float64, got {x.dtype}")
    dyn_id = cpu.dynamics_id(spec.name)
    ext = load_extension()
    scalar, _, bwd_x, grad_mask = ext.traits(dyn_id)
    check_params(spec, params, bool(scalar), grad_mask)
    st, pr = per_neuron(state0, x), per_neuron(params, x)
    out, state = fused(ext, dyn_id, x.contiguous(), st, pr, cfg.hard, cfg.decay_input, cfg.detach_reset,
                       cfg.surrogate.kernel_id, cfg.surrogate.param, False, check_x,
                       keeps_x(bool(bwd_x), ext.layout(dyn_id)[2]))
    return out, (state,) if len(state0) == 1 else tuple(state.unbind(0))
