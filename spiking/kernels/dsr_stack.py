"""A stack of DSR LIF layers in one native pass on the CPU: spike counts and weighted drives out.

The unfused DSR network (:class:`~spiking.plasticity.networks.HLOPMLP`, ``method="dsr"``) writes
for every hidden layer a ``[T, B, N]`` drive and a ``[T, B, N]`` spike tensor and reads each back
(the LIF, the event-driven product, the rate). What its rate graph needs is per layer ``[B, N]``:
the spike count ``Σ_t S_t`` and, for layers after the first, the weighted drive ``Σ_t ŵ_t X_t``.
``spiking/kernels/dsr_stack_cpu.cpp`` runs the layers one after the other for blocks of samples
(a layer after the first one L2-sized panel of ``Wᵀ``'s columns at a time, from lists of the
previous layer's active neurons) and returns only those, with the float operations of the unfused
path (same spikes):

    X¹ given (constant);  X^l_t = scale_l · Σ_{k: S^{l−1}_t[k]=1} Wᵀ_l[k, :] + c   (l > 1)
    H = (w − w/τ') + X,  S = Θ(H − 1),  w ← H − S,  w₀ = 1 − α

Used on CPU float32 tensors when the C++ extension builds; :func:`dsr_stack_reference` (the
unfused ops) otherwise and as the tests' reference.
"""

from __future__ import annotations

import torch

from ..native_sources import native_source
from .extension import CachedExtension
from .spike_matmul import spike_matmul

__all__ = ["dsr_stack", "dsr_stack_reference", "fused_available"]

_EXT = CachedExtension("dsr_stack_cpu", lambda: [native_source("spiking.kernels", "dsr_stack_cpu.cpp")],
                       "the fused CPU DSR-stack extension")


def extension() -> CachedExtension:
    """The cached C++ extension (for ``spiking build`` and diagnostics)."""
    return _EXT


def _check(x1, weights_t, scales, wn):
    if x1.dim() != 2:
        raise ValueError(f"x1 must be [B, N1], got shape {tuple(x1.shape)}")
    if len(scales) != len(weights_t):
        raise ValueError(f"one scale per weight needed, got {len(scales)} scales and {len(weights_t)} weights")
    n = x1.shape[1]
    for i, w in enumerate(weights_t):
        if w.dim() != 2 or w.shape[0] != n:
            raise ValueError(f"weights_t[{i}] must be [{n}, n] (the transposed weight), got {tuple(w.shape)}")
        n = w.shape[1]
    if wn.dim() != 1 or wn.numel() < 1:
        raise ValueError(f"wn must be the [T] step weights, got shape {tuple(wn.shape)}")
    if not x1.is_floating_point() or any(w.dtype != x1.dtype for w in weights_t):
        raise TypeError(f"x1 and weights_t must share one floating dtype, got {x1.dtype} and "
                        f"{[str(w.dtype) for w in weights_t]}")


def fused_available(x1: torch.Tensor) -> bool:
    """Whether :func:`dsr_stack` runs the C++ kernel for ``x1`` (CPU float32, extension built)."""
    return x1.device.type == "cpu" and x1.dtype == torch.float32 and _EXT.available()


def dsr_stack_reference(x1, weights_t, scales, wn, tau: float, w0: float, shift: float, weighted: bool = True):
    """:func:`dsr_stack` from the unfused ops: ``X¹`` repeated over T, the fused LIF per layer,
    the event-driven product between layers."""
    from ..neuron.functional import lif_multistep  # noqa: PLC0415

    T, B = wn.numel(), x1.shape[0]
    counts, whats = [], []
    drive = x1.repeat(T, 1, 1)
    with torch.no_grad():
        for i in range(len(weights_t) + 1):
            w0_t = torch.full(drive.shape[1:], w0, dtype=drive.dtype, device=drive.device)
            s, _ = lif_multistep(drive, w0_t, tau=tau, v_threshold=1.0, v_reset=None, decay_input=False,
                                 check_finite=False)
            counts.append(s.sum(0))
            if i == len(weights_t):
                break
            drive = spike_matmul(s.view(T * B, -1), weights_t[i], scales[i], shift).view(T, B, -1)
            if weighted:
                whats.append(torch.mm(wn.view(1, T), drive.view(T, -1)).view(B, -1))
    return counts, whats


def dsr_stack(x1: torch.Tensor, weights_t: list, scales: torch.Tensor, wn: torch.Tensor, tau: float, w0: float,
              shift: float, weighted: bool = True):
    """Spike counts ``[Σ_t S¹_t, …]`` (each ``[B, N_l]``) and weighted drives ``[Σ_t ŵ_t X²_t, …]``
    of a DSR stack driven by the constant ``x1 = X¹ [B, N1]``; no autograd.

    ``weights_t[l]``: ``Wᵀ`` of the product into layer ``l + 2`` (``[N_{l+1}, N_{l+2}]``,
    contiguous), ``scales [L − 1]`` their scales (``V_th/Δt`` of the spiking layer times the
    driven layer's ``k``), ``wn [T]`` the normalised DSR step weights, ``tau = 1/(1 − β)``,
    ``w0 = 1 − α`` and ``shift = c`` (:func:`~spiking.neuron.dsr.drive_coefficients`).
    ``weighted=False``: no weighted drives (an empty list; inference reads only the counts).
    ``ValueError`` when the fused kernel reads a NaN or inf in ``x1`` (the unfused path does not check).
    """
    _check(x1, weights_t, scales, wn)
    if not (fused_available(x1) and all(w.device.type == "cpu" and w.dtype == torch.float32 for w in weights_t)):
        return dsr_stack_reference(x1, weights_t, scales, wn, tau, w0, shift, weighted)
    with torch.no_grad():
        return _EXT.load().dsr_stack(x1.contiguous(), [w.contiguous() for w in weights_t],
                                     scales.detach().reshape(-1).float().contiguous(), wn.contiguous(),
                                     float(tau), float(w0), float(shift), bool(weighted))
