"""Pure functions of Sparsey's Code Selection Algorithm (CSA), batched over queries.

One macrocolumn (MAC) has Q competitive modules (CMs) of K binary units; a code is one winner per CM.
For a batch of B queries every function works on tensors shaped ``[B, Q, K]`` (unit signals) or
``[B]`` / ``[B, Q]`` and runs on whatever device its inputs live on (CPU or CUDA).

    u_i = Σ_j x_j W_ji                      (input sums; likewise h from the code at t-1, d top-down)
    U_i = u_i / |x|                          (normalise; H = h / |prev|, D = d / |top|)
    V_i = U_i^λU · H_i^λH · D_i^λD          (absent signals contribute a factor 1)
    G   = (1/Q) Σ_q max_{i∈CM_q} V_i        (familiarity)
    η   = 1 + max(0, (G - G⁻)/(1 - G⁻))^γ · χ · K
    μ_i = max(η · σ(s (V_i - c)), 1)        (the floor 1 makes a novel input's choice uniform)
    ρ_i = μ_i / Σ_{k∈CM} μ_k
    winner_q = draw from ρ (learning) or argmax_k V (retrieval)

Draws consume one uniform number per (query, CM): winner = #{k : cumsum(ρ)_k <= r}, so the same
uniforms give the same codes on every backend (the C and CUDA kernels use the same rule).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, asdict

import numpy as np

import torch

__all__ = [
    "CSAParams", "pack_bits", "unpack_bits", "input_sums", "normalise", "combine", "familiarity",
    "expansivity", "mu", "rho", "draw", "select", "code_units", "gate",
]


@dataclass(frozen=True)
class CSAParams:
    """Parameters named as in the Sparsey notes. G⁻, γ, χ are the notes' typical values; the sigmoid
    is tuned (s = 60, c = 0.9 instead of the demo's s ≈ 4–7, c ≈ 0.5): with the demo's values a
    stored input re-presented while learning re-draws many CMs (we measured 50-80 % kept for s=10,
    c=0.5), because competitors with V ≈ 0.6–0.8 get μ close to the winner's. With s=60, c=0.9 a
    re-presented input keeps >= 98.6 % of its CMs up to half saturation (N=784, Q=32, K=16, a=40;
    tests/test_memory_macrocolumn.py), novel inputs (V_max ≲ 0.8) stay near the floor μ = 1 and get
    fresh random codes, and inputs with V ≳ 0.85 still reuse most of the stored code. The floor
    makes ~1 % of CMs re-draw even at G = 1: ρ_max = μ_max / (μ_max + (K-1)) with μ_max ≈ χK."""
    lambda_u: float = 1.0
    lambda_h: float = 1.0
    lambda_d: float = 1.0
    g_minus: float = 0.1       # G⁻: familiarity below which η = 1 (uniform choice)
    gamma: float = 2.0         # γ
    chi: float = 100.0         # χ
    s: float = 60.0            # sigmoid slope (much steeper than the demo's 4–7: see tuning note)
    c: float = 0.9             # sigmoid inflection
    pi_minus: int = 1          # π⁻: minimum number of active inputs for the MAC to participate
    pi_plus: int | None = None  # π⁺: maximum (None: no limit)

    def __post_init__(self):
        for name in ("lambda_u", "lambda_h", "lambda_d", "gamma", "chi", "s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.g_minus < 1.0:
            raise ValueError(f"g_minus must lie in [0, 1), got {self.g_minus}")
        if self.pi_minus < 0 or (self.pi_plus is not None and self.pi_plus < self.pi_minus):
            raise ValueError(f"need 0 <= pi_minus <= pi_plus, got {self.pi_minus}, {self.pi_plus}")

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- bit packing (64 inputs per word)

def pack_bits(x: torch.Tensor) -> torch.Tensor:
    """Pack the last axis of a boolean/0-1 tensor into int64 words: bit j%64 of word j//64 holds x_j."""
    n = x.shape[-1]
    nw = (n + 63) // 64
    if x.device.type == "cpu" and sys.byteorder == "little":      # numpy packbits: ~10x faster
        b = np.packbits(x.bool().numpy(), axis=-1, bitorder="little")
        pad = nw * 8 - b.shape[-1]
        if pad:
            b = np.concatenate([b, np.zeros((*b.shape[:-1], pad), np.uint8)], -1)
        return torch.from_numpy(np.ascontiguousarray(b).view(np.int64))
    xb = x.to(torch.int64)
    if nw * 64 != n:
        xb = torch.nn.functional.pad(xb, (0, nw * 64 - n))
    xb = xb.reshape(*x.shape[:-1], nw, 64)
    shifts = torch.arange(64, device=x.device, dtype=torch.int64)
    return (xb << shifts).sum(-1)          # distinct powers of two: the int64 sum wraps exactly


def unpack_bits(words: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: ``[..., nw]`` int64 -> ``[..., n]`` bool."""
    if words.device.type == "cpu" and sys.byteorder == "little":  # numpy unpackbits: no int64 temporaries
        w = np.ascontiguousarray(words.numpy()).view(np.uint8)
        return torch.from_numpy(np.unpackbits(w, axis=-1, count=n, bitorder="little").view(np.bool_))
    shifts = torch.arange(64, device=words.device, dtype=torch.int64)
    bits = (words.unsqueeze(-1) >> shifts) & 1
    return bits.reshape(*words.shape[:-1], -1)[..., :n].bool()


# ---------------------------------------------------------------- CSA steps

def gate(n_active: torch.Tensor, params: CSAParams) -> torch.Tensor:
    """Participation mask: π⁻ <= |x| <= π⁺ (and |x| > 0)."""
    ok = (n_active >= max(params.pi_minus, 1))
    if params.pi_plus is not None:
        ok &= n_active <= params.pi_plus
    return ok


def input_sums(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """u = x W for x ``[B, N]`` (0/1, float) and the binary view W ``[N, QK]`` (float): ``[B, QK]``."""
    return x @ w


def normalise(u: torch.Tensor, n_active: torch.Tensor) -> torch.Tensor:
    """U = u / |x| (0 where |x| = 0), ``u [B, ...]``, ``n_active [B]``."""
    n = n_active.to(u.dtype).clamp_min(1).reshape(-1, *([1] * (u.dim() - 1)))
    return u / n


def combine(U: torch.Tensor, H: torch.Tensor | None, D: torch.Tensor | None, params: CSAParams) -> torch.Tensor:
    """V = U^λU · H^λH · D^λD (a missing signal is a factor 1)."""
    V = U.pow(params.lambda_u) if params.lambda_u != 1 else U
    if H is not None:
        V = V * (H.pow(params.lambda_h) if params.lambda_h != 1 else H)
    if D is not None:
        V = V * (D.pow(params.lambda_d) if params.lambda_d != 1 else D)
    return V


def familiarity(V: torch.Tensor) -> torch.Tensor:
    """G = mean over CMs of the max V in each CM: ``[B, Q, K] -> [B]``."""
    return V.amax(-1).mean(-1)


def expansivity(G: torch.Tensor, K: int, params: CSAParams) -> torch.Tensor:
    """η = 1 + max(0, (G - G⁻)/(1 - G⁻))^γ · χ · K."""
    z = ((G - params.g_minus) / (1.0 - params.g_minus)).clamp_min(0.0)
    return 1.0 + z.pow(params.gamma) * params.chi * K


def mu(V: torch.Tensor, eta: torch.Tensor, params: CSAParams) -> torch.Tensor:
    """μ = max(η σ(s (V - c)), 1) with η ``[B]`` broadcast over ``[B, Q, K]``."""
    return (eta.reshape(-1, 1, 1) * torch.sigmoid(params.s * (V - params.c))).clamp_min(1.0)


def rho(m: torch.Tensor) -> torch.Tensor:
    """ρ = μ / Σ_CM μ (per-CM distribution)."""
    return m / m.sum(-1, keepdim=True)


def draw(p: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw per CM: winner = #{k : cumsum(ρ)_k <= r·Σρ}, ``r [B, Q]`` uniform in [0, 1)."""
    cdf = p.cumsum(-1)
    thr = (r * cdf[..., -1]).unsqueeze(-1)
    return (cdf <= thr).sum(-1).clamp_max(p.shape[-1] - 1)


def select(V: torch.Tensor, K: int, params: CSAParams, r: torch.Tensor | None = None):
    """Steps 4–8 for ``V [B, Q, K]``: returns (winners ``[B, Q]`` int64, G ``[B]``).

    With ``r`` (uniforms ``[B, Q]``) winners are drawn from ρ (learning); without, argmax V (retrieval)."""
    G = familiarity(V)
    if r is None:
        return V.argmax(-1), G
    m = mu(V, expansivity(G, K, params), params)
    return draw(m, r), G


def code_units(code: torch.Tensor, K: int) -> torch.Tensor:
    """Flat unit indices q·K + winner_q of codes ``[..., Q]``."""
    Q = code.shape[-1]
    return code + torch.arange(Q, device=code.device, dtype=code.dtype) * K
