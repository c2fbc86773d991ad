"""Classification by stored codes: k nearest neighbours under code overlap.

overlap(a, b) = Σ_q [a_q == b_q] (summed over all MACs of a hierarchy), computed as a dot product
of one-hot codes (on CPU: popcount of AND of the bit-packed one-hots, C fast path); the k largest
overlaps vote for their labels, weighted by overlap.
"""
from __future__ import annotations

import torch

from . import cpu as _cpu
from .csa import pack_bits
from .hierarchy import one_hot_codes

__all__ = ["code_overlap", "knn_votes", "knn_predict"]


def code_overlap(a: torch.Tensor, b: torch.Tensor, K: int) -> torch.Tensor:
    """Pairwise overlaps of codes ``a [A, ..., Q]`` and ``b [B, ..., Q]`` -> ``[A, B]``."""
    return one_hot_codes(a, K) @ one_hot_codes(b, K).t()


def knn_votes(train_codes: torch.Tensor, train_y: torch.Tensor, test_codes: torch.Tensor, K: int,
              k: int = 5, n_classes: int | None = None, chunk: int = 2048) -> torch.Tensor:
    """Overlap-weighted votes ``[n_test, n_classes]`` of the k most overlapping training codes."""
    if len(train_codes) != len(train_y):
        raise ValueError(f"train_codes has {len(train_codes)} rows but train_y has {len(train_y)}")
    if not 1 <= k <= len(train_codes):
        raise ValueError(f"k must lie in [1, {len(train_codes)}], got {k}")
    n_classes = int(train_y.max()) + 1 if n_classes is None else n_classes
    packed = train_codes.device.type == "cpu" and _cpu.available()
    A = one_hot_codes(train_codes, K)
    if packed:                                  # popcount of AND on bit-packed one-hots (C)
        A = pack_bits(A > 0)
    votes = []
    for i in range(0, len(test_codes), chunk):
        T = one_hot_codes(test_codes[i:i + chunk], K)
        ov = _cpu.and_popcount(pack_bits(T > 0), A).float() if packed else T @ A.t()
        top = ov.topk(k, 1)
        votes.append(torch.zeros(ov.shape[0], n_classes, device=ov.device)
                     .scatter_add_(1, train_y.to(ov.device)[top.indices], top.values))
    return torch.cat(votes)


def knn_predict(train_codes: torch.Tensor, train_y: torch.Tensor, test_codes: torch.Tensor, K: int,
                k: int = 5, n_classes: int | None = None, chunk: int = 2048) -> torch.Tensor:
    """Labels of ``test_codes``: argmax of :func:`knn_votes`."""
    return knn_votes(train_codes, train_y, test_codes, K, k, n_classes, chunk).argmax(1)
