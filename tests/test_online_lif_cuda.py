"""OTTT's online LIF layer on the GPU (cuda/online_lif.cu through spiking/kernels/online_lif_cuda.py)
against the reference path on the same GPU (``backend="torch"``: the multi-step LIF, z = V + V_th (S − 1),
the traces as L S, torch's surrogate). Skipped without CUDA + CuPy; the choice of path runs everywhere."""
import pytest
import torch

from spiking.kernels import online_lif, online_lif_cuda
from spiking.neuron import LIF
from spiking.neuron.online import _fused_ops, lif_online

needs_gpu = pytest.mark.skipif(not (torch.cuda.is_available() and online_lif_cuda.usable(torch.zeros(1, device="cuda"))),
                               reason="needs a CUDA GPU and CuPy")
SURROGATES = ("sigmoid", "atan", "fast_sigmoid", "triangle")


def run(x, g, be, steps=None, lam=0.5, **kw):
    neuron = LIF(v_reset=None, backend=be, **kw)
    xx = x.clone().requires_grad_()
    s, a, r = lif_online(xx, neuron, steps=steps, trace_lambda=lam)
    (s * g).sum().backward()
    return s, a, r, xx.grad


def data(dtype, shape=(6, 5, 300), seed=0, device="cuda"):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen, dtype=dtype) * 1.5 + 0.8
    return x.to(device), torch.randn(*shape, generator=gen, dtype=dtype).to(device)


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
    x, g = data(dtype)
    kw = dict(tau=2.0, v_threshold=1.0, decay_input=decay_input, surrogate=surrogate)
    assert _fused_ops("cupy", x) is online_lif_cuda
    s, a, r, gx = run(x, g, "cupy", **kw)
    s_ref, a_ref, r_ref, gx_ref = run(x, g, "torch", **kw)
    assert 0 < float(s.detach().mean()) < 1 and torch.equal(s, s_ref)
    assert torch.equal(a, a_ref) and torch.equal(r, r_ref)  # λ = 0.5: every trace is exact either way
    assert torch.equal(r.view(6, 2, 5, 300)[:, 0], s) and torch.equal(r.view(6, 2, 5, 300)[:, 1], a)
    assert float(gx.abs().sum()) > 0
    # the kernel's σ' against torch's ops (its exp, FMA contraction): a few ulp of σ'(0), its maximum
    peak = float(LIF(surrogate=surrogate).surrogate.grad(torch.zeros((), dtype=dtype)))
    assert torch.all((gx - gx_ref).abs() <= 8 * torch.finfo(dtype).eps * peak * g.abs()), (gx - gx_ref).abs().max()


@pytest.mark.gpu
@needs_gpu
def test_cuda_rows_with_steps_equal_the_time_major_call_and_nan_is_caught():
    x, g = data(torch.float32)
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
