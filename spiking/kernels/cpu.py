"""The fused CPU extension (built from the neuron template) and the fused CPU LIF on top of it.

One C++ extension holds the multi-step forward and backward loops (``spiking/kernels/neuron_cpu_loops.h``)
of every dynamics definition of ``cuda/neuron_template.cuh`` (LIF, IF, PLIF, ALIF, CubaLIF, LI),
instantiated per dtype in ``neuron_cpu_float.cpp`` / ``neuron_cpu_double.cpp`` (compiled in parallel)
behind the entry points of ``neuron_cpu.cpp``: each thread walks its range of neurons step by step
(state in a per-thread buffer, every step a long contiguous run of the ``[T, N]`` tensors), so there
is no per-step autograd graph and no per-step tensor. This module builds and loads it (:func:`load_extension`, shared with
:mod:`.neuron_cpu`) and wraps LIF's definition (``cuda/neurons/lif.cuh``) as
:func:`lif_multistep_cpu`: torch custom ops for ``torch.compile`` and an eager
``autograd.Function`` (:mod:`._common`), fp16/bf16 storage with torch's per-operation rounding, a
learnable threshold, the membrane sequence (``return_v``). Forward saves only ``h_seq`` (H_t) and
only when a gradient is needed; backward is one reverse-time sweep::

    gV_t = dL/dV_t + gH_{t+1}(1 - 1/tau);  gH_t = gS_t σ'(H_t - V_th) + gV_t dV_t/dH_t;  gX_t = gH_t dH/dX

Why a C++ extension (measured, bench/results/lif_throughput_cpu.json): the fused loop is
memory-bound, does one pass over x/spikes/h per direction, and runs the exact step code that the
CUDA kernel runs (one source for both, which is what lets the host tests prove the GPU step).
A numpy in-place loop has no backward and needs a temporary per operation and step; numba is not a dependency;
torch.compile of the per-step loop was not pursued (the graph and its compile grow with T).

Build: ``torch.utils.cpp_extension.load`` (ninja, ``-O3 -ffp-contract=off -fno-trapping-math
-fno-math-errno -fopenmp``, plus ``-mavx2`` when the CPU has it) into the build cache of
:mod:`spiking.build` (``$SPIKING_CACHE``, keyed by sources, compiler, flags, torch and CPU
instruction set; the sources are copied into the keyed directory, so no checkout path enters the
build and a second checkout or venv reuses it). ``spiking build`` (run by ``install.sh``) builds it
ahead of time (~1-2 min on 2 cores); a first use that must compile says so on stderr with its
duration; later processes import the cached library directly.
``backend="cpu"`` raises ``RuntimeError`` with the build's real error when it is impossible;
:func:`available` reports it without raising, and ``backend="auto"`` then warns once
(``RuntimeWarning``, naming that error) and uses the torch reference.

Output buffers of 256 KiB and more (from 2 MiB on 2 MiB-aligned with transparent huge pages
advised) are recycled through a small exact-size cache (at most 64 blocks, oldest evicted first;
``$SPIKING_CPU_CACHE_MB``, default 1024, 0 disables; :func:`empty_cache` frees it): fresh pages from
the OS (a fault per 4 KiB plus zeroing) otherwise cost about as much as the LIF pass itself.
"""

from __future__ import annotations

from typing import Optional, Union

import torch

from ..native_sources import cuda_source, native_source
from ._common import check_v0, constant, make_config, make_ops, needs_grad, nonfinite_x_error, run_fused
from .extension import CachedExtension

__all__ = ["lif_multistep_cpu", "available", "load_extension", "build_directory", "empty_cache", "SUPPORTED_DTYPES"]

SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
def _sources() -> list:
    """The translation units, the loops and buffer headers, the step header, the template and every
    dynamics definition (``neurons/*.cuh`` keep their folder)."""
    neurons = cuda_source("neuron_template.cuh").parent / "neurons"
    own = ("neuron_cpu.cpp", "neuron_cpu_float.cpp", "neuron_cpu_double.cpp", "neuron_cpu_loops.h", "cpu_buffers.h")
    return [*(native_source("spiking.kernels", name) for name in own), cuda_source("lif_step.cuh"),
            cuda_source("neuron_template.cuh"),
            *((cuda_source(f"neurons/{p.name}"), f"neurons/{p.name}") for p in sorted(neurons.glob("*.cuh")))]


_EXT = CachedExtension("neuron_cpu", _sources, "the fused CPU C++ extension", units=3, error_prefix="backend 'cpu': ")
_names: Optional[list] = None


def build_key() -> list:
    """What the built extension depends on: source contents (not paths) and the toolchain."""
    return _EXT.key()


def load_extension():
    """Load the cached extension (building it on first use); ``RuntimeError`` with the reason if impossible."""
    return _EXT.load()


def build_directory() -> str:
    """Where the loaded extension lives (empty before :func:`load_extension`)."""
    return _EXT.directory()


def empty_cache() -> int:
    """Free the output buffers the extension keeps for reuse (see cpu_buffers.h); returns bytes freed."""
    return int(_EXT.loaded().empty_cache()) if _EXT.loaded() is not None else 0


def available() -> tuple[bool, str]:
    """``(True, "")`` if the extension builds/loads, else ``(False, reason)``; never raises."""
    try:
        load_extension()
        return True, ""
    except RuntimeError as exc:
        return False, str(exc)


# ---------------------------------------------------------------------------------------------
# kernels behind the torch custom ops (spiking::lif_cpu_forward / spiking::lif_cpu_backward)


def dynamics_names() -> list[str]:
    """The template registry of the built extension (``NRN_FOR_EACH``), in dispatch order."""
    global _names
    if _names is None:
        _names = list(load_extension().names())
    return _names


def dynamics_id(name: str) -> int:
    """Dispatch index of the dynamics definition ``name`` in the built extension (``RuntimeError``
    when its template registry has no such definition)."""
    names = dynamics_names()
    if name not in names:
        raise RuntimeError(f"neuron {name!r} has no fused CPU kernel (the template registry has {names})")
    return names.index(name)


def lif_params(x: torch.Tensor, tau: float, v_threshold: float, v_reset: float) -> torch.Tensor:
    """LIF's parameters ``(v_th, tau, v_reset)`` as the ``[3, 1]`` tensor the template loops read,
    in the compute dtype of ``x`` (float32 for fp16/bf16 storage, see ``cuda/neurons/lif.cuh``)."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return constant((v_threshold, tau, v_reset), dtype, x.device)


def _forward_impl(x, v0, vth, v_threshold, tau, v_reset, hard, decay_input, save_h, return_v, check_x):
    ext = load_extension()
    v_th = float(vth.item()) if vth is not None else v_threshold
    state0 = v0 if v0 is not None else constant((v_reset if hard else 0.0,), x.dtype, x.device)
    s, v, saved, x_nonfinite = ext.forward(dynamics_id("lif"), x, state0, lif_params(x, tau, v_th, v_reset), hard,
                                           decay_input, save_h, return_v)  # v: V_T, or [V_1..V_T] with return_v
    if check_x and x_nonfinite:
        raise nonfinite_x_error()
    return s, v, saved


def _backward_impl(h_seq, grad_s, grad_v, vth, v_threshold, tau, v_reset, hard, decay_input, detach_reset,
                   sg_id, sg_param, return_v, need_v0, need_vth):
    ext = load_extension()
    v_th = float(vth.item()) if vth is not None else v_threshold
    gx, gv0, gp = ext.backward(
        dynamics_id("lif"), None, h_seq, lif_params(h_seq, tau, v_th, v_reset), grad_s,
        grad_v if return_v else None, None if return_v else grad_v, hard, detach_reset, decay_input, sg_id,
        sg_param, need_vth,
    )
    return gx, gv0, gp[0].sum() if need_vth else gp  # grad_v0 is used only when need_v0


def fused(ext, dyn_id: int, x: torch.Tensor, state0: torch.Tensor, params: torch.Tensor, hard: bool,
          decay_input: bool, detach_reset: bool, sg_id: int, sg_param: float, return_seq: bool, check_x: bool,
          keep_x: bool):
    """``(out, state)`` of the extension's loops for contiguous tensors (shapes as ``ext.forward``'s).

    When a gradient is recorded, through the extension's C++ autograd node (``ext.apply``: no Python
    in the backward); otherwise the forward loop alone, saving nothing. ``check_x``: ``ValueError``
    when the loop read NaN/inf in x."""
    if needs_grad(x, state0, params):
        return ext.apply(dyn_id, x, state0, params, hard, decay_input, detach_reset, sg_id, sg_param, return_seq,
                         check_x, keep_x)
    out, state, _, nonfinite = ext.forward(dyn_id, x, state0, params, hard, decay_input, False, return_seq)
    if check_x and nonfinite:
        raise nonfinite_x_error()
    return out, state


def _apply(x, v0, vth, cfg):
    """The differentiable eager call: LIF's definition through the extension's C++ autograd node
    (:func:`fused`); a tensor threshold enters as the first parameter, so its gradient
    (summed per neuron in the loop, then over neurons) flows back to it through autograd."""
    state0 = v0 if v0 is not None else constant((cfg.v_reset if cfg.hard else 0.0,), x.dtype, x.device)
    params = lif_params(x, cfg.tau, cfg.v_threshold, cfg.v_reset)
    if vth is not None:
        params = torch.cat([vth.reshape(1, 1).to(params.dtype), params[1:]])
    return fused(load_extension(), dynamics_id("lif"), x, state0, params, cfg.hard, cfg.decay_input,
                 cfg.detach_reset, cfg.sg_id, cfg.sg_param, cfg.return_v, cfg.check_x, False)


_ops = make_ops("cpu", _forward_impl, _backward_impl, eager=_apply)
_forward_op = _ops.op  # the registered custom op (opcheck, torch.compile)


def lif_multistep_cpu(
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
    """Fused CPU LIF with the arguments and results of ``lif_multistep_torch``.

    Returns ``(spikes, v_last)`` or, with ``return_v``, ``(spikes, v_seq)``; differentiable in
    ``x``, ``v0`` and a tensor ``v_threshold``. ``RuntimeError`` for non-CPU tensors or when the
    extension cannot be built; ``ValueError("x contains NaN or inf")`` when ``check_finite`` and
    the kernel read a non-finite x (the check rides on the kernel's own pass over x).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.device.type != "cpu":
        raise RuntimeError(f"backend 'cpu' needs CPU tensors, but x is on {x.device}")
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"x: backend 'cpu' supports dtypes {SUPPORTED_DTYPES}, got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"x must have shape [T, batch, ...], got {tuple(x.shape)}")
    check_v0(x, v0)
    cfg, vth = make_config(tau, v_threshold, v_reset, decay_input, detach_reset, surrogate, return_v, check_finite)
    if vth is not None and vth.device.type != "cpu":
        raise RuntimeError(f"backend 'cpu' needs a CPU v_threshold tensor, got one on {vth.device}")
    return run_fused(_ops, x, v0, cfg, vth)
