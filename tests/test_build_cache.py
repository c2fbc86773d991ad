"""The native build cache (spiking/build.py) and the packaged native sources (spiking/native_sources.py).

A build runs once per key (sources, compiler, flags, torch, CPU ISA) and is announced in one line
with its duration; concurrent builds of one key are serialised by a file lock; a failed build
leaves nothing that counts as built; the key ignores where the sources live (a second checkout
reuses the build); `spiking build` builds everything.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from spiking import build
from spiking.native_sources import cuda_source

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKING_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_build_runs_once_per_key_and_says_so(cache, capsys):
    calls = []

    def compile_(directory: Path) -> None:
        calls.append(directory)
        (directory / "lib.so").write_text("binary")

    d1 = build.cached_build("demo", [b"source", "flags"], compile_, "the demo library")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "compiling the demo library" in err and " done in " in err
    d2 = build.cached_build("demo", [b"source", "flags"], compile_, "the demo library")
    assert d1 == d2 and len(calls) == 1 and capsys.readouterr().err == ""
    d3 = build.cached_build("demo", [b"source", "other flags"], compile_, "the demo library")
    assert d3 != d1 and len(calls) == 2 and d1.parent == d3.parent == cache


def test_failed_build_is_not_reused(cache, capsys):
    def broken(directory: Path) -> None:
        raise RuntimeError("compiler exploded")

    with pytest.raises(RuntimeError, match="compiler exploded"):
        build.cached_build("demo", [b"x"], broken, "the demo library")
    assert capsys.readouterr().err.rstrip().endswith("failed")
    built = []
    build.cached_build("demo", [b"x"], lambda d: built.append(d), "the demo library")
    assert built, "a failed build must not be marked as built"


def test_concurrent_builds_are_locked(cache):
    """Two processes asking for the same key: one compiles, the other waits and reuses it."""
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from spiking.build import cached_build
        def compile_(d):
            with open({str(cache.parent / "calls.txt")!r}, "a") as f:
                f.write("build\\n")
            time.sleep(1.0)
            (d / "lib.so").write_text("binary")
        print(cached_build("demo", [b"same"], compile_, "the demo library"))
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert outs[0][0] == outs[1][0]
    assert (cache.parent / "calls.txt").read_text().count("build") == 1


def test_lif_build_key_ignores_the_checkout_path(tmp_path, monkeypatch):
    """The same sources found in another checkout give the same key (so the same build)."""
    from spiking.kernels import cpu

    here = cpu.build_key()
    other = tmp_path / "other-checkout"
    other.mkdir()
    copies = {}
    for item in cpu._sources():  # neuron_cpu*.cpp, headers, lif_step.cuh, the template and definitions
        src = item[0] if isinstance(item, tuple) else item
        copies[src.name] = other / src.name
        copies[src.name].write_bytes(src.read_bytes())
    monkeypatch.setattr(cpu._EXT, "sources", lambda: list(copies.values()))
    assert cpu.build_key() == here
    copies["lif_step.cuh"].write_bytes(copies["lif_step.cuh"].read_bytes() + b"\n// changed\n")
    assert cpu.build_key() != here


def test_key_names_compiler_torch_and_cpu():
    import torch

    from spiking.kernels import cpu

    key = [p for p in cpu.build_key() if isinstance(p, str)]
    assert f"torch {torch.__version__}" in key and build.cpu_isa() in key
    assert build.compiler_id(os.environ.get("CXX", "c++")) in key


def test_native_sources_are_packaged_files():
    for name in ("neurons.cu", "neuron_template.cuh", "neurons/lif.cuh", "lif_step.cuh", "sparsey.cu"):
        assert cuda_source(name).read_bytes() == (REPO / "cuda" / name).read_bytes()
    with pytest.raises(RuntimeError, match="missing.*no_such.cu"):
        cuda_source("no_such.cu")


def test_spiking_build_command(capsys):
    """`spiking build` reports every native library as built, in finished cache directories."""
    from spiking.cli import main

    assert main(["build"]) == 0
    lines = capsys.readouterr().out.splitlines()
    cuda_torch = ["C++ launcher of the CUDA neuron kernels"] if torch.version.cuda is not None else []
    assert [line.split(":")[0] for line in lines] == ["fused CPU neuron extension", "fused CPU RLIF extension",
                                                      "event-driven CPU spike-matmul extension",
                                                      "fused CPU DSR-stack extension", "native Oja-iterations op",
                                                      "native online-LIF ops", "CPU pixel-transform extension",
                                                      *cuda_torch, "Sparsey C library"]
    for line in lines:
        directory = Path(line.split("(", 1)[1].rstrip(")"))
        assert ": ok (" in line and (directory / "BUILT").is_file()


def test_every_native_source_is_package_data():
    """Each C/C++/CUDA file of the repository matches a package-data pattern of pyproject.toml
    (the wheel check in .ci/wheel_check installs and uses them)."""
    import fnmatch
    import tomllib

    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert (REPO / "spiking" / "_cuda").resolve() == (REPO / "cuda").resolve()
    native = (".c", ".cpp", ".h", ".cu", ".cuh")
    files = [p for p in (REPO / "spiking").rglob("*") if p.suffix in native]  # rglob skips the symlink
    files += [REPO / "spiking" / "_cuda" / p.name for p in (REPO / "cuda").iterdir() if p.suffix in native]
    files += [REPO / "spiking" / "_cuda" / "neurons" / p.name for p in (REPO / "cuda" / "neurons").iterdir()
              if p.suffix in native]
    assert {p.name for p in files} >= {"neuron_cpu.cpp", "_csa_cpu.c", "neurons.cu", "lif.cuh", "lif_step.cuh",
                                       "sparsey.cu"}
    for path in files:
        rel = path.relative_to(REPO / "spiking")
        in_package = rel.parts[0] != "_cuda" and any(fnmatch.fnmatch(path.name, pat) for pat in data["*"])
        in_cuda = any(fnmatch.fnmatch(str(rel), pat) for pat in data["spiking"])
        assert in_package or in_cuda, f"{rel} would be missing from the wheel"


def test_killed_build_leaves_nothing_that_blocks_the_next(cache):
    """A build killed mid-way leaves a partial folder (with e.g. torch's own ``lock`` baton, which
    would make the next cpp_extension build wait forever): the next build starts from a clean folder."""
    key = [b"src"]
    directory = cache / f"demo-{build._key(key)}"
    directory.mkdir(parents=True)
    (directory / "lock").write_text("")
    (directory / "half.o").write_text("partial")
    seen = []
    build.cached_build("demo", key, lambda d: seen.append(sorted(p.name for p in d.iterdir())), "the demo library")
    assert seen == [[]]
