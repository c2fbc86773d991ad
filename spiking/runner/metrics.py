"""Continual-learning metrics: pure functions of the logged evaluations (definitions: docs/metrics.md).

Notation (0-based in code, 1-based in the formulas): R[i, j] = accuracy on task j after training
task i, b[j] = accuracy on task j before any training, T tasks. Accuracies are fractions in [0, 1].

    ACC        = (1/T) Σ_i R[T, i]
    BWT        = (1/(T−1)) Σ_{i<T} (R[T, i] − R[i, i])
    FWT        = (1/(T−1)) Σ_{i≥2} (R[i−1, i] − b_i)
    forgetting = mean_{j<T} f_j,  f_j = max_{l<T} R[l, j] − R[T, j]          (Chaudhry 2018)
    avg_incremental_acc = (1/T) Σ_k ACC_k,  ACC_k = (1/k) Σ_{i≤k} R[k, i]

Continual evaluation (De Lange et al. 2023). ``curves[i]`` is the list of (iteration n, A(E_i, f_n))
of task i in iteration order; ``task_end[i]`` = t_i, the last iteration of task i; t is the
current iteration and k the current task (1-based); by default k = T and t = t_T (end of run).

    min-ACC_k  = (1/(k−1)) Σ_{i<k} min_{t_i < n ≤ t} A(E_i, f_n)
    WC-ACC_t   = (1/k) A(E_k, f_t) + (1 − 1/k) min-ACC_k
    WF^w       = mean_i max(0, max_{m<n, n−m<w} A_m − A_n)     (evaluations m, n of task i inside a
                                                                window of w evaluations)
    WP^w       = mean_i max(0, max_{m<n, n−m<w} A_n − A_m)

Undefined values (BWT, FWT, forgetting with T = 1; min-ACC with k = 1; WF/WP with no task
evaluated twice) are NaN; curves lacking an evaluation min-ACC / WC-ACC need raise ValueError.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

NAN = float("nan")


def _matrix(R) -> np.ndarray:
    R = np.asarray(R, dtype=np.float64)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] < 1:
        raise ValueError(f"R must be a non-empty square matrix [T, T], got shape {R.shape}")
    return R


def acc(R) -> float:
    """ACC = (1/T) Σ_i R[T, i]."""
    R = _matrix(R)
    return float(R[-1].mean())


def bwt(R) -> float:
    """BWT = (1/(T−1)) Σ_{i<T} (R[T, i] − R[i, i]); NaN for T = 1."""
    R = _matrix(R)
    T = R.shape[0]
    if T < 2:
        return NAN
    return float((R[-1, :-1] - np.diag(R)[:-1]).sum() / (T - 1))


def fwt(R, b) -> float:
    """FWT = (1/(T−1)) Σ_{i≥2} (R[i−1, i] − b_i); NaN for T = 1."""
    R = _matrix(R)
    b = np.asarray(b, dtype=np.float64)
    T = R.shape[0]
    if b.shape != (T,):
        raise ValueError(f"b must have shape ({T},), got {b.shape}")
    if T < 2:
        return NAN
    return float(sum(R[i - 1, i] - b[i] for i in range(1, T)) / (T - 1))


def forgetting(R) -> float:
    """Chaudhry max-based forgetting: mean_{j<T} (max_{j≤l<T} R[l, j] − R[T, j]); NaN for T = 1.

    Only rows after task j was learned enter the max (entries of unseen tasks may be NaN)."""
    R = _matrix(R)
    T = R.shape[0]
    if T < 2:
        return NAN
    return float(np.mean([R[j:-1, j].max() - R[-1, j] for j in range(T - 1)]))


def avg_incremental_acc(R) -> float:
    """(1/T) Σ_k ACC_k with ACC_k = mean_{i≤k} R[k, i]."""
    R = _matrix(R)
    T = R.shape[0]
    return float(np.mean([R[k, : k + 1].mean() for k in range(T)]))


Curves = Mapping[int, Sequence[tuple[int, float]]]


def _check_curves(curves: Curves):
    for i, c in curves.items():
        steps = [n for n, _ in c]
        if any(b < a for a, b in zip(steps, steps[1:])):
            raise ValueError(f"curves[{i}] must be in iteration order")


def _default_k_t(task_end, k, t):
    k = len(task_end) if k is None else k
    if not 1 <= k <= len(task_end):
        raise ValueError(f"k must be in 1..{len(task_end)}, got {k}")
    return k, task_end[k - 1] if t is None else t


def min_acc(curves: Curves, task_end: Sequence[int], k: int | None = None,
            t: int | None = None) -> float:
    """min-ACC_k = (1/(k−1)) Σ_{i<k} min_{t_i < n ≤ t} A(E_i, f_n).

    k defaults to the number of tasks and t to t_k (the end of task k); NaN when k = 1."""
    _check_curves(curves)
    k, t = _default_k_t(task_end, k, t)
    mins = []
    for i in range(k - 1):
        after = [a for n, a in curves.get(i, ()) if task_end[i] < n <= t]
        if not after:
            raise ValueError(f"no evaluation of task {i} in ({task_end[i]}, {t}]")
        mins.append(min(after))
    return float(np.mean(mins)) if mins else NAN


def wc_acc(curves: Curves, task_end: Sequence[int], k: int | None = None,
           t: int | None = None) -> float:
    """WC-ACC_t = (1/k) A(E_k, f_t) + (1 − 1/k) min-ACC_k (defaults as in ``min_acc``)."""
    _check_curves(curves)
    k, t = _default_k_t(task_end, k, t)
    current = [a for n, a in curves.get(k - 1, ()) if n <= t]
    if not current:
        raise ValueError(f"no evaluation of task {k - 1} at or before iteration {t}")
    if k == 1:
        return float(current[-1])
    return float(current[-1] / k + (1 - 1 / k) * min_acc(curves, task_end, k, t))


def _windowed_extreme(a: np.ndarray, w: int, sign: float) -> float:
    """max(0, max_{m<n, n−m<w} sign·(a_m − a_n)) for one curve."""
    best = 0.0
    for d in range(1, min(w, len(a))):
        best = max(best, float((sign * (a[:-d] - a[d:])).max()))
    return best


def windowed_forgetting(curves: Curves, w: int) -> float:
    """WF^w: per task the largest drop inside any window of w evaluations, averaged over tasks."""
    return _windowed(curves, w, 1.0, "windowed_forgetting")


def windowed_plasticity(curves: Curves, w: int) -> float:
    """WP^w: per task the largest rise inside any window of w evaluations, averaged over tasks."""
    return _windowed(curves, w, -1.0, "windowed_plasticity")


def _windowed(curves: Curves, w: int, sign: float, who: str) -> float:
    if not isinstance(w, int) or w < 2:
        raise ValueError(f"{who}: window w must be an int >= 2, got {w!r}")
    vals = [_windowed_extreme(np.asarray([a for _, a in c], dtype=np.float64), w, sign)
            for c in curves.values() if len(c) >= 2]
    return float(np.mean(vals)) if vals else NAN


def summarize(R, b, curves: Curves | None = None, task_end: Sequence[int] | None = None) -> dict:
    """All metrics in one dict (the keys results.json uses); NaN becomes None (JSON null).

    Without continual evaluation (``curves`` None or empty) the after-task evaluations are the
    curves: task j is evaluated at "iteration" i after task i for i >= j (the rows of R), t_i = i,
    so min-ACC, WC-ACC and WF/WP fall back to task-boundary granularity."""
    R = _matrix(R)
    T = R.shape[0]
    if not curves:
        curves = {j: [(i, float(R[i, j])) for i in range(j, T)] for j in range(T)}
        task_end = list(range(T))
    elif task_end is None:
        raise ValueError("task_end is required with curves")
    out = {
        "ACC": acc(R), "BWT": bwt(R), "FWT": fwt(R, b), "forgetting": forgetting(R),
        "avg_incremental_acc": avg_incremental_acc(R),
        "min_ACC": min_acc(curves, task_end), "WC_ACC": wc_acc(curves, task_end),
    }
    for w in (10, 100):
        out[f"WF{w}"] = windowed_forgetting(curves, w)
        out[f"WP{w}"] = windowed_plasticity(curves, w)
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}
