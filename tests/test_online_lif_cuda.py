"""OTTT's online LIF layer on the GPU (cuda/online_lif.cu through spiking/kernels/online_lif_cuda.py)
against the reference path on the same GPU (``backend="torch"``: the multi-step LIF, z = V + V_th (S − 1),
the traces as L S, torch's surrogate). Skipped without CUDA + CuPy; the choice of path runs everywhere."""
import pytest
import torch

from spiking.kernels import online_lif, online_lif_cuda
from spiking.neuron import LIF
from spiking.neuron.online import _fused_ops, lif_online
from test_online_lif import assert_fused_matches_reference, data, run  # the CPU ops' cases, on the GPU

needs_gpu = pytest.mark.skipif(not (torch.cuda.is_available() and online_lif_cuda.usable(torch.zeros(1, device="cuda"))),
                               reason="needs a CUDA GPU and CuPy")
SURROGATES = ("sigmoid", "atan", "fast_sigmoid", "triangle")


def test_the_fused_path_is_chosen_per_device_and_backend():
    x = torch.zeros(2, 3)
    assert _fused_ops("torch", x) is None and _fused_ops("cupy", x) is None  # CPU tensor: no CUDA kernels
    assert _fused_ops("cpu", x) is (online_lif if online_lif.usable(x) else None)
    assert not online_lif_cuda.usable(x) and not online_lif_cuda.usable(torch.zeros(2, dtype=torch.int32))
    assert online_lif_cuda.kernel_name("backward", torch.float64, 2) == "online_backward<2,double>"


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("decay_input", [False, True])
def test_cuda_kernels_equal_the_reference_path(dtype, surrogate, decay_input):
    assert _fused_ops("cupy", torch.zeros(2, device="cuda")) is online_lif_cuda
    # against torch's ops on the GPU (their FMA contraction, the kernels' exp): within 8 ulp of σ'(0)
    assert_fused_matches_reference("cupy", dtype, surrogate, decay_input, device="cuda")


@pytest.mark.gpu
@needs_gpu
def test_cuda_rows_with_steps_equal_the_time_major_call_and_nan_is_caught():
    x, g = data(torch.float32, device="cuda")
    flat, flat_g = x.reshape(30, 300), g.reshape(30, 300)
    s3, a3, r3, gx3 = run(x, g, "cupy", lam=0.3)
    s2, a2, r2, gx2 = run(flat, flat_g, "cupy", steps=6, lam=0.3)
    assert s2.shape == (30, 300) and r2.shape == (60, 300)
    assert torch.equal(s2, s3.reshape(30, 300)) and torch.equal(a2, a3.reshape(30, 300))
    assert torch.equal(r2, r3.reshape(60, 300)) and torch.equal(gx2, gx3.reshape(30, 300))
    ref = run(flat, flat_g, "torch", steps=6, lam=0.3)[1]  # λ = 0.3: recurrence vs L S, rounding apart
    assert torch.allclose(a2, ref, rtol=1e-6, atol=1e-6) and float(a2.max()) > 1
    bad = x.clone()
    bad[3, 2, 17] = float("nan")
    with pytest.raises(ValueError, match="contains NaN or inf"):
        lif_online(bad, LIF(v_reset=None), trace_lambda=0.5)
    lif_online(bad, LIF(v_reset=None, check_inputs=False), trace_lambda=0.5)  # the check is off
    s, _, _ = lif_online(x, LIF(v_reset=None), trace_lambda=0.5)  # the flag was reset
    assert torch.equal(s, s3)
