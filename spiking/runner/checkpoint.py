"""Atomic checkpoints (temp file + fsync + rename) with a checksum, and RNG-state capture for
exact resume.

A checkpoint file is ``MAGIC`` + the SHA-256 (hex) of the body + ``"\\n"`` + the body, a
``torch.save`` payload ``{"format": FORMAT, ...}``. :func:`load_checkpoint` verifies the checksum
before deserialising, then loads the body with ``weights_only=True`` (plain containers and
tensors only). A truncated, altered or foreign file raises a ``ValueError`` naming the file, never
a half-restored run; read checkpoints with :func:`load_checkpoint`, not ``torch.load``.

Temp files are named ``.<name>.tmp-<pid>`` (:data:`TMP_MARK`); a process killed mid-write leaves
one behind, which :func:`remove_orphans` deletes (the runner calls it once it holds the folder's
lock, when no other writer can be active).
"""
from __future__ import annotations

import hashlib
import io
import os
import random
from pathlib import Path

import numpy as np
import torch

FORMAT = "spiking-runner-checkpoint/2"
MAGIC = b"SPIKING-CHECKPOINT/2 sha256="
TMP_MARK = ".tmp-"


class IntegrityError(ValueError):
    """A stored file (checkpoint, results, config) is torn or altered: its checksum does not match."""


def tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def is_tmp(path: Path) -> bool:
    """True for a temp file written by :func:`atomic_write_bytes` (``.<name>.tmp-<pid>``)."""
    name = path.name
    return name.startswith(".") and TMP_MARK in name and name.rsplit(TMP_MARK, 1)[1].isdigit()


def remove_orphans(folder: Path) -> list[Path]:
    """Delete the temp files under ``folder`` (recursively) left by killed writers; return them.

    Only safe while no writer is active in ``folder`` (the runner holds the folder's lock).
    """
    gone = []
    for p in sorted(Path(folder).rglob(f".*{TMP_MARK}*")):
        if p.is_file() and is_tmp(p):
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def atomic_write_bytes(path: Path, write) -> None:
    """Call ``write(file)`` on a temp file next to ``path``, fsync it, then rename over ``path``."""
    path = Path(path)
    tmp = tmp_name(path)
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
    """Write ``payload`` (plus the format tag) atomically to ``path``, prefixed by its checksum."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buf)
    body = buf.getvalue()
    head = MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n"
    atomic_write_bytes(Path(path), lambda f: (f.write(head), f.write(body)))


def verify_checkpoint(path) -> bytes:
    """The body of a checkpoint file after its checksum was checked; ValueError naming the file."""
    path = Path(path)
    raw = path.read_bytes()
    n = len(MAGIC) + 64
    if not raw.startswith(MAGIC) or raw[n:n + 1] != b"\n":
        raise IntegrityError(f"checkpoint {path} is corrupt or not a {FORMAT} file (no checksum header); "
                         f"it was not written by this version of spiking or is damaged")
    body = raw[n + 1:]
    if hashlib.sha256(body).hexdigest().encode() != raw[len(MAGIC):n]:
        raise IntegrityError(f"checkpoint {path} is corrupt: its SHA-256 checksum does not match its "
                         f"content (damaged on disk or edited); nothing was loaded or overwritten")
    return body


def load_checkpoint(path) -> dict:
    """Load a checkpoint written by ``save_checkpoint``; corrupt or foreign files → ValueError."""
    path = Path(path)
    body = verify_checkpoint(path)
    try:
        data = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, foreign objects
        raise ValueError(f"checkpoint {path} is corrupt or unreadable ({type(exc).__name__}: {exc}); "
                         f"delete it to start the run afresh") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path} is not a {FORMAT} file")
    return data
