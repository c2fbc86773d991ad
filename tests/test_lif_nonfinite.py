"""NaN/inf in x: the fused kernels check x inside their own forward pass and raise the error of the
torch reference path (``ValueError: x contains NaN or inf``); ``check_inputs=False`` skips it.

CPU: every dtype of the fused path, NaN / +inf / -inf at the first, a middle and the last element,
with and without a gradient, and across several parallel chunks. CUDA: the same on a GPU (skipped
without one); the kernel's PTX build is covered by tests/test_cuda_compile.py.
"""

from __future__ import annotations

import pytest
import torch

from spiking.kernels import cpu
from spiking.neuron.functional import lif_multistep
from spiking.neuron.module import LIF
from test_kernels_cuda import _gpu_ready  # the same skip condition as the other CuPy tests

BAD = {"nan": float("nan"), "+inf": float("inf"), "-inf": float("-inf")}
SHAPE = (6, 3, 700)  # N = 2100 neurons: five chunks of 512, so the last element is in a partial chunk


def _where(n: int) -> dict:
    return {"first": 0, "middle": n // 2 + 1, "last": n - 1}


def _bad_input(dtype, value, index, device="cpu"):
    x = (torch.rand(SHAPE, device=device) * 2.0).to(dtype)
    x.view(-1)[index] = value
    return x


@pytest.mark.parametrize("dtype", cpu.SUPPORTED_DTYPES, ids=str)
@pytest.mark.parametrize("bad", sorted(BAD))
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_fused_cpu_raises_for_nonfinite_x(dtype, bad, where):
    index = _where(torch.Size(SHAPE).numel())[where]
    x = _bad_input(dtype, BAD[bad], index)
    with pytest.raises(ValueError, match=r"^x contains NaN or inf$"):
        lif_multistep(x, backend="cpu")
    with pytest.raises(ValueError, match=r"^x contains NaN or inf$"):
        LIF(backend="cpu")(x.clone().requires_grad_())  # the training path (h_seq saved) checks too
    s = LIF(backend="cpu", check_inputs=False)(x)  # unchecked: runs, the finite neurons still spike
    assert s.shape == x.shape and s.sum() > 0


@pytest.mark.parametrize("dtype", cpu.SUPPORTED_DTYPES, ids=str)
def test_fused_cpu_accepts_finite_extremes(dtype):
    """Largest finite values and subnormals are finite: no false alarm (x - x is exactly 0)."""
    info = torch.finfo(dtype)
    x = torch.zeros(SHAPE, dtype=dtype)
    x.view(-1)[0], x.view(-1)[1], x.view(-1)[-1] = info.max, -info.max, info.tiny / 2
    s, _ = lif_multistep(x, backend="cpu")
    assert s.view(-1)[0] == 1


def test_default_lif_uses_the_fused_check():
    """Default LIF on CPU raises the same error as the reference path, for the same input."""
    x = _bad_input(torch.float32, float("nan"), 5)
    with pytest.raises(ValueError, match=r"^x contains NaN or inf$") as fused:
        LIF()(x)
    with pytest.raises(ValueError, match=r"^x contains NaN or inf$") as ref:
        LIF(backend="torch")(x)
    assert str(fused.value) == str(ref.value)


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_ready(), reason="needs a CUDA GPU and CuPy")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("bad", sorted(BAD))
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_cuda_kernel_flags_nonfinite_x(dtype, bad, where):
    index = _where(torch.Size(SHAPE).numel())[where]
    x = _bad_input(dtype, BAD[bad], index, device="cuda")
    with pytest.raises(ValueError, match=r"^x contains NaN or inf$"):
        lif_multistep(x, backend="cupy")
    # the flag was cleared: a finite input on the same stream runs
    good = (torch.rand(SHAPE, device="cuda") * 2.0).to(dtype)
    s, _ = lif_multistep(good, backend="cupy")
    assert s.sum() > 0
    LIF(backend="cupy", check_inputs=False)(x)  # unchecked: no error, no flag read
