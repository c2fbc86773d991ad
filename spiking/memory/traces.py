"""Append-only table of stored traces (row = trace id), grown by doubling so batched stores cost
amortised O(batch), with views of the filled rows."""
from __future__ import annotations

import torch


class TraceTable:
    """Columns of equal length; ``table["name"]`` is a view of the filled rows (writes go through)."""

    def __init__(self, columns: dict[str, tuple[tuple[int, ...], torch.dtype]]):
        self._cols = {k: torch.zeros(0, *shape, dtype=dt) for k, (shape, dt) in columns.items()}
        self._n = 0

    def columns(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """``{name: (row shape, dtype)}`` of every column."""
        return {k: (tuple(v.shape[1:]), v.dtype) for k, v in self._cols.items()}

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._cols[name][: self._n]

    def append(self, **rows: torch.Tensor) -> None:
        if set(rows) != set(self._cols):
            raise ValueError(f"append needs columns {sorted(self._cols)}, got {sorted(rows)}")
        m = {len(v) for v in rows.values()}
        if len(m) != 1:
            raise ValueError("all columns must have the same number of rows")
        m = m.pop()
        need = self._n + m
        for k, buf in self._cols.items():
            if need > len(buf):
                grown = torch.zeros(max(need, 2 * len(buf), 64), *buf.shape[1:], dtype=buf.dtype)
                grown[: self._n] = buf[: self._n]
                self._cols[k] = buf = grown
            buf[self._n:need] = rows[k].to(buf.dtype)
        self._n = need

    def state_dict(self) -> dict:
        return {k: self[k].clone() for k in self._cols}

    def load_state_dict(self, d: dict) -> None:
        if set(d) != set(self._cols):
            raise ValueError(f"trace state has columns {sorted(d)}, expected {sorted(self._cols)}")
        self._cols = {k: v.clone() for k, v in d.items()}
        self._n = len(next(iter(d.values()))) if d else 0
