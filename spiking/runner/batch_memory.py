"""Evaluation batch sized by a CUDA device's memory (used by :func:`.evaluation.eval_batch_size`).

An inference forward's peak memory is affine in the batch size B:

    bytes(B) = fixed + B · per_sample

Two probe forwards (B = 8 and 40, under ``torch.inference_mode``) measure bytes(B) as the peak
that torch's caching allocator handed out above what was allocated before, which gives ``fixed``
and ``per_sample`` (cached per model, input shape and parameter count). An unmeasured forward at
the larger probe runs first, so that what a first call allocates once and keeps (a math
library's workspace, lazily built buffers) is not counted as growing with B: on an H200 such an
allocation inside the B = 40 probe once made per_sample 20 times too large. The batch is then

    B = ⌊(fraction · available − fixed) / per_sample⌋, clipped to [1, n],

with ``available`` = the device's free memory plus what torch's cache holds without handing it
out, read at every call (another process may have taken memory since). ``fraction`` (0.5) leaves
room for the training state and for whatever else runs on the device.

Probing resets the device's peak-memory counter; :func:`peak_allocated` is
``torch.cuda.max_memory_allocated`` with the peaks from before each reset kept.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable

import torch

__all__ = ["MEMORY_FRACTION", "PROBES", "batch_for_memory", "affine_working_set", "memory_batch_size",
           "peak_allocated"]

MEMORY_FRACTION = 0.5
PROBES = (8, 40)

_cache: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()
_peaks_before_reset: dict[int, int] = {}


def _check(n, fraction) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int number of samples, got {n!r}")
    if not 0.0 < fraction <= 1.0:  # also refuses NaN
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")


def batch_for_memory(available: int, fixed: float, per_sample: float, n: int,
                     fraction: float = MEMORY_FRACTION) -> int:
    """``⌊(fraction · available − fixed) / per_sample⌋`` clipped to ``[1, n]`` (``n`` when a sample
    needs no memory of its own)."""
    _check(n, fraction)
    if per_sample <= 0:
        return n
    return int(max(1, min(n, (fraction * available - fixed) // per_sample)))


def affine_working_set(peak_bytes: Callable[[int], int], probes: tuple[int, int] = PROBES) -> tuple[float, float]:
    """``(fixed, per_sample)`` of the line through ``peak_bytes(b)`` at the two probe batch sizes,
    after one unmeasured call at the larger one (one-time allocations out of the line). Where the
    peak does not grow with the batch (allocator rounding): ``(0, larger peak / smaller probe)``,
    an overestimate rather than a free sample."""
    small, large = probes
    if not 0 < small < large:
        raise ValueError(f"probes must be two batch sizes 0 < small < large, got {probes!r}")
    peak_bytes(large)  # warm-up: what the first call allocates once stays out of both probes
    lo, hi = peak_bytes(small), peak_bytes(large)
    per_sample = (hi - lo) / (large - small)
    if per_sample <= 0:
        return 0.0, max(lo, hi) / small
    return max(0.0, lo - small * per_sample), per_sample


def _device_index(device) -> int:
    d = torch.device(device)
    return d.index if d.index is not None else torch.cuda.current_device()


def _probe_peak(model: torch.nn.Module, sample: torch.Tensor, batch: int) -> int:
    """Peak bytes allocated above the current ones during ``model`` on ``batch`` copies of ``sample``."""
    dev = _device_index(sample.device)
    torch.cuda.synchronize(dev)
    _peaks_before_reset[dev] = peak_allocated(dev)
    before = torch.cuda.memory_allocated(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    with torch.inference_mode():
        model(sample.expand(batch, *sample.shape[1:]).contiguous())
    torch.cuda.synchronize(dev)
    return torch.cuda.max_memory_allocated(dev) - before


def peak_allocated(device=None) -> int:
    """``torch.cuda.max_memory_allocated(device)``, counting the peaks from before a probe reset it."""
    dev = _device_index("cuda" if device is None else device)
    return max(torch.cuda.max_memory_allocated(dev), _peaks_before_reset.get(dev, 0))


def memory_batch_size(model: torch.nn.Module, sample: torch.Tensor, n: int,
                      fraction: float = MEMORY_FRACTION) -> int:
    """The evaluation batch of ``model`` for inputs shaped like ``sample`` (one sample, ``[1, ...]``,
    on the CUDA device) that fills ``fraction`` of the device memory available now; at most ``n``.
    Runs the probe forwards in eval mode on the first call per model, input shape and parameter
    count (the caller keeps them out of spike counts)."""
    _check(n, fraction)
    if sample.device.type != "cuda":
        raise ValueError(f"sample must be on a CUDA device, got {sample.device}")
    if sample.dim() < 1 or sample.shape[0] != 1:
        raise ValueError(f"sample must hold one sample, shape [1, ...], got {tuple(sample.shape)}")
    key = (str(sample.device), tuple(sample.shape[1:]), sample.dtype, sum(p.numel() for p in model.parameters()))
    per_model = _cache.setdefault(model, {})
    if key not in per_model:
        was_training = model.training
        model.eval()
        try:
            per_model[key] = affine_working_set(lambda b: _probe_peak(model, sample, b))
        finally:
            model.train(was_training)
    fixed, per_sample = per_model[key]
    dev = _device_index(sample.device)
    free, _ = torch.cuda.mem_get_info(dev)
    cached = torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
    return batch_for_memory(free + cached, fixed, per_sample, n, fraction)
