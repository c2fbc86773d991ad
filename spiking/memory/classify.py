"""Classification by stored codes: k nearest neighbours under code overlap.

overlap(a, b) = Σ_q [a_q == b_q] (summed over all MACs of a hierarchy) = |units(a) ∩ units(b)|,
computed on unit sets (one-hot codes, or unions of them, e.g. over translations): on CPU popcount
of AND of the bit-packed sets (C fast path), else a dot product; the k largest overlaps vote for
their labels, weighted by overlap.
"""
from __future__ import annotations

import torch

from . import cpu as _cpu
from .csa import pack_bits
from .hierarchy import one_hot_codes

__all__ = ["code_overlap", "overlap_votes", "knn_votes", "knn_predict"]


def code_overlap(a: torch.Tensor, b: torch.Tensor, K: int) -> torch.Tensor:
    """Pairwise overlaps of codes ``a [A, ..., Q]`` and ``b [B, ..., Q]`` -> ``[A, B]``."""
    return one_hot_codes(a, K) @ one_hot_codes(b, K).t()


def overlap_votes(train_units: torch.Tensor, train_y: torch.Tensor, test_units: torch.Tensor, k: int = 5,
                  n_classes: int | None = None, chunk: int = 2048) -> torch.Tensor:
    """Overlap-weighted votes ``[n_test, n_classes]`` of the k training unit sets (bool ``[n, D]``)
    with the largest |test ∩ train|."""
    if len(train_units) != len(train_y):
        raise ValueError(f"train set has {len(train_units)} rows but train_y has {len(train_y)}")
    if train_units.shape[1:] != test_units.shape[1:]:
        raise ValueError(f"train units {tuple(train_units.shape[1:])} and test units "
                         f"{tuple(test_units.shape[1:])} differ in size")
    if not 1 <= k <= len(train_units):
        raise ValueError(f"k must lie in [1, {len(train_units)}], got {k}")
    n_classes = int(train_y.max()) + 1 if n_classes is None else n_classes
    packed = train_units.device.type == "cpu" and _cpu.available()
    A = pack_bits(train_units.bool()) if packed else train_units.float()
    votes = []
    for i in range(0, len(test_units), chunk):
        T = test_units[i:i + chunk]
        ov = _cpu.and_popcount(pack_bits(T.bool()), A).float() if packed else T.float() @ A.t()
        top = ov.topk(k, 1)
        votes.append(torch.zeros(ov.shape[0], n_classes, device=ov.device)
                     .scatter_add_(1, train_y.to(ov.device)[top.indices], top.values))
    return torch.cat(votes)


def knn_votes(train_codes: torch.Tensor, train_y: torch.Tensor, test_codes: torch.Tensor, K: int,
              k: int = 5, n_classes: int | None = None, chunk: int = 2048) -> torch.Tensor:
    """Overlap-weighted votes ``[n_test, n_classes]`` of the k most overlapping training codes."""
    if len(train_codes) != len(train_y):
        raise ValueError(f"train_codes has {len(train_codes)} rows but train_y has {len(train_y)}")
    return overlap_votes(one_hot_codes(train_codes, K, torch.bool), train_y, one_hot_codes(test_codes, K, torch.bool),
                         k, n_classes, chunk)


def knn_predict(train_codes: torch.Tensor, train_y: torch.Tensor, test_codes: torch.Tensor, K: int,
                k: int = 5, n_classes: int | None = None, chunk: int = 2048) -> torch.Tensor:
    """Labels of ``test_codes``: argmax of :func:`knn_votes`."""
    return knn_votes(train_codes, train_y, test_codes, K, k, n_classes, chunk).argmax(1)
