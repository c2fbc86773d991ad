"""The event-driven spike matmul (spiking/kernels/spike_matmul_cpu.cpp) against the dense product."""
from __future__ import annotations

import pytest
import torch

from spiking.kernels import spike_matmul as sm
from spiking.plasticity.networks import HLOPMLP

pytestmark = pytest.mark.skipif(not sm.extension().available(), reason="no C++ toolchain: " + sm.extension().error())


def _spikes(m, k, density, gen, values=False):
    s = (torch.rand(m, k, generator=gen) < density).double()
    return s * torch.randn(m, k, generator=gen, dtype=torch.float64) if values else s


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 13, 5), (333, 97, 45), (64, 800, 64), (40, 300, 131)])
@pytest.mark.parametrize("values", [False, True])
@pytest.mark.parametrize("shift", [0.0, -0.61])
def test_matches_the_dense_product(dtype, shape, values, shift):
    g = torch.Generator().manual_seed(sum(shape))
    m, k, n = shape
    s = _spikes(m, k, 0.07, g, values)
    w = torch.randn(k, n, generator=g, dtype=torch.float64)
    scale = torch.tensor(0.37, dtype=dtype)
    ref = sm.spike_matmul_reference(s, w, scale.double(), shift)
    out, event = sm.extension().load().spike_matmul(s.to(dtype), w.to(dtype), scale, shift, 1.0)
    assert event and out.dtype == dtype and out.shape == (m, n)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol * k ** 0.5)


@pytest.mark.parametrize("density", [0.05, 0.6])
def test_shift_is_added_once_on_both_paths(density):
    """Event-driven (sparse) and dense-fallback (dense) inputs: ``scale·(s@w) + shift``."""
    g = torch.Generator().manual_seed(3)
    s, w = _spikes(90, 40, density, g).float(), torch.randn(40, 30, generator=g)
    out = sm.spike_matmul(s, w, 0.5, shift=1.25)
    torch.testing.assert_close(out, torch.mm(s, w) * 0.5 + 1.25, rtol=1e-5, atol=1e-5)


def test_empty_inputs():
    assert sm.spike_matmul(torch.zeros(0, 5), torch.randn(5, 3)).shape == (0, 3)
    assert torch.equal(sm.spike_matmul(torch.zeros(4, 0), torch.randn(0, 3)), torch.zeros(4, 3))


def test_all_zero_and_all_one_rows():
    w = torch.randn(50, 70, dtype=torch.float64)
    s = torch.zeros(3, 50, dtype=torch.float64)
    s[1] = 1.0
    out = sm.spike_matmul(s, w, max_density=1.0)
    assert torch.equal(out[0], torch.zeros(70, dtype=torch.float64))
    torch.testing.assert_close(out[1], w.sum(0), rtol=1e-12, atol=1e-12)


def test_dense_inputs_use_the_dense_product():
    g = torch.Generator().manual_seed(1)
    s, w = _spikes(100, 64, 0.6, g).float(), torch.randn(64, 32, generator=g)
    one = torch.tensor(1.0)
    _, event = sm.extension().load().spike_matmul(s, w, one, 0.0, sm.MAX_DENSITY)
    assert not event
    _, event = sm.extension().load().spike_matmul(_spikes(100, 64, 0.05, g).float(), w, one, 0.0, sm.MAX_DENSITY)
    assert event


def test_result_does_not_depend_on_the_thread_count():
    g = torch.Generator().manual_seed(2)
    s, w = _spikes(1000, 200, 0.1, g).float(), torch.randn(200, 300, generator=g)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = sm.spike_matmul(s, w, 0.5)
        torch.set_num_threads(2)
        two = sm.spike_matmul(s, w, 0.5)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


def test_gradient_and_non_cpu_cases_fall_back_to_torch():
    w = torch.randn(20, 10, requires_grad=True)
    s = (torch.rand(5, 20) < 0.1).float()
    out = sm.spike_matmul(s, w, 2.0)
    assert out.grad_fn is not None  # the reference path, so autograd works
    out.sum().backward()
    torch.testing.assert_close(w.grad, 2.0 * s.sum(0, keepdim=True).t().expand(20, 10))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"s \[M, K\] and w \[K, N\]"):
        sm.spike_matmul(torch.zeros(3, 4), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="max_density"):
        sm.spike_matmul(torch.zeros(3, 4), torch.zeros(4, 2), max_density=2.0)
    with pytest.raises(TypeError, match="one floating dtype"):
        sm.spike_matmul(torch.zeros(3, 4), torch.zeros(4, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="one floating dtype"):
        sm.spike_matmul(torch.zeros(3, 4, dtype=torch.int64), torch.zeros(4, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="single value"):
        sm.spike_matmul(torch.zeros(3, 4), torch.zeros(4, 2), scale=torch.ones(2))
    with pytest.raises(ValueError, match="shift"):
        sm.spike_matmul(torch.zeros(3, 4), torch.zeros(4, 2), shift=float("nan"))


def test_dsr_network_uses_it_and_matches_the_dense_path(monkeypatch):
    """The unfused DSR MLP's hidden-to-hidden currents go through spike_matmul; the dense reference
    gives the same logits (up to summation order, which may move a spike on the threshold)."""
    import spiking.plasticity.networks as nets

    torch.manual_seed(0)
    model = HLOPMLP((30, 40, 40, 5), "dsr").eval()
    model._fused_dsr = lambda x: False  # the fused stack (tests/test_dsr_stack.py) sums in its own kernel
    x = torch.randn(64, 30) * 3
    calls = []
    real = nets.spike_matmul
    monkeypatch.setattr(nets, "spike_matmul", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    with torch.inference_mode():
        fast = model(x)
    assert calls == [torch.Size([model.T * 64, 40])]
    monkeypatch.setattr(nets, "spike_matmul", sm.spike_matmul_reference)
    with torch.inference_mode():
        dense = model(x)
    close = torch.isclose(fast, dense, rtol=1e-4, atol=1e-4).all(1)
    assert close.float().mean() >= 0.95, close


@pytest.mark.parametrize("shape", [(800, 784), (13, 29), (1, 5), (9, 8), (33, 70), (64, 1), (40, 40), (0, 5), (3, 0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_weight_rows_is_the_exact_transpose(shape, dtype):
    w = torch.randn(*shape, dtype=dtype, requires_grad=True)
    rows = sm.weight_rows(w)
    assert rows.is_contiguous() and not rows.requires_grad
    assert torch.equal(rows, w.detach().t())  # 8 × 8 register blocks, 32 × 32 tiles and the edges
    assert torch.equal(sm.weight_rows(w[:, 1:]), w.detach()[:, 1:].t())  # a strided weight
    with pytest.raises(ValueError, match="2-d"):
        sm.weight_rows(w.detach().reshape(-1))
