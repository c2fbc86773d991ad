"""Atomic checkpoints (temp file + fsync + rename) and RNG-state capture for exact resume.

A checkpoint is one ``torch.save`` payload ``{"format": FORMAT, ...}`` loaded back with
``weights_only=True`` (plain containers and tensors only). A truncated or foreign file raises a
``ValueError`` naming the file, never a half-restored run.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

FORMAT = "spiking-runner-checkpoint/1"


def atomic_write_bytes(path: Path, write) -> None:
    """Call ``write(file)`` on a temp file next to ``path``, fsync it, then rename over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def rng_state() -> dict:
    """The global RNG states (torch CPU, CUDA if present, numpy, random) as checkpointable data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "random": list(random.getstate()[1]),
        "random_version": random.getstate()[0],
        "random_gauss": random.getstate()[2],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached"]))
    random.setstate((state["random_version"], tuple(state["random"]), state["random_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path, payload: dict) -> None:
    """Write ``payload`` (plus the format tag) atomically to ``path``."""
    data = {"format": FORMAT, **payload}
    atomic_write_bytes(Path(path), lambda f: torch.save(data, f))


def load_checkpoint(path) -> dict:
    """Load a checkpoint written by ``save_checkpoint``; corrupt or foreign files → ValueError."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # truncated zip, pickle errors, foreign objects
        raise ValueError(f"checkpoint {path} is corrupt or unreadable ({type(exc).__name__}: {exc}); "
                         f"delete it to start the run afresh") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path} is not a {FORMAT} file")
    return data
