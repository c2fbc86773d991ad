"""Binary synapses kept as per-synapse counts, with a bit-packed binary view (W = counts > 0).

Each stored trace writes W_ji = 1 for every active presynaptic input j and winner i; the count of a
synapse is the number of traces that wrote it, so removing a trace (decrementing its synapses)
leaves exactly the binary weights the remaining traces alone would have written.

Storage: counts are uint8 ``[n_post, n_pre]`` on the CPU (only learning and forgetting touch
them); counts above 255 spill exactly into a small ``overflow`` dict (flat index -> extra count).
The binary views live on the compute device: ``packed`` int64 ``[n_post, ceil(n_pre/64)]`` (bit
j%64 of word j//64 = W_ji) for the popcount kernels, and a float32 ``[n_pre, n_post]`` copy for the
matmul path, built lazily and then updated in place on every write. Count updates use numpy on
small index arrays (no thread-pool wake-ups for tiny batches).
"""
from __future__ import annotations

import numpy as np
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
        self.device = torch.device(device)
        self.counts = torch.zeros(self.n_post, self.n_pre, dtype=torch.uint8)      # CPU, exact (with overflow)
        self.overflow: dict[int, int] = {}
        self.packed = torch.zeros(self.n_post, self.n_words, dtype=torch.int64, device=self.device)
        self._dense: torch.Tensor | None = None

    # ------------------------------------------------------------ views
    def binary(self) -> torch.Tensor:
        """W ``[n_post, n_pre]`` bool on the compute device (= counts > 0)."""
        return (self.counts > 0).to(self.device)

    def dense(self) -> torch.Tensor:
        """Float32 W^T ``[n_pre, n_post]`` on the compute device for matmul input sums."""
        if self._dense is None:
            self._dense = (self.counts > 0).t().to(torch.float32).contiguous().to(self.device)
        return self._dense

    def n_set(self) -> int:
        return int(np.count_nonzero(self.counts.numpy()))

    def fill(self) -> float:
        """Fraction of weights set."""
        return self.n_set() / (self.n_pre * self.n_post)

    def nbytes(self) -> int:
        """Bytes of the stored state: uint8 counts, packed view, overflow entries."""
        return self.counts.numel() + self.packed.numel() * 8 + 16 * len(self.overflow)

    def total_counts(self) -> torch.Tensor:
        """Exact counts as int64 ``[n_post, n_pre]`` (uint8 storage plus overflow)."""
        t = self.counts.numpy().astype(np.int64)
        for f, v in self.overflow.items():
            t.reshape(-1)[f] += v
        return torch.from_numpy(t)

    # ------------------------------------------------------------ writes
    def add(self, pre: torch.Tensor, post: torch.Tensor, packed_current: bool = False):
        """Write traces: ``pre [B, n_pre]`` 0/1 and ``post [B, Q]`` unit indices (one trace per row).

        ``packed_current=True`` when a kernel already set the packed bits (only counts change)."""
        idx, cnt = self._delta(pre, post)
        self._apply(idx, cnt, +1, repack=not packed_current)

    def remove(self, pre: torch.Tensor, post: torch.Tensor):
        """Exact inverse of :meth:`add` for the same traces."""
        idx, cnt = self._delta(pre, post)
        self._apply(idx, cnt, -1)

    def _delta(self, pre: torch.Tensor, post: torch.Tensor):
        """Sorted unique flat synapse indices (post·n_pre + pre) written by the traces, with multiplicity."""
        pre = np.asarray(pre.detach().reshape(-1, self.n_pre).cpu().numpy())
        itype = np.int32 if self.n_post * self.n_pre < 2**31 else np.int64
        post = post.detach().reshape(pre.shape[0], -1).cpu().numpy().astype(itype)
        b, j = np.nonzero(pre)
        j = j.astype(itype)
        flat = (post[b] * self.n_pre + j[:, None]).reshape(-1)
        if 16 * len(flat) < self.n_post * self.n_pre:          # few writes: sort instead of a dense histogram
            idx, cnt = np.unique(flat, return_counts=True)
            return idx.astype(np.int64), cnt.astype(np.int64)
        counts = np.bincount(flat, minlength=self.n_post * self.n_pre)
        idx = np.flatnonzero(counts)
        return idx, counts[idx].astype(np.int64)

    def _apply(self, idx: np.ndarray, cnt: np.ndarray, sign: int, repack: bool = True):
        """counts.flat[idx] += sign * cnt exactly (idx sorted, unique), then refresh the device views."""
        flat = self.counts.numpy().reshape(-1)
        cur = flat[idx].astype(np.int64)
        hit_keys = []
        if self.overflow and len(idx):
            keys = np.fromiter(self.overflow.keys(), np.int64, len(self.overflow))
            vals = np.fromiter(self.overflow.values(), np.int64, len(self.overflow))
            pos = np.minimum(np.searchsorted(idx, keys), len(idx) - 1)
            hit = idx[pos] == keys
            cur[pos[hit]] += vals[hit]
            hit_keys = keys[hit].tolist()
        new = cur + sign * cnt
        if (new < 0).any():
            raise ValueError("trace to remove was never written to these synapses")
        for k in hit_keys:
            del self.overflow[k]
        over = np.flatnonzero(new > _CAP)
        for f, v in zip(idx[over].tolist(), new[over].tolist()):
            self.overflow[f] = v - _CAP
        flat[idx] = np.minimum(new, _CAP).astype(np.uint8)
        post, pre = idx // self.n_pre, idx % self.n_pre
        if repack:
            rows = np.unique(post)
            self.packed[torch.from_numpy(rows).to(self.device)] = pack_bits(self.counts[rows] > 0).to(self.device)
        if self._dense is not None:                 # keep the matmul view in step (no rebuild)
            pos, val = pre * self.n_post + post, (new > 0).astype(np.float32)
            if self.device.type == "cpu":
                self._dense.numpy().reshape(-1)[pos] = val
            else:
                self._dense.view(-1)[torch.from_numpy(pos).to(self.device)] = torch.from_numpy(val).to(self.device)

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"n_pre": self.n_pre, "n_post": self.n_post, "counts": self.counts.clone(),
                "overflow": dict(self.overflow)}

    def load_state_dict(self, d: dict):
        if d["n_pre"] != self.n_pre or d["n_post"] != self.n_post:
            raise ValueError(f"state_dict is for {d['n_pre']}->{d['n_post']} synapses, "
                             f"this is {self.n_pre}->{self.n_post}")
        self.counts = d["counts"].to("cpu", torch.uint8).clone()
        self.overflow = {int(k): int(v) for k, v in d["overflow"].items()}
        self.packed = pack_bits(self.counts > 0).to(self.device)
        self._dense = None

    def sums_from_packed(self, xp: torch.Tensor) -> torch.Tensor:
        """Reference input sums from packed inputs ``xp [B, nw]`` -> ``[B, n_post]`` (unpacks; for checks)."""
        x = unpack_bits(xp, self.n_pre).to(self.device, torch.float32)
        return x @ self.dense()
