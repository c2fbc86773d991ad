"""Every cuda/*.cu compiles to PTX with nvcc (skipped only when nvcc is absent).

lif.cu is compiled with every template configuration instantiated (LIF_INSTANTIATE_ALL), and
again from the exact source text spiking.kernels.cuda hands to NVRTC (lif_step.cuh inlined).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

CUDA_DIR = Path(__file__).resolve().parents[1] / "cuda"
NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH")

# lif_forward: 4 dtypes x hard/soft x decay_input; lif_backward: 4 dtypes x 4 surrogates x hard/soft x detach
LIF_ENTRIES = 4 * 2 * 2 + 4 * 4 * 2 * 2


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
    defines = ("-DLIF_INSTANTIATE_ALL",) if cu.name == "lif.cu" else ()
    ptx = _ptx(cu, tmp_path / (cu.stem + ".ptx"), *defines)
    entries = re.findall(r"^\.visible \.entry", ptx, flags=re.M)
    assert entries, f"{cu.name}: no kernels in the PTX"
    if cu.name == "lif.cu":
        assert len(entries) == LIF_ENTRIES


def test_nvrtc_source_compiles(tmp_path):
    """The inlined source used by the CuPy loader is self-contained (no include path needed)."""
    from spiking.kernels.cuda import kernel_source

    src = tmp_path / "lif_inlined.cu"
    src.write_text(kernel_source())
    assert '#include "lif_step.cuh"' not in src.read_text()
    cmd = [NVCC, "-ptx", f"-arch={_arch()}", "-fmad=false", "-DLIF_INSTANTIATE_ALL", str(src), "-o",
           str(tmp_path / "x.ptx")]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert len(re.findall(r"^\.visible \.entry", (tmp_path / "x.ptx").read_text(), flags=re.M)) == LIF_ENTRIES


def test_cupy_nvrtc_compiles_every_name_expression():
    """With CuPy's NVRTC (no GPU needed), the loader's options and name expressions compile."""
    compiler = pytest.importorskip("cupy.cuda.compiler", reason="CuPy not installed")
    program = getattr(compiler, "_NVRTCProgram", None)
    if program is None:
        pytest.skip("this CuPy has no _NVRTCProgram")
    from spiking.kernels import cuda as kc

    b = ("true", "false")
    names = [f"lif_forward<{t},{h},{d}>" for t in kc.SUPPORTED_DTYPES.values() for h in b for d in b]
    names += [f"lif_backward<{t},{sg},{h},{d}>" for t in kc.SUPPORTED_DTYPES.values() for sg in range(4)
              for h in b for d in b]
    try:
        prog = program(kc.kernel_source(), name="lif.cu", name_expressions=names)
        ptx, mapping = prog.compile(kc.NVRTC_OPTIONS + ("-arch=compute_75",))
    except Exception as exc:  # NVRTC library missing in this CuPy install
        if "nvrtc" in str(exc).lower() and "compil" not in str(exc).lower():
            pytest.skip(f"NVRTC unavailable: {exc}")
        raise
    assert set(mapping) == set(names)
