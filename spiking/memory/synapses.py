"""Binary synapses stored bit-packed; exact removal of traces by rebuilding the rows they touched.

Each stored trace t writes W_ji = 1 for every active presynaptic unit j of ``pre_t`` and every winner
i of its code, so the per-synapse count is the sum of rank-1 terms

    count_ij = Σ_t [i ∈ code_t] · pre_tj,        W = count > 0 = OR_t (code_t ⊗ pre_t).

The counts are kept in this factorised (sparse) form -- the macrocolumn's trace table holds every
trace's packed ``pre`` and code anyway, to know what to forget -- and only the binary view W is
stored densely. Removing traces F rebuilds exactly the rows i ∈ ∪_{t∈F} code_t from the remaining
traces, W_i = OR_{t ∉ F, i ∈ code_t} pre_t, which equals count_ij > 0 after decrementing (no
saturating counters, no overflow). Storage: ``packed`` int64 ``[n_post, ceil(n_pre/64)]`` (bit
j%64 of word j//64 = W_ij) on the compute device, e.g. 104 KB for n_pre = 784, n_post = 1024; a
float32 ``[n_pre, n_post]`` copy for matmul input sums is a cache built on demand and dropped on
every write.
"""
from __future__ import annotations

import numpy as np
import torch

from .csa import pack_bits, unpack_bits


def trace_counts(pre: np.ndarray, units: np.ndarray, n_pre: int, n_post: int) -> torch.Tensor:
    """count ``[n_post, n_pre]`` int64 = Σ_t onehot(units_t)^T · pre_t for packed ``pre [T, nw]``
    and winner units ``units [T, Q]`` (the exact per-synapse counts; for inspection and tests)."""
    x = unpack_bits(torch.from_numpy(np.ascontiguousarray(pre, np.int64)), n_pre).to(torch.int64)
    onehot = torch.zeros(len(units), n_post, dtype=torch.int64)
    onehot.scatter_add_(1, torch.from_numpy(np.asarray(units, np.int64)), torch.ones(units.shape, dtype=torch.int64))
    return onehot.t() @ x


class PackedSynapses:
    """Bit-packed binary weights of an ``n_pre -> n_post`` projection (see module docstring)."""

    def __init__(self, n_pre: int, n_post: int, device: str | torch.device = "cpu"):
        if n_pre < 1 or n_post < 1:
            raise ValueError(f"n_pre and n_post must be >= 1, got {n_pre}, {n_post}")
        self.n_pre, self.n_post = int(n_pre), int(n_post)
        self.n_words = (self.n_pre + 63) // 64
        self.device = torch.device(device)
        self.packed = torch.zeros(self.n_post, self.n_words, dtype=torch.int64, device=self.device)
        self._dense: torch.Tensor | None = None

    # ------------------------------------------------------------ views
    def binary(self) -> torch.Tensor:
        """W ``[n_post, n_pre]`` bool on the compute device."""
        return unpack_bits(self.packed, self.n_pre)

    def dense(self) -> torch.Tensor:
        """Float32 W^T ``[n_pre, n_post]`` on the compute device for matmul input sums (cached)."""
        if self._dense is None:
            self._dense = self.binary().t().to(torch.float32).contiguous()
        return self._dense

    def n_set(self) -> int:
        """Number of weights set (popcount of the packed view)."""
        return int(np.count_nonzero(np.unpackbits(self.packed.cpu().numpy().view(np.uint8))))

    def fill(self) -> float:
        """Fraction of weights set."""
        return self.n_set() / (self.n_pre * self.n_post)

    def nbytes(self) -> int:
        """Bytes of the stored weights (the packed view; the dense cache is not state)."""
        return self.packed.numel() * self.packed.element_size()

    # ------------------------------------------------------------ writes
    def changed(self) -> None:
        """Call after writing ``packed`` in place (the C store loop does): drops the dense cache."""
        self._dense = None

    def assign(self, w: torch.Tensor) -> None:
        """Set W from a dense ``[n_post, n_pre]`` 0/1 tensor (the torch store loop's result)."""
        self.packed = pack_bits(w > 0).to(self.device)
        self._dense = None

    def rebuild_rows(self, rows: np.ndarray, pre: np.ndarray, units: np.ndarray) -> None:
        """W_i = OR_{t : i ∈ units_t} pre_t for every i in ``rows``; ``pre [T, nw]`` packed int64 and
        ``units [T, Q]`` are the traces that remain (rows no trace reaches become zero)."""
        rows = np.unique(np.asarray(rows, np.int64))
        if len(rows) == 0:
            return
        sel = np.zeros(self.n_post, bool)
        sel[rows] = True
        units = np.asarray(units, np.int64)
        t, q = np.nonzero(sel[units])
        u = units[t, q]
        order = np.argsort(u, kind="stable")
        u, t = u[order], t[order]
        new = np.zeros((len(rows), self.n_words), np.int64)
        if len(u):
            starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
            new[np.searchsorted(rows, u[starts])] = np.bitwise_or.reduceat(pre[t], starts, axis=0)
        self.packed[torch.from_numpy(rows).to(self.device)] = torch.from_numpy(new).to(self.device)
        self._dense = None

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"n_pre": self.n_pre, "n_post": self.n_post, "packed": self.packed.cpu().clone()}

    def load_state_dict(self, d: dict) -> None:
        if d["n_pre"] != self.n_pre or d["n_post"] != self.n_post:
            raise ValueError(f"state_dict is for {d['n_pre']}->{d['n_post']} synapses, "
                             f"this is {self.n_pre}->{self.n_post}")
        if "packed" in d:
            self.packed = d["packed"].to(self.device, torch.int64).clone()
        else:                                          # older state_dicts stored dense counts
            self.packed = pack_bits(d["counts"] > 0).to(self.device)
        self._dense = None
