"""The fixed projection of one layer while a task trains: ``P = I − HᵀH`` of the frozen rows.

``x⊥ = x P`` (input form) or ``G P`` (weight-gradient form, ``G = δᵀx``) give the same weight
gradient ``δᵀ x⊥``; :func:`~spiking.plasticity.hebbian.cheaper_form` picks one. Each is applied
factored, ``x − (x Hᵀ) H`` (``4·rows·n·N`` multiply-adds), or with the dense ``P`` built once per
task (``2·rows·N²``), whichever is cheaper: dense when ``2n > N``. Both are the same linear map.

``orthonormal=True`` replaces ``H`` by an orthonormal basis ``Q`` of its row space (SVD), so
``P = I − QᵀQ`` is the exact orthogonal projector onto the complement of the span. The paper
projects with the Oja rows themselves (only approximately orthonormal: ``I − HᵀH`` scales a
direction of singular value ``s`` by ``1 − s²`` instead of 0, a leak).
"""
from __future__ import annotations

import time
from typing import Optional

import torch

from .hebbian import basis_residual, cheaper_form, dense_projector, orthonormal_basis, project_input, project_weight_grad

__all__ = ["Projector"]


class Projector:
    """``P = I − HᵀH`` for ``H [n, N]`` (copied; ``orthonormal``: the basis of its row space).

    ``dense``: ``None`` chooses the cheaper form (dense iff ``2n > N``), ``True``/``False`` force it.
    """

    def __init__(self, H: torch.Tensor, orthonormal: bool = False, dense: Optional[bool] = None):
        if H.dim() != 2 or H.shape[0] == 0:
            raise ValueError(f"H must be [n >= 1, N], got shape {tuple(H.shape)}")
        self.orthonormal = bool(orthonormal)
        self.H = orthonormal_basis(H).to(H.dtype) if orthonormal else H.detach().clone()
        n, N = self.H.shape
        self.P = dense_projector(self.H) if (2 * n > N if dense is None else dense) else None
        self.Ht = self.H.t()  # kept: no transpose op per projection

    @property
    def shape(self) -> torch.Size:
        """Shape of the basis ``[n, N]``."""
        return self.H.shape

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """``x⊥ = x − Hᵀ(H x)`` for rows ``x [..., N]``."""
        if self.P is not None:
            return x @ self.P
        if x.dim() == 2:  # x − (x Hᵀ) H with the kept transpose: two ops
            return basis_residual(x, self.H, None, self.Ht)
        return project_input(x, self.H)

    def grad(self, G: torch.Tensor) -> torch.Tensor:
        """``G (I − HᵀH)`` with ``G`` viewed as ``[out, N]`` (conv: ``N = C·kh·kw``)."""
        if self.P is None:
            if G.dim() == 2:  # G − (G Hᵀ) H with the kept transpose: two ops
                return torch.addmm(G, torch.mm(G, self.Ht), self.H, alpha=-1.0)
            return project_weight_grad(G, self.H)
        return (G.reshape(G.shape[0], -1) @ self.P).reshape(G.shape)

    def weight_grad(self, delta: torch.Tensor, x: torch.Tensor, stats: Optional[dict] = None,
                    keep_input: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(δᵀ x⊥, x⊥ or None)`` for ``delta [*, out]``, ``x [*, N]`` flattened to rows.

        The input or gradient form is taken by cost; ``keep_input`` forces the input form and
        returns ``x⊥`` (for a Hebbian rule that needs it). ``stats["projection_s"]`` accumulates
        the time spent projecting.
        """
        d = delta if delta.dim() == 2 else delta.reshape(-1, delta.shape[-1])
        xs = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
        t0 = time.perf_counter()
        if keep_input or cheaper_form(d.shape[0], d.shape[1]) == "input":
            xs = self.input(xs)
            spent = time.perf_counter() - t0
            g, kept = d.t() @ xs, (xs if keep_input else None)
        else:
            g = d.t() @ xs
            t0 = time.perf_counter()
            g, kept = self.grad(g), None
            spent = time.perf_counter() - t0
        if stats is not None:
            stats["projection_s"] = stats.get("projection_s", 0.0) + spent
        return g, kept
