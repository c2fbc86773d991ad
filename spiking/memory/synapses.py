"""Binary synapses kept as per-synapse counts, with a bit-packed binary view (W = counts > 0).

Each stored trace writes W_ji = 1 for every active presynaptic input j and winner i; the count of a
synapse is the number of traces that wrote it, so removing a trace (decrementing its synapses)
leaves exactly the binary weights the remaining traces alone would have written.

Storage: counts are uint8 ``[n_post, n_pre]``; counts above 255 spill exactly into a small
``overflow`` dict (flat index -> extra count). The packed view is int64 ``[n_post, ceil(n_pre/64)]``
(bit j%64 of word j//64 = W_ji), used by the popcount kernels; a float32 ``[n_pre, n_post]`` copy for
the matmul path is built lazily and cached until the next write.
"""
from __future__ import annotations

import torch

from .csa import pack_bits, unpack_bits

_CAP = 255


class CountedSynapses:
    """Counts + packed binary view of an ``n_pre -> n_post`` binary weight matrix."""

    def __init__(self, n_pre: int, n_post: int, device: str | torch.device = "cpu"):
        if n_pre < 1 or n_post < 1:
            raise ValueError(f"n_pre and n_post must be >= 1, got {n_pre}, {n_post}")
        self.n_pre, self.n_post = int(n_pre), int(n_post)
        self.n_words = (self.n_pre + 63) // 64
        self.counts = torch.zeros(self.n_post, self.n_pre, dtype=torch.uint8, device=device)
        self.overflow: dict[int, int] = {}
        self.packed = torch.zeros(self.n_post, self.n_words, dtype=torch.int64, device=device)
        self._dense: torch.Tensor | None = None

    # ------------------------------------------------------------ views
    @property
    def device(self) -> torch.device:
        return self.counts.device

    def binary(self) -> torch.Tensor:
        """W ``[n_post, n_pre]`` bool (= counts > 0)."""
        return self.counts > 0

    def dense(self) -> torch.Tensor:
        """Cached float32 W^T ``[n_pre, n_post]`` for matmul input sums."""
        if self._dense is None:
            self._dense = self.binary().t().to(torch.float32).contiguous()
        return self._dense

    def n_set(self) -> int:
        return int((self.counts > 0).sum())

    def fill(self) -> float:
        """Fraction of weights set."""
        return self.n_set() / (self.n_pre * self.n_post)

    def nbytes(self) -> int:
        return (self.counts.numel() * self.counts.element_size() + self.packed.numel() * 8
                + 16 * len(self.overflow))

    def total_counts(self) -> torch.Tensor:
        """Exact counts as int64 (uint8 storage plus overflow)."""
        t = self.counts.to(torch.int64)
        if self.overflow:
            idx = torch.tensor(list(self.overflow.keys()), device=t.device)
            val = torch.tensor(list(self.overflow.values()), device=t.device)
            t.view(-1).index_add_(0, idx, val)
        return t

    # ------------------------------------------------------------ writes
    def _apply(self, delta: torch.Tensor, rows: torch.Tensor, sign: int):
        """counts[rows] += sign * delta, exactly (``delta [len(rows), n_pre]`` int64 >= 0, rows sorted)."""
        cur = self.counts[rows].to(torch.int64)
        hit_keys: list[int] = []
        if self.overflow and len(rows):
            keys = torch.tensor(list(self.overflow.keys()), device=cur.device)
            vals = torch.tensor(list(self.overflow.values()), device=cur.device)
            r, c = keys // self.n_pre, keys % self.n_pre
            pos = torch.searchsorted(rows, r).clamp_max(len(rows) - 1)
            hit = rows[pos] == r
            cur[pos[hit], c[hit]] += vals[hit]
            hit_keys = keys[hit].tolist()
        new = cur + sign * delta
        if bool((new < 0).any()):
            raise ValueError("trace to remove was never written to these synapses")
        for k in hit_keys:
            del self.overflow[k]
        over = torch.nonzero(new > _CAP)
        for ri, ci in over.tolist():
            self.overflow[int(rows[ri]) * self.n_pre + ci] = int(new[ri, ci]) - _CAP
        self.counts[rows] = new.clamp_max(_CAP).to(torch.uint8)
        self.packed[rows] = pack_bits(new > 0)
        self._dense = None

    def add(self, pre: torch.Tensor, post: torch.Tensor, packed_current: bool = False):
        """Write traces: ``pre [B, n_pre]`` 0/1 and ``post [B, Q]`` unit indices (one trace per row).

        ``packed_current=True`` when a kernel already set the packed bits (only counts change)."""
        rows, delta = self._delta(pre, post)
        if packed_current:
            keep = self.packed[rows].clone()
            self._apply(delta, rows, +1)
            if not torch.equal(keep, self.packed[rows]):
                raise RuntimeError("packed view written by the kernel disagrees with the counts")
        else:
            self._apply(delta, rows, +1)

    def remove(self, pre: torch.Tensor, post: torch.Tensor):
        """Exact inverse of :meth:`add` for the same traces."""
        rows, delta = self._delta(pre, post)
        self._apply(delta, rows, -1)

    def _delta(self, pre: torch.Tensor, post: torch.Tensor):
        pre = pre.reshape(-1, self.n_pre).to(self.device)
        post = post.reshape(pre.shape[0], -1).to(self.device, torch.int64)
        onehot = torch.zeros(pre.shape[0], self.n_post, device=self.device)
        onehot.scatter_(1, post, 1.0)
        delta = onehot.t() @ pre.to(torch.float32)          # [n_post, n_pre] integer-valued
        rows = torch.nonzero(delta.any(1)).reshape(-1)
        return rows, delta[rows].round().to(torch.int64)

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"n_pre": self.n_pre, "n_post": self.n_post, "counts": self.counts.cpu().clone(),
                "overflow": dict(self.overflow)}

    def load_state_dict(self, d: dict):
        if d["n_pre"] != self.n_pre or d["n_post"] != self.n_post:
            raise ValueError(f"state_dict is for {d['n_pre']}->{d['n_post']} synapses, "
                             f"this is {self.n_pre}->{self.n_post}")
        self.counts = d["counts"].to(self.device, torch.uint8).clone()
        self.overflow = {int(k): int(v) for k, v in d["overflow"].items()}
        self.packed = pack_bits(self.counts > 0)
        self._dense = None

    def sums_from_packed(self, xp: torch.Tensor) -> torch.Tensor:
        """Reference popcount input sums: ``xp [B, nw]`` packed -> ``[B, n_post]`` (unpacks; for checks)."""
        x = unpack_bits(xp, self.n_pre).to(torch.float32)
        return x @ self.dense()
