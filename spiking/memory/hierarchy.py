"""A small hierarchy of macrocolumns over receptive-field patches of binary images (e.g. 28×28 MNIST).

Level 1 is a grid of MACs; MAC (r, c) sees the ``patch × patch`` window at (r·stride, c·stride) of
every input channel (binary, ``[B, C, H, W]`` or ``[B, H, W]``). Level 2 (optional, ``top=(Q2, K2)``)
is one MAC whose input is the concatenated one-hot level-1 codes (n_macs·Q1·K1 bits; a gated-out
patch contributes zeros). Codes are int64: level 1 ``[B, n_macs, Q1]`` (-1: MAC did not
participate), level 2 ``[B, Q2]``.

Level-1 MACs have a critical period (``theta_sat``): once half their weights are set they stop
learning and act as a fixed dictionary of patch codes, as in Sparsey's staged learning.

``encode_translated`` reads the level-1 codes of small translations of an image with learning off
and returns their union as a set of active units (one-hot, ``[B, n_macs·Q·K]`` bool):
S_r(x) = ∪_{|dr|,|dc| <= r} units(codes(shift(x, dr, dc))). Overlap |S_0(test) ∩ S_r(stored)|
tolerates r-pixel displacements of the test image (used by the MNIST k-NN).
"""
from __future__ import annotations

import torch

from .csa import code_units
from .macrocolumn import Macrocolumn

__all__ = ["PatchHierarchy", "one_hot_codes", "translate"]


def one_hot_codes(codes: torch.Tensor, K: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[B, ..., Q]`` codes (-1 = none) -> ``[B, prod(...)·Q·K]`` one-hot (code overlap = dot product;
    ``dtype=torch.bool``: the set of active units)."""
    B, Q = codes.shape[0], codes.shape[-1]
    c = codes.reshape(B, -1, Q)
    valid = (c >= 0).to(dtype)
    units = code_units(c.clamp_min(0), K)                            # [B, M, Q]
    out = torch.zeros(B, c.shape[1], Q * K, device=codes.device, dtype=dtype)
    out.scatter_(2, units, valid)
    return out.reshape(B, -1)


def translate(images: torch.Tensor, dr: int, dc: int) -> torch.Tensor:
    """Shift ``[..., H, W]`` by (dr, dc) pixels (down / right positive), filling with zeros."""
    if images.dim() < 2:
        raise ValueError(f"images must have shape [..., H, W], got {tuple(images.shape)}")
    H, W = images.shape[-2:]
    out = torch.zeros_like(images)
    out[..., max(dr, 0):H + min(dr, 0), max(dc, 0):W + min(dc, 0)] = \
        images[..., max(-dr, 0):H + min(-dr, 0), max(-dc, 0):W + min(-dc, 0)]
    return out


class PatchHierarchy:
    """Grid of patch MACs (level 1) and an optional top MAC (level 2)."""

    def __init__(self, image_shape=(28, 28), patch: int = 7, stride: int = 3, channels: int = 1,
                 Q: int = 8, K: int = 8, top: tuple[int, int] | None = None, theta_sat: float | None = 0.5,
                 theta_sat_top: float | None = None, seed: int = 0, device="cpu", **csa):
        H, W = image_shape
        if patch < 1 or patch > min(H, W):
            raise ValueError(f"patch must lie in [1, {min(H, W)}], got {patch}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.image_shape, self.patch, self.stride, self.channels = (H, W), patch, stride, channels
        self.Q, self.K = Q, K
        self.positions = [(r, c) for r in range(0, H - patch + 1, stride) for c in range(0, W - patch + 1, stride)]
        n_in = channels * patch * patch
        self.macs = [Macrocolumn(n_in, Q, K, horizontal=False, theta_sat=theta_sat, seed=seed * 100003 + i,
                                 device=device, **csa) for i in range(len(self.positions))]
        self.top = None
        if top is not None:
            self.top = Macrocolumn(len(self.positions) * Q * K, top[0], top[1], horizontal=False,
                                   theta_sat=theta_sat_top, seed=seed * 100003 + len(self.positions),
                                   device=device, **csa)

    @property
    def n_macs(self) -> int:
        return len(self.macs)

    def patches(self, images) -> torch.Tensor:
        """``[B, (C,) H, W]`` binary -> ``[B, n_macs, C·patch·patch]`` bool (channel-major per patch)."""
        x = torch.as_tensor(images)
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.channels, *self.image_shape):
            raise ValueError(f"images must have shape [B, {self.channels}, {self.image_shape[0]}, "
                             f"{self.image_shape[1]}] (or [B, H, W] for one channel), got {tuple(x.shape)}")
        if x.dtype != torch.bool:
            if not bool(((x == 0) | (x == 1)).all()):
                raise ValueError("images must be binary (0/1 or bool)")
            x = x != 0
        p = x.unfold(2, self.patch, self.stride).unfold(3, self.patch, self.stride)   # [B, C, gr, gc, p, p]
        p = p.permute(0, 2, 3, 1, 4, 5).reshape(x.shape[0], -1, self.channels * self.patch * self.patch)
        grid_w = (self.image_shape[1] - self.patch) // self.stride + 1
        L = torch.tensor([r // self.stride * grid_w + c // self.stride for r, c in self.positions])
        return p[:, L]

    def _level1(self, images, learn: bool):
        P = self.patches(images)
        codes, ids = [], []
        for i, mac in enumerate(self.macs):
            if learn:
                ids.append(mac.store(P[:, i])[1])
            codes.append(mac.recall(P[:, i])[0])
        return torch.stack(codes, 1), (torch.stack(ids, 1) if learn else None)

    def store(self, images) -> dict:
        """Learn a batch (each image presented once; level-1 codes are read out with learning off
        after the batch, then level 2 learns them). Returns ``{"level1": [B, n_macs, Q],
        "level1_ids": [B, n_macs] (trace ids, -1: gated out), "top": [B, Q2] or None, "top_ids": [B] or None}``."""
        c1, ids = self._level1(images, learn=True)
        out = {"level1": c1, "level1_ids": ids, "top": None, "top_ids": None}
        if self.top is not None:
            out["top"], out["top_ids"] = self.top.store(one_hot_codes(c1, self.K))
        return out

    def encode(self, images) -> dict:
        """Codes with learning off: ``{"level1": ..., "top": ..., "G": top familiarity or None}``."""
        c1, _ = self._level1(images, learn=False)
        out = {"level1": c1, "top": None, "G": None}
        if self.top is not None:
            out["top"], out["G"] = self.top.recall(one_hot_codes(c1, self.K))
        return out

    def encode_translated(self, images, radius: int = 1) -> torch.Tensor:
        """Union of the level-1 code units over the (2·radius+1)² translations of each image, learning
        off: bool ``[B, n_macs·Q·K]`` (radius 0: the one-hot codes of :meth:`encode`)."""
        if not isinstance(radius, int) or radius < 0:
            raise ValueError(f"radius must be an int >= 0, got {radius!r}")
        x = torch.as_tensor(images)
        units = None
        for dr in range(-radius, radius + 1):
            for dc in range(-radius, radius + 1):
                u = one_hot_codes(self._level1(translate(x, dr, dc), learn=False)[0], self.K, torch.bool)
                units = u if units is None else units | u
        return units

    def forget(self, level1_ids: torch.Tensor, top_ids: torch.Tensor | None = None) -> None:
        """Exactly forget stored images: ``level1_ids [B, n_macs]`` as returned by :meth:`store`
        (-1 entries are skipped) and optionally their ``top_ids``."""
        ids = torch.as_tensor(level1_ids).reshape(-1, self.n_macs)
        for i, mac in enumerate(self.macs):
            col = ids[:, i]
            col = col[col >= 0]
            if len(col):
                mac.forget(col)
        if top_ids is not None:
            if self.top is None:
                raise ValueError("top_ids given but the hierarchy has no top level")
            t = torch.as_tensor(top_ids).reshape(-1)
            if len(t[t >= 0]):
                self.top.forget(t[t >= 0])

    def state_dict(self) -> dict:
        return {"macs": [m.state_dict() for m in self.macs],
                "top": None if self.top is None else self.top.state_dict()}

    def load_state_dict(self, d: dict) -> None:
        if len(d["macs"]) != self.n_macs:
            raise ValueError(f"state_dict has {len(d['macs'])} level-1 MACs, this hierarchy has {self.n_macs}")
        for m, s in zip(self.macs, d["macs"]):
            m.load_state_dict(s)
        if (d["top"] is None) != (self.top is None):
            raise ValueError("state_dict and hierarchy disagree on having a top level")
        if self.top is not None:
            self.top.load_state_dict(d["top"])
