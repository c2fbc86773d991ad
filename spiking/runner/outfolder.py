"""The output folder of a run: checked, locked, then claimed (``config.json``).

Order (nothing is written before the first step passes):

1. :func:`check_out_path` (no writes): ``out`` must be a folder or not exist yet, may not lie under a
   file, and a folder without ``config.json`` must hold nothing but spiking's own leftovers.
2. :func:`claim` creates the folder, takes the :class:`~spiking.runner.lock.FolderLock` (one writer
   per folder, held until :meth:`release`), deletes orphaned temp files (``.<name>.tmp-<pid>``,
   safe under the lock), then reads ``config.json``:

   * absent, or torn/altered while the folder holds nothing else, or the only content besides
     empty seed folders (nothing computed yet): the folder is free; ``config.json`` is written;
   * another config, other seeds, or this run without ``resume``: refused, nothing overwritten;
   * this run with ``resume``: the recorded environment must match (see :func:`environment`).

``config.json`` = ``{"config": identity, "seeds": [...], "environment": {...}, "checksum": ...}``.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import torch

from . import outputs
from .checkpoint import IntegrityError, is_tmp, remove_orphans
from .lock import LOCK_NAME, FolderLock

MARKER = "config.json"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``/``machine()``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str) -> dict:
    """What besides the config changes a run's numbers: library versions, the processor the
    numbers come from, the LIF backend choice. A resume must find the same values."""
    import spiking  # noqa: PLC0415
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_model()
    return {"torch": torch.__version__, "numpy": np.__version__, "spiking": spiking.__version__,
            "machine": platform.machine(), "device_name": name,
            "lif_backend": os.environ.get("SPIKING_BACKEND") or "auto"}


def _leftovers(out: Path) -> list[Path]:
    """Entries of ``out`` other than the lock file and temp files."""
    return sorted(p for p in out.iterdir() if p.name != LOCK_NAME and not is_tmp(p))


def _nothing_computed(out: Path) -> bool:
    """Only ``config.json`` and empty (or temp-only) seed folders: no checkpoint, no results."""
    for p in _leftovers(out):
        if p.name == MARKER:
            continue
        if not (p.is_dir() and p.name.startswith("seed_") and not _leftovers(p)):
            return False
    return True


def _refuse_foreign(out: Path, rest: list[Path]) -> None:
    names = ", ".join(p.name for p in rest[:5]) + (", ..." if len(rest) > 5 else "")
    raise ValueError(f"out: {out} is not empty and holds no spiking run ({names}); "
                     f"choose another out")


def check_out_path(out: Path) -> None:
    """Refuse (``ValueError`` naming the path) what can be refused without writing anything."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {out} is a file, not a folder; choose another out")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"out: {out} lies under {parent}, which is a file; choose another out")
            break
    if out.is_dir() and not (out / MARKER).exists():
        rest = _leftovers(out)
        if rest:
            _refuse_foreign(out, rest)


def read_marker(out: Path) -> dict | None:
    """The stored ``config.json``, or None when the folder may be treated as free."""
    marker = out / MARKER
    if not marker.exists():
        rest = _leftovers(out)
        if rest:
            _refuse_foreign(out, rest)
        return None
    try:
        stored = outputs.read_checked_json(marker)
    except IntegrityError as exc:  # torn or altered: harmless only if nothing else is there
        if _nothing_computed(out):
            return None
        raise ValueError(f"out: {exc}; the folder holds a run's files, so it is not reused — "
                         f"choose another out") from exc
    except ValueError as exc:
        raise ValueError(f"out: {exc}; choose another out") from exc
    if not {"config", "seeds", "environment"} <= set(stored):
        raise ValueError(f"out: {marker} is not a spiking run's config (keys {sorted(stored)}); "
                         f"choose another out")
    return stored


def _check_same_run(out: Path, stored: dict, mine: dict, seeds: list, resume: bool, env: dict) -> None:
    theirs = stored["config"]
    if theirs != mine:
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        detail = ", ".join(f"{k}: stored {theirs.get(k)!r}, now {mine.get(k)!r}" for k in diff[:4])
        raise ValueError(f"out: {out} holds another run's results (config differs in {diff}: {detail}); "
                         f"choose another out — nothing was overwritten")
    if stored["seeds"] != seeds:
        raise ValueError(f"out: {out} holds a run with seeds {stored['seeds']}, not {seeds}; "
                         f"choose another out")
    if not resume:
        raise ValueError(f"out: {out} already holds this run; pass resume=True (--resume) to "
                         f"continue it, or choose another out")
    diff = sorted(k for k in set(env) | set(stored["environment"]) if env.get(k) != stored["environment"].get(k))
    if diff:
        detail = ", ".join(f"{k}: stored {stored['environment'].get(k)!r}, now {env.get(k)!r}" for k in diff)
        raise ValueError(f"out: {out} was run in another environment ({detail}); resuming here would "
                         f"not reproduce its numbers — resume where it ran, or choose another out")


def claim(out: Path, identity: dict, seeds: list, resume: bool, env: dict) -> FolderLock:
    """Lock ``out`` and claim it for this run (module docstring); the caller releases the lock."""
    out = Path(out)
    check_out_path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"out: cannot create the folder {out} ({exc.strerror}); "
                         f"choose a folder you can write to") from exc
    lock = FolderLock(out).acquire()
    try:
        remove_orphans(out)  # no other writer can be active: we hold the lock
        stored = read_marker(out)
        if stored is not None and not _nothing_computed(out):
            _check_same_run(out, stored, identity, seeds, resume, env)
        else:
            outputs.write_checked_json(out / MARKER, {"config": identity, "seeds": seeds,
                                                      "environment": env})
    except BaseException:
        lock.release()
        raise
    return lock
