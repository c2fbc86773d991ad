"""Sequential code selection with single-trial binary Hebbian learning (the store loop).

Query b of a batch sees the weights written by queries 0..b-1 (learning is sequential even when
the call is batched). With ``horizontal=True`` the H signal of query b comes from the code of
query b-1 (or ``prev0`` for b = 0); a gated-out query (``ok[b]`` False) gets code -1 and breaks
the chain. Learning writes, for each winner i and active afferent j (inputs, the previous code's
units, top-down units): W_ji = 1. Writing stops (critical period) once the number of set input
weights reaches ``cap``.

``select_sequence_torch`` is the reference (any device); the C loop in ``_csa_cpu.c`` has the same
semantics and is what :class:`~spiking.memory.Macrocolumn` uses on CPU.
"""
from __future__ import annotations

import torch

from .csa import CSAParams, code_units, combine, normalise, select


def select_sequence_torch(x, wu, wh, prev0, top, wd, ok, params: CSAParams, r, learn, n_set, cap, Q, K):
    """Reference loop on dense 0/1 tensors (float64, mutated in place when learning).

    x ``[B, N]``, wu ``[QK, N]``, wh ``[QK, QK]`` or None, prev0 ``[Q]`` or None, top ``[B, n_top]`` or
    None, wd ``[QK, n_top]`` or None, ok ``[B]`` bool, r ``[B, Q]`` or None.
    Returns (codes ``[B, Q]``, G ``[B]``, written ``[B]`` bool, n_set)."""
    B = x.shape[0]
    dev = x.device
    codes = torch.full((B, Q), -1, dtype=torch.int64, device=dev)
    G = torch.zeros(B, dtype=torch.float64, device=dev)
    written = torch.zeros(B, dtype=torch.bool, device=dev)
    prev = prev0 if wh is not None else None
    nx = x.sum(1)
    nd = top.sum(1) if top is not None else None
    for b in range(B):
        if not bool(ok[b]):
            prev = None
            continue
        U = normalise((wu @ x[b]).unsqueeze(0), nx[b:b + 1])
        H = None
        if prev is not None:
            pu = code_units(prev, K)
            H = wh[:, pu].sum(1, keepdim=True).t() / Q
        D = None
        if top is not None and bool(nd[b] > 0):
            D = normalise((wd @ top[b]).unsqueeze(0), nd[b:b + 1])
        V = combine(U.view(1, Q, K), None if H is None else H.view(1, Q, K),
                    None if D is None else D.view(1, Q, K), params)
        code, g = select(V, K, params, None if r is None else r[b:b + 1])
        codes[b], G[b] = code[0], g[0]
        if learn and (cap < 0 or n_set < cap):
            units = code_units(code[0], K)
            n_set += int(((wu[units] == 0) & (x[b] > 0)).sum())
            wu[units] = torch.maximum(wu[units], x[b])
            if H is not None:
                onehot = torch.zeros(Q * K, dtype=wh.dtype, device=dev)
                onehot[code_units(prev, K)] = 1
                wh[units] = torch.maximum(wh[units], onehot)
            if D is not None:
                wd[units] = torch.maximum(wd[units], top[b])
            written[b] = True
        if wh is not None:
            prev = code[0]
    return codes, G, written, n_set
