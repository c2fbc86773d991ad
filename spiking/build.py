"""Build cache of spiking's native code (the fused CPU LIF, neuron-template and RLIF extensions, the
Sparsey C library).

Every build goes to ``$SPIKING_CACHE`` (default ``~/.cache/spiking``) under ``<kind>-<key>/``.
The key hashes everything the binary depends on and nothing else:

* the source files (contents, not paths: a second checkout or venv reuses the build),
* the compiler (resolved path and ``--version``) and the compile flags,
* the CPU's instruction-set flags (the builds use ``-mavx2`` / ``-march=native``),
* for the torch extension: torch's version, its C++ ABI and the Python extension suffix.

A build is serialised by a file lock per key (concurrent processes wait, then load the result),
is marked complete only after it succeeded, and announces itself on stderr in one line with its
duration. ``spiking build`` (run by ``install.sh``; wheel users run it once) builds everything
ahead of the first use, so a first LIF call then only loads the cached library.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Union

__all__ = ["cache_root", "cpu_isa", "compiler_id", "cached_build", "is_built", "build_all"]

_DONE = "BUILT"


def cache_root() -> Path:
    """``$SPIKING_CACHE`` or ``~/.cache/spiking``."""
    return Path(os.environ.get("SPIKING_CACHE") or Path.home() / ".cache" / "spiking")


@lru_cache(maxsize=None)
def cpu_isa() -> str:
    """The CPU's instruction-set flags (``/proc/cpuinfo``), sorted; the machine name elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    import platform

    return platform.machine()


@lru_cache(maxsize=None)
def compiler_id(command: str) -> str:
    """Resolved path and first ``--version`` line of a compiler; ``RuntimeError`` if it is missing."""
    exe = shutil.which(command)
    if exe is None:
        raise RuntimeError(f"no compiler {command!r} on PATH")
    res = subprocess.run([exe, "--version"], capture_output=True, text=True)
    first = (res.stdout or res.stderr).splitlines()[:1]
    return f"{os.path.realpath(exe)} {first[0] if first else ''}"


def _key(parts: Iterable[Union[bytes, str]]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def is_built(kind: str, key_parts: Iterable[Union[bytes, str]]) -> bool:
    """Whether a finished build for this key is in the cache (nothing is built)."""
    return (cache_root() / f"{kind}-{_key(key_parts)}" / _DONE).is_file()


def cached_build(kind: str, key_parts: Iterable[Union[bytes, str]], build: Callable[[Path], None],
                 what: str) -> Path:
    """Directory ``<cache>/<kind>-<key>`` holding a finished build; ``build(directory)`` runs only
    when no finished build exists for this key (under a file lock, announced on stderr)."""
    from filelock import FileLock

    root = cache_root()
    directory = root / f"{kind}-{_key(key_parts)}"
    if (directory / _DONE).is_file():
        return directory
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory) + ".lock"):
        if (directory / _DONE).is_file():  # a concurrent process finished it while we waited
            return directory
        if directory.exists():  # left by a failed or killed build (its tool's own lock files too)
            shutil.rmtree(directory)
        directory.mkdir()
        print(f"spiking: compiling {what} into {directory} (once per toolchain and CPU) ...", end="",
              file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            build(directory)
        except BaseException:
            print(" failed", file=sys.stderr, flush=True)
            raise
        seconds = time.perf_counter() - start
        (directory / _DONE).write_text(f"{seconds:.1f} s\n")
        print(f" done in {seconds:.1f} s", file=sys.stderr, flush=True)
    return directory


def build_all() -> list[tuple[str, bool, str]]:
    """Build (or find cached) every native library; ``[(name, ok, detail)]``, never raises."""
    import torch

    from .kernels import cpu as neuron_cpu
    from .kernels import dsr_stack, neuron_cuda_node, oja_iterations, online_lif, pixels, rlif_cpu, spike_matmul
    from .memory import cpu as sparsey_cpu

    results = []
    ok, why = neuron_cpu.available()
    results.append(("fused CPU neuron extension", ok, why or neuron_cpu.build_directory()))
    modules = [("fused CPU RLIF extension", rlif_cpu), ("event-driven CPU spike-matmul extension", spike_matmul),
               ("fused CPU DSR-stack extension", dsr_stack), ("native Oja-iterations op", oja_iterations),
               ("native online-LIF ops", online_lif), ("CPU pixel-transform extension", pixels)]
    if torch.version.cuda is not None:  # a CUDA build of torch: the C++ launcher of the CUDA neuron kernels
        modules.append(("C++ launcher of the CUDA neuron kernels", neuron_cuda_node))
    for name, module in modules:
        ext = module.extension()
        ok = ext.available()
        results.append((name, ok, ext.error() or ext.directory()))
    ok = sparsey_cpu.available()
    results.append(("Sparsey C library", ok, sparsey_cpu.build_error() or sparsey_cpu.build_directory()))
    return results
