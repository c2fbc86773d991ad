"""Binary input features for image MACs.

``edge_features``: blur x ∈ [0,1]^(H×W) with a 3×3 box filter, take central differences
g_x = x[:, c+1] - x[:, c-1], g_y = x[r+1, :] - x[r-1, :], and keep four binary orientation maps
[g_x > t, g_x < -t, g_y > t, g_y < -t] (sparser and more distinctive than thresholded pixels).
``to_unit_range``: per-image affine map to [0, 1] (undoes any mean/std normalisation of a stream).
``deskew``: shear each image so that its slant (intensity-weighted row/column covariance) is zero.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["edge_features", "binary_pixels", "to_unit_range", "deskew", "image_features", "n_channels"]


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """Per-image (x - min) / (max - min) over the last two axes (blank images map to 0)."""
    lo = x.amin((-2, -1), keepdim=True)
    hi = x.amax((-2, -1), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-12)


def deskew(x: torch.Tensor) -> torch.Tensor:
    """Moment deskewing of ``x [B, H, W]`` (intensities >= 0): with intensity-weighted means r̄, c̄,
    α = cov(r, c) / var(r), resample x'(r, c) = x(r, c + α (r - r̄)) bilinearly (zeros outside)."""
    if x.dim() != 3:
        raise ValueError(f"x must have shape [B, H, W], got {tuple(x.shape)}")
    x = x.float()
    B, H, W = x.shape
    r = torch.arange(H, dtype=torch.float32).view(1, H, 1)
    c = torch.arange(W, dtype=torch.float32).view(1, 1, W)
    m = x.sum((1, 2)).clamp_min(1e-12).view(B, 1, 1)
    rbar, cbar = (x * r).sum((1, 2), keepdim=True) / m, (x * c).sum((1, 2), keepdim=True) / m
    var_r = (x * (r - rbar) ** 2).sum((1, 2), keepdim=True) / m
    cov = (x * (r - rbar) * (c - cbar)).sum((1, 2), keepdim=True) / m
    alpha = cov / var_r.clamp_min(1e-12)
    src_c = c + alpha * (r - rbar)                                      # [B, H, W]
    grid = torch.stack([2 * src_c / max(W - 1, 1) - 1, (2 * r / max(H - 1, 1) - 1).expand(B, H, W)], -1)
    return F.grid_sample(x.unsqueeze(1), grid, align_corners=True).squeeze(1)


def edge_features(x: torch.Tensor, threshold: float = 0.15) -> torch.Tensor:
    """``x [B, H, W]`` in [0, 1] -> bool ``[B, 4, H, W]`` orientation maps."""
    if x.dim() != 3:
        raise ValueError(f"x must have shape [B, H, W], got {tuple(x.shape)}")
    b = F.avg_pool2d(x.float().unsqueeze(1), 3, 1, 1)
    gx = F.pad(b[..., :, 2:] - b[..., :, :-2], (1, 1))
    gy = F.pad(b[..., 2:, :] - b[..., :-2, :], (0, 0, 1, 1))
    return torch.cat([gx > threshold, gx < -threshold, gy > threshold, gy < -threshold], 1)


def binary_pixels(x: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """``x [B, H, W]`` in [0, 1] -> bool ``[B, 1, H, W]`` (x > threshold)."""
    if x.dim() != 3:
        raise ValueError(f"x must have shape [B, H, W], got {tuple(x.shape)}")
    return (x > threshold).unsqueeze(1)


def image_features(x: torch.Tensor, kind: str = "edges", threshold: float | None = None,
                   deskewed: bool = False) -> torch.Tensor:
    """Dispatch: ``kind`` "edges" (4 channels) or "binary" (1 channel); x in [0, 1], optionally
    :func:`deskew` ed first."""
    if deskewed:
        x = deskew(x)
    if kind == "edges":
        return edge_features(x, 0.15 if threshold is None else threshold)
    if kind == "binary":
        return binary_pixels(x, 0.5 if threshold is None else threshold)
    raise ValueError(f"features must be 'edges' or 'binary', got {kind!r}")


def n_channels(kind: str) -> int:
    return {"edges": 4, "binary": 1}[kind]
