"""Every cuda/*.cu compiles to PTX with nvcc (skipped only when nvcc is absent).

neurons.cu is compiled with every neuron x storage type x surrogate of the template instantiated,
and again as the CuPy loaders use it: their source text and options, with exactly the kernel names
they ask NVRTC for (LIF's four storage types included).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

CUDA_DIR = Path(__file__).resolve().parents[1] / "cuda"
NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")


def _neuron_entries() -> int:
    """nrn_forward + 4 nrn_backward per (neuron, storage type): float/double for every neuron of the
    registry, fp16/bf16 for LIF (the STORAGE16 definition)."""
    from spiking.kernels import neuron_cuda

    return 5 * (2 * len(neuron_cuda.TYPES) + 2)


def _arch() -> str:
    """Lowest virtual architecture this nvcc supports (>= compute_60 for double atomicAdd)."""
    out = subprocess.run([NVCC, "--list-gpu-arch"], capture_output=True, text=True)
    archs = sorted(int(m) for m in re.findall(r"compute_(\d+)", out.stdout))
    archs = [a for a in archs if a >= 60] or [75]
    return f"compute_{archs[0]}"


def _ptx(src: Path, out: Path, *defines: str) -> str:
    cmd = [NVCC, "-ptx", f"-arch={_arch()}", "-std=c++17", "-fmad=false", f"-I{CUDA_DIR}", *defines, str(src),
           "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stderr}"
    assert "warning" not in res.stderr.lower(), res.stderr
    return out.read_text()


@pytest.mark.parametrize("cu", sorted(CUDA_DIR.glob("*.cu")), ids=lambda p: p.name)
def test_cu_compiles_to_ptx(cu, tmp_path):
    ptx = _ptx(cu, tmp_path / (cu.stem + ".ptx"))
    entries = re.findall(r"^\.visible \.entry", ptx, flags=re.M)
    assert entries, f"{cu.name}: no kernels in the PTX"
    if cu.name == "neurons.cu":
        assert len(entries) == _neuron_entries()


def _loader_names() -> list[str]:
    """Every kernel name the CuPy loaders can ask for: LIF (spiking.kernels.cuda) in its four
    storage types, the other template neurons (spiking.kernels.neuron_cuda) in float/double."""
    from spiking.kernels import cuda as kc
    from spiking.kernels import neuron_cuda as nc

    names = [f"nrn_forward<nrn::LIF,{t}>" for t in kc.SUPPORTED_DTYPES.values()]
    names += [f"nrn_backward<nrn::LIF,{sg},{t}>" for t in kc.SUPPORTED_DTYPES.values() for sg in range(4)]
    for neuron in nc.TYPES:
        for dtype in nc.DTYPES:
            names.append(nc.kernel_name("forward", neuron, dtype))
            names += [nc.kernel_name("backward", neuron, dtype, sg) for sg in range(4)]
    return sorted(set(names))


def test_loader_source_and_names_compile(tmp_path):
    """The loaders' source (with NRN_NO_INSTANTIATE, as NVRTC gets it) plus an explicit
    instantiation of each name they use compiles with nvcc and gives one kernel per name."""
    from spiking.kernels import cuda as kc

    assert "-DNRN_NO_INSTANTIATE" in kc.nvrtc_options()
    include = [o[2:] for o in kc.nvrtc_options() if o.startswith("-I")]
    assert include and (Path(include[0]) / "neuron_template.cuh").is_file()
    src = tmp_path / "loader.cu"
    inst = []
    for name in _loader_names():
        kernel, args = name.split("<", 1)
        inst.append(f"INST({kernel}, {args[:-1]})")
    src.write_text("#define NRN_NO_INSTANTIATE\n" + kc.kernel_source() + "\n" + _INST_MACROS + "\n".join(inst) + "\n")
    cmd = [NVCC, "-ptx", f"-arch={_arch()}", "-std=c++17", "-fmad=false", f"-I{include[0]}", str(src), "-o",
           str(tmp_path / "x.ptx")]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    entries = re.findall(r"^\.visible \.entry", (tmp_path / "x.ptx").read_text(), flags=re.M)
    assert len(entries) == len(_loader_names())


# explicit instantiation of one loader name: INST(nrn_forward, D, T) / INST(nrn_backward, D, SG, T)
_INST_MACROS = """
#define INST(kernel, ...) INST_##kernel(__VA_ARGS__)
#define INST_nrn_forward(D, T) template __global__ void nrn_forward<D, T>( \\
    const T*, const T*, const lif::Store<T>::C*, T*, T*, T*, T*, int*, long long, long long, long long, int, int, int);
#define INST_nrn_backward(D, SG, T) template __global__ void nrn_backward<D, SG, T>( \\
    const T*, const T*, const lif::Store<T>::C*, const T*, const T*, const T*, T*, T*, double*, long long, \\
    long long, int, int, int, int, double);
"""


def _nvrtc_names(source: str, names: list[str]) -> set:
    """The name expressions CuPy's NVRTC (no GPU needed) compiles from ``cuda/<source>`` with the
    loader's options; skips without CuPy or its NVRTC library."""
    compiler = pytest.importorskip("cupy.cuda.compiler", reason="CuPy not installed")
    program = getattr(compiler, "_NVRTCProgram", None)
    if program is None:
        pytest.skip("this CuPy has no _NVRTCProgram")
    from spiking.kernels import cuda as kc

    try:
        prog = program(kc.kernel_source(source), name=source, name_expressions=names)
        ptx, mapping = prog.compile(kc.nvrtc_options() + ("-arch=compute_75",))
    except Exception as exc:  # NVRTC library missing in this CuPy install
        if "nvrtc" in str(exc).lower() and "compil" not in str(exc).lower():
            pytest.skip(f"NVRTC unavailable: {exc}")
        raise
    return set(mapping)


def test_cupy_nvrtc_compiles_every_name_expression():
    """With CuPy's NVRTC, the loader's options and name expressions of neurons.cu compile."""
    names = _loader_names()
    assert _nvrtc_names("neurons.cu", names) == set(names)


@pytest.mark.parametrize("source", ["rlif.cu", "online_lif.cu"])
def test_cupy_nvrtc_compiles_the_other_loaders_names(source):
    """rlif.cu and online_lif.cu with the shared loader's options and every name its wrapper asks for."""
    from spiking.kernels import online_lif_cuda, rlif_cuda

    module = rlif_cuda if source == "rlif.cu" else online_lif_cuda
    names = sorted({module.kernel_name(d, dtype, sg) for d in ("forward", "backward")
                    for dtype in (torch.float32, torch.float64) for sg in range(4)})
    assert _nvrtc_names(source, names) == set(names)
