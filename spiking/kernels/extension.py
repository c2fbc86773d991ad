"""One C++ extension built on first use into the build cache (:func:`spiking.build.cached_build`).

The sources are copied into a directory keyed by their contents and :func:`toolchain_key`
(compiler, flags, torch, ABI, CPU instruction set), compiled there with
``torch.utils.cpp_extension.load`` (``-O3 -ffp-contract=off``, OpenMP) and imported from there by
later processes; ``spiking build`` builds every extension ahead of time.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sysconfig
import threading
from pathlib import Path
from typing import Callable, Optional, Union

import torch

from ..build import cached_build, compiler_id, cpu_isa, is_built

__all__ = ["CachedExtension", "toolchain_key", "import_built"]

_CFLAGS = ["-O3", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno", "-fopenmp"]


def cflags() -> list[str]:
    """The compiler flags, plus ``-mavx2`` when this CPU has AVX2."""
    return _CFLAGS + (["-mavx2"] if "avx2" in cpu_isa().split() else [])


def toolchain_key() -> list:
    """What a built C++ extension depends on besides its sources: flags, the compiler torch uses
    (``$CXX`` or ``c++``) and its version, torch, its C++ ABI, Python's extension suffix, CPU ISA."""
    return [" ".join(cflags()), compiler_id(os.environ.get("CXX", "c++")), f"torch {torch.__version__}",
            f"cxx11abi {torch.compiled_with_cxx11_abi()}", str(sysconfig.get_config_var("EXT_SUFFIX")), cpu_isa()]


def _module_name(directory: Path) -> str:
    return directory.name.replace("-", "_")


def import_built(directory: Path):
    """Import the extension module built into ``directory`` by ``cpp_extension.load``."""
    name = _module_name(directory)
    spec = importlib.util.spec_from_file_location(name, directory / f"{name}.so")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


Source = Union[Path, tuple[Path, str]]


def _split(item: Source) -> tuple[Path, str]:
    """``(file, its path in the build directory)``: a bare path is copied under its own name."""
    return item if isinstance(item, tuple) else (item, item.name)


class CachedExtension:
    """``load()`` builds (once per key) or imports the extension compiled from the first ``units``
    of ``sources()`` (the rest are headers); ``RuntimeError`` naming the cause when impossible
    (remembered; prefixed by ``error_prefix``). ``sources()`` gives paths, or ``(path, relative
    destination)`` for headers included from a subfolder (``neurons/if.cuh``)."""

    def __init__(self, kind: str, sources: Callable[[], list[Source]], what: str, units: int = 1,
                 error_prefix: str = ""):
        self.kind, self.sources, self.what, self.units, self.error_prefix = kind, sources, what, units, error_prefix
        self._lock = threading.Lock()
        self._module = None
        self._error: Optional[str] = None
        self._directory: Optional[Path] = None

    def _compile(self, directory: Path) -> None:
        from torch.utils import cpp_extension

        files = [_split(item) for item in self.sources()]
        for src, rel in files:
            (directory / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, directory / rel)
        cpp_extension.load(name=_module_name(directory), sources=[str(directory / rel) for _, rel in files[:self.units]],
                           extra_include_paths=[str(directory)], extra_cflags=cflags(), extra_ldflags=["-fopenmp"],
                           build_directory=str(directory), verbose=False)

    def key(self) -> list:
        """What the build depends on: source contents (not paths) and :func:`toolchain_key`."""
        return [_split(item)[0].read_bytes() for item in self.sources()] + toolchain_key()

    def load(self):
        with self._lock:
            if self._module is None and self._error is None:
                try:
                    self._directory = cached_build(self.kind, self.key(), self._compile, self.what)
                    self._module = import_built(self._directory)
                except Exception as exc:  # missing source, compiler or ninja; compile or load failure
                    self._error = f"{self.error_prefix}{self.what} is unavailable: {type(exc).__name__}: {exc}"
            if self._module is None:
                raise RuntimeError(self._error)
            return self._module

    def built(self) -> bool:
        """Whether :meth:`load` would only import (loaded already, or a finished build is cached)."""
        if self._module is not None:
            return True
        try:
            return is_built(self.kind, self.key())
        except Exception:  # a missing source or compiler: load() reports it
            return False

    def available(self) -> bool:
        try:
            self.load()
            return True
        except RuntimeError:
            return False

    def error(self) -> str:
        """Why the extension could not be built ("" when it was, or was not tried yet)."""
        return self._error or ""

    def loaded(self):
        """The module if it is loaded already, else None (never builds)."""
        return self._module

    def directory(self) -> str:
        """Where the loaded extension lives (empty before :meth:`load`)."""
        return "" if self._directory is None else str(self._directory)
