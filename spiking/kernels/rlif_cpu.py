"""Fused recurrent LIF on the CPU: ``spiking/kernels/rlif_cpu.cpp`` behind one autograd function.

The extension runs the whole forward (per step: ``addmm`` for ``S_{t-1} W^T + b``, then the
template's element-wise LIF step from ``cuda/rlif_step.cuh``) and the whole BPTT backward in one
native call each (outputs in the recycled buffers of ``cpu_buffers.h``; :func:`empty_cache`
frees them). Forward saves H_t (only when a gradient is needed) and the spikes it returns;
backward returns the gradients of x, the initial state, W and b. :class:`RLIFFunction` takes the
implementation (this extension, or :mod:`.rlif_cuda`'s) as an argument, so both backends share it.

Built through the cached build (:class:`.extension.CachedExtension`, ``spiking build``) with the
flags of the other extensions, from copies of its sources keyed by their contents and the toolchain.
"""

from __future__ import annotations

import functools
import warnings
from typing import Optional

import torch

from ..native_sources import cuda_source, native_source
from ._common import needs_grad, nonfinite_x_error
from .extension import CachedExtension

__all__ = ["run", "available", "load_extension", "extension", "sources", "empty_cache", "RLIFFunction"]


def sources() -> list:
    """The loops, the buffer header, the RLIF step header, and the template headers it includes
    (``neurons/*.cuh`` keep their folder)."""
    neurons = cuda_source("neuron_template.cuh").parent / "neurons"
    return [native_source("spiking.kernels", "rlif_cpu.cpp"), native_source("spiking.kernels", "cpu_buffers.h"),
            cuda_source("rlif_step.cuh"), cuda_source("neuron_template.cuh"), cuda_source("lif_step.cuh"),
            *((cuda_source(f"neurons/{p.name}"), f"neurons/{p.name}") for p in sorted(neurons.glob("*.cuh")))]


_EXT = CachedExtension("rlif_cpu", sources, "the fused CPU RLIF extension")


def extension() -> CachedExtension:
    """The cached C++ extension (for ``spiking build`` and diagnostics)."""
    return _EXT


def load_extension():
    """Build (first call) or load the cached extension; ``RuntimeError`` (remembered) if impossible."""
    return _EXT.load()


@functools.lru_cache(maxsize=None)
def _warn_once(why: str) -> None:
    warnings.warn(f"spiking: RLIF falls back to the torch reference: {why}", RuntimeWarning, stacklevel=4)


def available(warn: bool = False) -> bool:
    """True if the extension builds/loads; with ``warn``, a failure is warned about once."""
    ok = _EXT.available()
    if not ok and warn:
        _warn_once(_EXT.error())
    return ok


def empty_cache() -> int:
    """Free the extension's recycled output buffers (``cpu_buffers.h``); returns the bytes freed."""
    return int(_EXT.load().empty_cache()) if _EXT.directory() else 0


class RLIFFunction(torch.autograd.Function):
    """``(spikes, V_T, S_T) = f(x, W, b, V_0, S_0)`` by a fused implementation ``impl`` (an object
    with the extension's ``forward`` / ``backward``); differentiable in all five tensors."""

    @staticmethod
    def forward(ctx, impl, x, weight, bias, v0, s0, p, cfg, save, check_x):
        rest = p.rest(cfg)
        out, v, h, nonfinite = impl.forward(x, weight, bias, v0, s0, p.k, rest, p.v_threshold, p.v_reset, cfg.hard,
                                            cfg.decay_input, save)
        if check_x and nonfinite:
            raise nonfinite_x_error()
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(h, out, s0, weight)
        ctx.impl, ctx.p, ctx.cfg, ctx.has_bias = impl, p, cfg, bias is not None
        return out, v, out[-1].clone()

    @staticmethod
    def backward(ctx, g_out, g_v, g_s):
        h, out, s0, weight = ctx.saved_tensors
        p, cfg, need = ctx.p, ctx.cfg, ctx.needs_input_grad
        gx, gv0, gs0, gw, gb = ctx.impl.backward(
            h, out, s0, weight, *(None if g is None else g.contiguous() for g in (g_out, g_v, g_s)), p.k, p.rest(cfg),
            p.v_threshold, p.v_reset, cfg.hard, cfg.detach_reset, cfg.decay_input, cfg.surrogate.kernel_id,
            cfg.surrogate.param, bool(need[5]), bool(need[2]), bool(need[3] and ctx.has_bias))
        return (None, gx, gw if need[2] else None, gb if need[3] and ctx.has_bias else None,
                gv0.view_as(s0) if need[4] else None, gs0.view_as(s0) if need[5] else None, None, None, None, None)


def run(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], v0: torch.Tensor, s0: torch.Tensor, p,
        cfg, check_x: bool = True):
    """Fused CPU run with the arguments and results of :func:`~spiking.neuron.rlif.rlif_multistep_torch`;
    ``check_x``: ``ValueError`` when x holds NaN/inf (probed during the kernel's pass over x)."""
    if x.device.type != "cpu":
        raise RuntimeError(f"backend 'cpu' needs CPU tensors, but x is on {x.device}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"x: the fused RLIF supports float32 and float64, got {x.dtype}")
    for name, t in (("weight", weight), ("bias", bias), ("v0", v0), ("s0", s0)):
        if t is not None and t.dtype != x.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but x has {x.dtype}")
    args = [t if t is None else t.contiguous() for t in (x, weight, bias, v0, s0)]
    out, v, s = RLIFFunction.apply(load_extension(), *args, p, cfg, needs_grad(*args), check_x)
    return out, (v, s)
