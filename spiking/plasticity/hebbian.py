"""Pure functions of HLOP: the Oja-subspace Hebbian update and the orthogonal projection.

Notation: ``H [M, N]`` holds M lateral neurons (rows) over an N-dim layer input; inputs are
rows ``X [B, N]``. The lateral response and reconstruction are ``Y = X Hᵀ`` and ``X̂ = Y H``.

Oja's subspace rule (Hebbian ``YᵀX`` plus anti-Hebbian ``−YᵀY H``)::

    ΔH = (Yᵀ X − Yᵀ Y H) / B = Yᵀ (X − X̂) / B

Only the rows of the current task learn; earlier rows are frozen but still take part in ``Y`` and
``X̂``, so the new rows learn the part of the input the old rows do not explain.

Projection (weight gradient of a layer ``z = W x``)::

    x⊥ = x − Hᵀ (H x)            ΔW ∝ δᵀ x⊥

``P = I − HᵀH`` is one fixed linear map, so ``δᵀ (X P) = (δᵀ X) P`` holds exactly for any ``H``
(orthonormal or not): :func:`project_input` and :func:`project_weight_grad` give the same weight
gradient, and the cheaper one is chosen by :func:`cheaper_form`.
"""

from __future__ import annotations

import time
from typing import Optional

import torch

__all__ = [
    "oja_delta",
    "quantise_lateral",
    "hebbian_update",
    "project_input",
    "project_weight_grad",
    "projected_weight_grad",
    "cheaper_form",
    "orthogonal_rows",
    "subspace_energy",
    "principal_angles",
]


def _check_h_x(H: torch.Tensor, X: torch.Tensor) -> None:
    if H.dim() != 2:
        raise ValueError(f"H must be [M, N], got shape {tuple(H.shape)}")
    if X.shape[-1] != H.shape[1]:
        raise ValueError(f"X has {X.shape[-1]} features but H has N = {H.shape[1]} columns")


def quantise_lateral(y: torch.Tensor, scale: float = 20.0, timesteps: float = 40.0) -> torch.Tensor:
    """Lateral spiking neurons: ``y_q = round(clamp(y, ±s) / s · Ts) / Ts · s``.

    The response a spiking lateral neuron conveys with ``Ts`` time steps and range ``s``.
    """
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    if timesteps <= 0:
        raise ValueError(f"timesteps must be > 0, got {timesteps!r}")
    return torch.round(y.clamp(-scale, scale) / scale * timesteps) / timesteps * scale


def oja_delta(
    H_new: torch.Tensor,
    X: torch.Tensor,
    X_hat_old: Optional[torch.Tensor] = None,
    quantise: Optional[tuple[float, float]] = None,
) -> torch.Tensor:
    """Oja-subspace step of the learning rows: ``ΔH_new = Y_newᵀ (X − X̂_old − Y_new H_new) / B``.

    ``X_hat_old = Y_old H_old`` is the (fixed) reconstruction by the frozen rows; ``None`` = no
    frozen rows. ``quantise=(s, Ts)`` quantises ``Y_new`` (lateral spiking neurons); the caller
    quantises ``Y_old`` before forming ``X_hat_old``. Returns ``[M_new, N]``.
    """
    _check_h_x(H_new, X)
    Y = X @ H_new.t()
    if quantise is not None:
        Y = quantise_lateral(Y, *quantise)
    resid = X - Y @ H_new
    if X_hat_old is not None:
        resid = resid - X_hat_old
    return (Y.t() @ resid) / X.shape[0]


def hebbian_update(
    H: torch.Tensor,
    momentum_buf: torch.Tensor,
    X: torch.Tensor,
    n_frozen: int,
    lr: float,
    iters: int = 5,
    clip: float = 10.0,
    momentum: float = 0.9,
    quantise: Optional[tuple[float, float]] = None,
) -> None:
    """``iters`` Oja-subspace iterations on one batch, in place on rows ``n_frozen:`` of ``H``.

    Per iteration: ``ΔH = clip(Yᵀ(X − X̂)/B, ±clip)``; ``m ← momentum·m + (1 − momentum)·ΔH``;
    ``H ← H + lr·m``. Rows ``:n_frozen`` (earlier tasks) and their momentum stay unchanged.
    ``X`` may have any leading shape; it is flattened to rows ``[*, N]``.
    """
    _check_h_x(H, X)
    if momentum_buf.shape != H.shape:
        raise ValueError(f"momentum_buf must have the shape of H {tuple(H.shape)}, got {tuple(momentum_buf.shape)}")
    if not 0 <= n_frozen <= H.shape[0]:
        raise ValueError(f"n_frozen must be in [0, {H.shape[0]}], got {n_frozen}")
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if n_frozen == H.shape[0]:
        return
    X = X.reshape(-1, H.shape[1]).to(H.dtype)
    with torch.no_grad():
        X_hat_old = None
        if n_frozen > 0:
            Y_old = X @ H[:n_frozen].t()
            if quantise is not None:
                Y_old = quantise_lateral(Y_old, *quantise)
            X_hat_old = Y_old @ H[:n_frozen]
        H_new, m_new = H[n_frozen:], momentum_buf[n_frozen:]
        for _ in range(iters):
            delta = oja_delta(H_new, X, X_hat_old, quantise).clamp_(-clip, clip)
            m_new.mul_(momentum).add_(delta, alpha=1.0 - momentum)
            H_new.add_(m_new, alpha=lr)


def project_input(x: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """``x⊥ = x − Hᵀ(H x)`` for rows ``x [..., N]`` (no orthonormalisation of ``H``)."""
    _check_h_x(H, x)
    return x - (x @ H.t()) @ H


def project_weight_grad(grad: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """``G (I − HᵀH) = G − (G Hᵀ) H`` with ``G`` viewed as ``[out, N]`` (conv: ``N = C·kh·kw``).

    Equal to ``δᵀ x⊥`` for ``G = δᵀ x`` (Linear) or ``G = Σ δᵀ patches`` (Conv2d), exactly.
    """
    G = grad.reshape(grad.shape[0], -1)
    _check_h_x(H, G)
    return (G - (G @ H.t()) @ H).reshape(grad.shape)


def projected_weight_grad(delta: torch.Tensor, x: torch.Tensor, H: Optional[torch.Tensor],
                          stats: Optional[dict] = None) -> torch.Tensor:
    """Linear weight gradient from the saved input, projected: ``δᵀ x⊥`` (``H=None``: ``δᵀ x``).

    ``delta [*, out]`` and ``x [*, N]`` are flattened to rows. The form (input or gradient) with
    fewer multiply-adds is used; both are the same linear map (see the module docstring).
    ``stats``: a dict whose ``"projection_s"`` accumulates the time spent projecting.
    """
    d = delta.reshape(-1, delta.shape[-1])
    xs = x.reshape(-1, x.shape[-1])
    if H is None or H.shape[0] == 0:
        return d.t() @ xs
    t0 = time.perf_counter()
    if cheaper_form(d.shape[0], d.shape[1]) == "input":
        xs = project_input(xs, H)
        spent = time.perf_counter() - t0
        g = d.t() @ xs
    else:
        g = d.t() @ xs
        t0 = time.perf_counter()
        g = project_weight_grad(g, H)
        spent = time.perf_counter() - t0
    if stats is not None:
        stats["projection_s"] = stats.get("projection_s", 0.0) + spent
    return g


def cheaper_form(rows: int, out_features: int) -> str:
    """``"input"`` when projecting ``rows`` inputs costs less than projecting the ``[out, N]`` gradient.

    Cost of the input form ``2·rows·N·M``, of the gradient form ``2·out·N·M`` (plus the shared ``δᵀ x``).
    """
    return "input" if rows <= out_features else "grad"


def orthogonal_rows(k: int, n: int, generator: Optional[torch.Generator] = None, dtype=torch.float32) -> torch.Tensor:
    """``k`` orthonormal rows in ``R^n`` (``k <= n``) from the QR of a Gaussian matrix (sign-fixed)."""
    if not 0 < k <= n:
        raise ValueError(f"k must be in [1, n={n}], got {k}")
    A = torch.randn(n, k, generator=generator, dtype=torch.float64)
    Q, R = torch.linalg.qr(A)
    Q = Q * torch.sign(torch.diagonal(R)).unsqueeze(0)
    return Q.t().contiguous().to(dtype)


def _orthonormal_basis(H: torch.Tensor, rtol: float = 1e-6) -> torch.Tensor:
    """Orthonormal basis ``[r, N]`` of the row space of ``H`` (SVD, rank by relative tolerance)."""
    if H.shape[0] == 0:
        return H.new_zeros(0, H.shape[1])
    U, S, Vh = torch.linalg.svd(H.double(), full_matrices=False)
    r = int((S > rtol * S[0]).sum()) if S.numel() and S[0] > 0 else 0
    return Vh[:r]


def subspace_energy(X: torch.Tensor, H: torch.Tensor) -> float:
    """Share of the input energy inside the row space of ``H``: ``‖X Q‖² / ‖X‖²`` (``Q`` orthonormal basis)."""
    _check_h_x(H, X)
    X = X.reshape(-1, H.shape[1]).double()
    total = float((X * X).sum())
    if total == 0.0:
        raise ValueError("X has zero energy; subspace energy is undefined")
    Q = _orthonormal_basis(H)
    return float(((X @ Q.t()) ** 2).sum()) / total


def principal_angles(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Principal angles (radians, ascending) between the row spaces of ``A [k, N]`` and ``B [l, N]``."""
    if A.dim() != 2 or B.dim() != 2 or A.shape[1] != B.shape[1]:
        raise ValueError(f"A and B must be [k, N] and [l, N], got {tuple(A.shape)} and {tuple(B.shape)}")
    Qa, Qb = _orthonormal_basis(A), _orthonormal_basis(B)
    if Qa.shape[0] == 0 or Qb.shape[0] == 0:
        raise ValueError("A and B must each span at least one direction")
    s = torch.linalg.svdvals(Qa @ Qb.t()).clamp(-1.0, 1.0)  # descending cosines
    return torch.arccos(s)
