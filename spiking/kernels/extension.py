"""One C++ extension built on first use into the build cache (:func:`spiking.build.cached_build`).

The sources are copied into a directory keyed by their contents and :func:`.cpu.toolchain_key`
(compiler, flags, torch, ABI, CPU instruction set), compiled there with
``torch.utils.cpp_extension.load`` (``-O3 -ffp-contract=off``, OpenMP) and imported from there by
later processes; ``spiking build`` builds every extension ahead of time.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Callable, Optional, Union

__all__ = ["CachedExtension"]


Source = Union[Path, tuple[Path, str]]


def _split(item: Source) -> tuple[Path, str]:
    """``(file, its path in the build directory)``: a bare path is copied under its own name."""
    return item if isinstance(item, tuple) else (item, item.name)


class CachedExtension:
    """``load()`` builds (once per key) or imports the extension whose main file is ``main`` (the
    first of ``sources()``); ``RuntimeError`` naming the cause when impossible (remembered).
    ``sources()`` gives paths, or ``(path, relative destination)`` for headers included from a
    subfolder (``neurons/if.cuh``)."""

    def __init__(self, kind: str, sources: Callable[[], list[Source]], what: str):
        self.kind, self.sources, self.what = kind, sources, what
        self._lock = threading.Lock()
        self._module = None
        self._error: Optional[str] = None
        self._directory: Optional[Path] = None

    def _compile(self, directory: Path) -> None:
        from torch.utils import cpp_extension

        from .cpu import _cflags, _module_name

        files = [_split(item) for item in self.sources()]
        for src, rel in files:
            (directory / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, directory / rel)
        cpp_extension.load(name=_module_name(directory), sources=[str(directory / files[0][1])],
                           extra_include_paths=[str(directory)], extra_cflags=_cflags(), extra_ldflags=["-fopenmp"],
                           build_directory=str(directory), verbose=False)

    def load(self):
        from ..build import cached_build
        from .cpu import import_built, toolchain_key

        with self._lock:
            if self._module is None and self._error is None:
                try:
                    key = [_split(item)[0].read_bytes() for item in self.sources()] + toolchain_key()
                    self._directory = cached_build(self.kind, key, self._compile, self.what)
                    self._module = import_built(self._directory)
                except Exception as exc:  # missing source, compiler or ninja; compile or load failure
                    self._error = f"{self.what} is unavailable: {type(exc).__name__}: {exc}"
            if self._module is None:
                raise RuntimeError(self._error)
            return self._module

    def available(self) -> bool:
        try:
            self.load()
            return True
        except RuntimeError:
            return False

    def error(self) -> str:
        """Why the extension could not be built ("" when it was, or was not tried yet)."""
        return self._error or ""

    def directory(self) -> str:
        """Where the loaded extension lives (empty before :meth:`load`)."""
        return "" if self._directory is None else str(self._directory)
