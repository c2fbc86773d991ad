"""The native source files shipped inside the ``spiking`` package, found through ``importlib.resources``.

The repository keeps the CUDA sources at its top level (``cuda/``); ``spiking/_cuda`` is a symlink
to it, and the wheel carries the files under ``spiking/_cuda/`` (``pyproject.toml`` package-data),
so the same lookup works in a checkout, an editable install and a wheel install. The C/C++ sources
of the CPU paths sit next to their loaders (``spiking/kernels/neuron_cpu.cpp``,
``spiking/memory/_csa_cpu.c``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["native_source", "cuda_source"]


def native_source(package: str, name: str) -> Path:
    """File ``name`` of package ``package`` (e.g. ``("spiking.kernels", "neuron_cpu.cpp")``) as a real
    path (the compilers need one); ``RuntimeError`` naming the file when it is missing."""
    path = Path(str(resources.files(package) / name))
    if not path.is_file():
        raise RuntimeError(
            f"native source {name!r} of {package} is missing (looked for {path}); this installation of "
            "spiking is incomplete: reinstall it from a wheel or checkout that has the file"
        )
    return path


def cuda_source(name: str) -> Path:
    """``cuda/<name>`` (``neurons.cu``, ``neurons/lif.cuh``, ``sparsey.cu``, ...) as installed with the package."""
    return native_source("spiking", f"_cuda/{name}")
