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
gradient, and the cheaper one is chosen by :func:`cheaper_form`. Either can also use the dense
``P`` (:func:`dense_projector`), built once per task: see :class:`~spiking.plasticity.projector.Projector`.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from ..kernels import oja_iterations as _native

__all__ = [
    "oja_delta",
    "quantise_lateral",
    "oja_iterations",
    "oja_iterations_many",
    "oja_iterations_reference",
    "OjaBank",
    "basis_residual",
    "frozen_residual",
    "hebbian_update",
    "project_input",
    "project_weight_grad",
    "dense_projector",
    "cheaper_form",
    "orthogonal_rows",
    "orthonormal_basis",
    "subspace_energy",
    "principal_angles",
    "principal_rows",
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


class OjaBank(NamedTuple):
    """One bank's arguments of :func:`oja_iterations_many`.

    ``H_new [M, N]`` learning rows and ``m_new`` their momentum (updated in place, e.g. views of
    the bank's rows); ``X [B, N]`` the rows; ``X_res`` the frozen rows' residual ``X − X̂_old``
    (``None``: :func:`basis_residual` of ``basis``, or ``X`` when ``basis`` is ``None`` too);
    ``lr`` the rate; ``H_new_t`` a kept ``H_newᵀ`` view (``None``: made when needed).
    """

    H_new: torch.Tensor
    m_new: torch.Tensor
    X: torch.Tensor
    X_res: Optional[torch.Tensor]
    lr: float
    H_new_t: Optional[torch.Tensor] = None
    basis: Optional[torch.Tensor] = None


def oja_iterations(
    H_new: torch.Tensor,
    m_new: torch.Tensor,
    X: torch.Tensor,
    X_res: torch.Tensor,
    lr: float,
    iters: int = 5,
    clip: float = 10.0,
    momentum: float = 0.9,
    quantise: Optional[tuple[float, float]] = None,
) -> None:
    """``iters`` in-place Oja steps of the learning rows given the frozen rows' residual ``X_res = X − X̂_old``.

    Per iteration: ``Y = X H_newᵀ``; ``ΔH = clip(Yᵀ (X_res − Y H_new) / B, ±clip)``;
    ``m ← momentum·m + (1 − momentum)·ΔH``; ``H_new ← H_new + lr·m``. Each iteration costs
    ``3·2·B·M_new·N`` multiply-adds: the frozen rows enter only through ``X_res`` (fixed per batch).
    """
    oja_iterations_many([OjaBank(H_new, m_new, X, X_res, lr)], iters, clip, momentum, quantise)


def _groups(banks: list, key) -> dict:
    out: dict = {}
    for b in banks:
        out.setdefault(key(b), []).append(b)
    return out


def oja_iterations_many(banks: list, iters: int = 5, clip: float = 10.0, momentum: float = 0.9,
                        quantise: Optional[tuple[float, float]] = None) -> None:
    """:func:`oja_iterations` of several banks (:class:`OjaBank`, or tuples in its field order) at once.

    The native op (:mod:`spiking.kernels.oja_iterations`, one dispatched op for all banks and
    iterations, CPU and CUDA) runs them; :func:`oja_iterations_reference` (the same arithmetic
    in Python) only when it cannot: no compiler, or a tensor that autograd must track.
    """
    if banks and _native.available() and not (
            torch.is_grad_enabled() and any(t is not None and t.requires_grad for b in banks for t in b[:4])):
        _native.oja_iterations(banks, iters, clip, momentum, quantise)
    else:
        oja_iterations_reference(banks, iters, clip, momentum, quantise)


def oja_iterations_reference(banks: list, iters: int = 5, clip: float = 10.0, momentum: float = 0.9,
                             quantise: Optional[tuple[float, float]] = None) -> None:
    """:func:`oja_iterations_many` in Python: the reference the native op is held to.

    The products run per bank (``ΔH = Yᵀ R / B`` as one ``addmm`` with ``α = 1/B``), the
    element-wise clip and momentum as one multi-tensor (``torch._foreach_*``) op each for all
    banks, the row update ``H_new += lr·m`` as one per distinct rate.
    """
    banks = [OjaBank(*b) for b in banks]
    banks = [b._replace(X_res=_residual(b, quantise), H_new_t=b.H_new.t() if b.H_new_t is None else b.H_new_t)
             for b in banks]
    by_lr = _groups(banks, lambda b: b.lr)
    for _ in range(iters):
        Ds = []
        for H_new, m_new, X, X_res, _lr, H_new_t, _basis in banks:
            Y = torch.mm(X, H_new_t)
            if quantise is not None:
                Y = quantise_lateral(Y, *quantise)
            R = torch.addmm(X_res, Y, H_new, alpha=-1.0)  # X − X̂_old − Y H_new
            Ds.append(torch.addmm(_zero(R), Y.t(), R, beta=0.0, alpha=1.0 / X.shape[0]))  # ΔH
        torch._foreach_clamp_min_(Ds, -clip)
        torch._foreach_clamp_max_(Ds, clip)
        ms = [b[1] for b in banks]
        torch._foreach_mul_(ms, momentum)
        torch._foreach_add_(ms, Ds, alpha=1.0 - momentum)
        for lr, group in by_lr.items():
            torch._foreach_add_([b[0] for b in group], [b[1] for b in group], alpha=lr)


def _residual(bank: OjaBank, quantise: Optional[tuple[float, float]]) -> torch.Tensor:
    if bank.X_res is not None:
        return bank.X_res
    return bank.X if bank.basis is None else basis_residual(bank.X, bank.basis, quantise)


def _zero(like: torch.Tensor) -> torch.Tensor:
    """A kept 0-dim zero of ``like``'s dtype and device: the ignored ``input`` of ``addmm(β = 0)``."""
    key = (like.dtype, like.device)
    zero = _ZEROS.get(key)
    if zero is None:
        with torch.inference_mode(False), torch.no_grad():
            zero = _ZEROS[key] = torch.zeros((), dtype=like.dtype, device=like.device)
    return zero


_ZEROS: dict = {}


def frozen_residual(X: torch.Tensor, H_old: torch.Tensor,
                    quantise: Optional[tuple[float, float]] = None) -> torch.Tensor:
    """``X − q(X H_oldᵀ) H_old``: the part of the rows the frozen rows do not reconstruct.

    Without quantisation this is the projected input ``x⊥`` (:func:`project_input`), so the
    projection of a layer whose Hebbian input is its gradient input can hand it over.
    """
    _check_h_x(H_old, X)
    if quantise is None:
        return project_input(X, H_old)
    return X - quantise_lateral(X @ H_old.t(), *quantise) @ H_old


def basis_residual(X: torch.Tensor, basis: torch.Tensor, quantise: Optional[tuple[float, float]] = None,
                   basis_t: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``X − q(X Pᵀ) P`` of rows ``X [B, N]`` for a frozen basis ``P [n, N]`` (``basis_t``: a kept ``Pᵀ``).

    Unquantised as one ``addmm`` (``x − (x Pᵀ) P``, :meth:`~spiking.plasticity.projector.Projector.input`'s
    factored form), quantised as :func:`frozen_residual`'s; the native Oja op computes the same.
    """
    Z = torch.mm(X, basis.t() if basis_t is None else basis_t)
    if quantise is None:
        return torch.addmm(X, Z, basis, alpha=-1.0)
    return X - quantise_lateral(Z, *quantise) @ basis


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
    X_res: Optional[torch.Tensor] = None,
) -> None:
    """``iters`` Oja-subspace iterations on one batch, in place on rows ``n_frozen:`` of ``H``.

    Per iteration: ``ΔH = clip(Yᵀ(X − X̂)/B, ±clip)``; ``m ← momentum·m + (1 − momentum)·ΔH``;
    ``H ← H + lr·m``. Rows ``:n_frozen`` (earlier tasks) and their momentum stay unchanged.
    ``X`` may have any leading shape; it is flattened to rows ``[*, N]``. ``X_res`` (optional) is
    the frozen rows' residual :func:`frozen_residual` when the caller already has it.
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
    with torch.no_grad():
        args = hebbian_args(H, momentum_buf, X, n_frozen, lr, quantise, X_res)
        oja_iterations_many([args], iters, clip, momentum, quantise)


def hebbian_args(H: torch.Tensor, momentum_buf: torch.Tensor, X: torch.Tensor, n_frozen: int, lr: float,
                 quantise: Optional[tuple[float, float]] = None, X_res: Optional[torch.Tensor] = None,
                 learning: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None,
                 basis: Optional[torch.Tensor] = None) -> OjaBank:
    """The :class:`OjaBank` of rows ``n_frozen:`` of ``H``: rows ``[*, N]`` in ``H``'s dtype, the
    frozen rows' residual (given, left to the iterations through ``basis``, or computed here by
    :func:`frozen_residual`) and the learning rows' views (``learning``: ``(H[n_frozen:],
    m[n_frozen:], H[n_frozen:]ᵀ)`` if the caller keeps them)."""
    if X.dim() != 2:
        X = X.reshape(-1, H.shape[1])
    if X.dtype != H.dtype:
        X = X.to(H.dtype)
    if X_res is None and basis is None and n_frozen:
        X_res = frozen_residual(X, H[:n_frozen], quantise)
    elif X_res is not None and (X_res.shape != X.shape or X_res.dtype != H.dtype):
        X_res = X_res.reshape(X.shape).to(H.dtype)
    if learning is None:
        learning = (H[n_frozen:], momentum_buf[n_frozen:], H[n_frozen:].t())
    return OjaBank(learning[0], learning[1], X, X_res, lr, learning[2], basis)


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


def dense_projector(H: torch.Tensor) -> torch.Tensor:
    """``P = I − HᵀH [N, N]`` (built in float64), so that ``x⊥ = x P`` and ``G (I − HᵀH) = G P``."""
    Hd = H.double()
    return (torch.eye(H.shape[1], dtype=torch.float64, device=H.device) - Hd.t() @ Hd).to(H.dtype)


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


def orthonormal_basis(H: torch.Tensor, rtol: float = 1e-6) -> torch.Tensor:
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
    Q = orthonormal_basis(H)
    return float(((X @ Q.t()) ** 2).sum()) / total


def principal_rows(C: torch.Tensor, k: int, basis: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Top-``k`` eigenvectors ``[k, N]`` of ``(I − QᵀQ) C (I − QᵀQ)``.

    ``C = XᵀX`` is the inputs' second moment, ``Q = basis`` the frozen rows (orthonormal).

    The exact principal subspace of the inputs' part outside the frozen rows: the fixed point Oja's
    subspace rule approaches (an oracle for the Hebbian rows, see ``HLOPStrategy(subspace="pca")``).
    """
    if C.dim() != 2 or C.shape[0] != C.shape[1]:
        raise ValueError(f"C must be a square [N, N] second-moment matrix, got {tuple(C.shape)}")
    n = C.shape[0]
    C = C.double()
    if not bool(torch.isfinite(C).all()):
        raise ValueError("C has NaN or infinite entries")
    if basis is not None and basis.shape[0]:
        if basis.dim() != 2 or basis.shape[1] != n:
            raise ValueError(f"basis must be [m, {n}], got {tuple(basis.shape)}")
        P = torch.eye(n, dtype=torch.float64, device=C.device) - basis.double().t() @ basis.double()
        C = P @ C @ P
    free = n - (0 if basis is None else basis.shape[0])
    if not 0 < k <= free:
        raise ValueError(f"k must be in [1, {free}] (N minus the frozen rows), got {k}")
    _, V = torch.linalg.eigh((C + C.t()) / 2)        # ascending eigenvalues
    return V[:, -k:].flip(1).t().contiguous()


def principal_angles(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Principal angles (radians, ascending) between the row spaces of ``A [k, N]`` and ``B [l, N]``."""
    if A.dim() != 2 or B.dim() != 2 or A.shape[1] != B.shape[1]:
        raise ValueError(f"A and B must be [k, N] and [l, N], got {tuple(A.shape)} and {tuple(B.shape)}")
    Qa, Qb = orthonormal_basis(A), orthonormal_basis(B)
    if Qa.shape[0] == 0 or Qb.shape[0] == 0:
        raise ValueError("A and B must each span at least one direction")
    s = torch.linalg.svdvals(Qa @ Qb.t()).clamp(-1.0, 1.0)  # descending cosines
    return torch.arccos(s)
