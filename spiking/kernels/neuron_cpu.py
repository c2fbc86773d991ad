"""Fused multi-step neurons on the CPU: a C++ extension instantiated from the neuron template.

``spiking/kernels/neuron_cpu.cpp`` instantiates one forward and one backward loop per dynamics
definition of ``cuda/neuron_template.cuh`` (float32 and float64); :func:`run` wraps them in one
``autograd.Function``. Forward saves only what the definition asks for (``NSAVE`` values per step,
e.g. H_t) and only when a gradient is needed; backward is one reverse-time sweep that also sums
every per-neuron parameter gradient over T (in double), which autograd then reduces to the
parameter's own shape (a learnable tau shared or per channel). Outputs use the recycled
buffers of ``cpu_buffers.h`` (a cache separate from the LIF extension's, same
``$SPIKING_CPU_CACHE_MB`` limit; :func:`empty_cache` frees it) and x is probed for NaN/inf in the
same pass.

Built like :mod:`.cpu` (``torch.utils.cpp_extension.load``, ``-O3 -ffp-contract=off``), from copies
of the sources in a cache directory keyed by their contents and the toolchain
(:func:`spiking.build.cached_build`; ~60-80 s the first time on 2 cores, ``spiking build`` does it
ahead of time).
"""

from __future__ import annotations

import shutil
import threading
import warnings
from pathlib import Path
from typing import Optional

import torch

from ..build import cached_build
from ..native_sources import cuda_source, native_source
from ._common import needs_grad, nonfinite_x_error
from .cpu import _cflags, _module_name, import_built, toolchain_key

__all__ = ["run", "available", "has_kernel", "load_extension", "build_directory", "build_error", "template_sources",
           "empty_cache"]

_lock = threading.Lock()
_ext = None
_error: Optional[str] = None
_directory: Optional[Path] = None
_warned = False


def template_sources() -> list[Path]:
    """The loops, the buffer header, the template, every dynamics definition and the step header."""
    neurons = cuda_source("neuron_template.cuh").parent / "neurons"
    return [native_source("spiking.kernels", "neuron_cpu.cpp"), native_source("spiking.kernels", "cpu_buffers.h"),
            cuda_source("lif_step.cuh"), cuda_source("neuron_template.cuh"),
            *(cuda_source(f"neurons/{p.name}") for p in sorted(neurons.glob("*.cuh")))]


def _compile(directory: Path) -> None:
    from torch.utils import cpp_extension

    (directory / "neurons").mkdir(exist_ok=True)
    for src in template_sources():
        dest = directory / ("neurons" if src.parent.name == "neurons" else "") / src.name
        shutil.copyfile(src, dest)
    cpp_extension.load(
        name=_module_name(directory), sources=[str(directory / "neuron_cpu.cpp")],
        extra_include_paths=[str(directory)], extra_cflags=_cflags(), extra_ldflags=["-fopenmp"],
        build_directory=str(directory), verbose=False,
    )


def _build():
    global _directory
    key = [src.read_bytes() for src in template_sources()] + toolchain_key()
    _directory = cached_build("neuron_cpu", key, _compile, "the fused CPU neuron-template kernels")
    return import_built(_directory)


def build_error() -> str:
    """Why the extension could not be built ("" when it was, or was not tried yet)."""
    return _error or ""


def build_directory() -> str:
    """Where the loaded extension lives (empty before :func:`load_extension`)."""
    return "" if _directory is None else str(_directory)


def load_extension():
    """Build (first call) or load the cached extension; ``RuntimeError`` (remembered) if impossible."""
    global _ext, _error
    with _lock:
        if _ext is None and _error is None:
            try:
                _ext = _build()
            except Exception as exc:  # missing source, compiler or ninja; compile or load failure
                _error = f"backend 'cpu': the fused neuron extension is unavailable: {type(exc).__name__}: {exc}"
        if _ext is None:
            raise RuntimeError(_error)
        return _ext


def available(warn: bool = False) -> bool:
    """True if the extension builds/loads; with ``warn``, a failure is warned about once."""
    global _warned
    try:
        load_extension()
        return True
    except RuntimeError as exc:
        if warn and not _warned:
            _warned = True
            warnings.warn(f"spiking: neurons fall back to the torch reference: {exc}", RuntimeWarning, stacklevel=3)
        return False


def empty_cache() -> int:
    """Free the extension's recycled output buffers; returns the bytes freed."""
    return int(_ext.empty_cache()) if _ext is not None else 0


def has_kernel(name: str) -> bool:
    """Whether the template registry of the built extension has a dynamics definition ``name``."""
    return name in list(load_extension().names())


def _dynamics_id(name: str) -> int:
    names = list(load_extension().names())
    if name not in names:
        raise RuntimeError(f"neuron {name!r} has no fused CPU kernel (the template registry has {names})")
    return names.index(name)


def per_neuron(values: tuple, x: torch.Tensor) -> torch.Tensor:
    """Stack of tensors broadcastable to one step of ``x``: ``[K, 1]`` when every one is a single
    value (no per-neuron copy is made), else ``[K, *x.shape[1:]]``."""
    values = [v.to(x.dtype) for v in values]
    if all(v.numel() == 1 for v in values):
        return torch.stack([v.reshape(()) for v in values]).reshape(len(values), 1)
    return torch.stack([v.expand(x.shape[1:]) for v in values]).contiguous()


class FusedNeuron(torch.autograd.Function):
    """``(out, state_last) = f(x, state0, params)`` by the fused loops; differentiable in all three."""

    @staticmethod
    def forward(ctx, x, state0, params, dyn_id, cfg, save, check_x):
        ext = load_extension()
        out, state, saved, nonfinite = ext.forward(dyn_id, x, state0, params, cfg.hard, cfg.decay_input, save)
        if check_x and nonfinite:
            raise nonfinite_x_error()
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, saved, params)
        ctx.dyn_id, ctx.cfg, ctx.state_shape = dyn_id, cfg, state0.shape
        return out, state.view(state.shape[0], *x.shape[1:])

    @staticmethod
    def backward(ctx, g_out, g_state):
        x, saved, params = ctx.saved_tensors
        cfg = ctx.cfg
        gx, gs0, gp = load_extension().backward(
            ctx.dyn_id, x, saved, params, None if g_out is None else g_out.contiguous(),
            None if g_state is None else g_state.contiguous(), cfg.hard, cfg.detach_reset, cfg.decay_input,
            cfg.surrogate.kernel_id, cfg.surrogate.param, bool(ctx.needs_input_grad[2]),
        )
        gs0 = gs0.sum(1, keepdim=True) if ctx.state_shape[1:].numel() == 1 else gs0
        if ctx.needs_input_grad[2]:
            gp = gp.sum(1, keepdim=True) if params[0].numel() == 1 else gp.view(params.shape)
        return gx, gs0.view(ctx.state_shape), gp if ctx.needs_input_grad[2] else None, None, None, None, None


def run(spec, x: torch.Tensor, state0: tuple, params: tuple, cfg, check_x: bool = True):
    """Fused CPU run of ``spec`` with the arguments and results of ``multistep.run_torch``;
    ``check_x``: ``ValueError`` when x holds NaN/inf (probed during the kernel's pass over x)."""
    if x.device.type != "cpu":
        raise RuntimeError(f"backend 'cpu' needs CPU tensors, but x is on {x.device}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"x: the fused neurons support float32 and float64, got {x.dtype}")
    st, pr = per_neuron(state0, x), per_neuron(params, x)
    out, state = FusedNeuron.apply(x.contiguous(), st, pr, _dynamics_id(spec.name), cfg, needs_grad(x, st, pr),
                                   check_x)
    return out, tuple(state.unbind(0))
