"""OTTT's native online-LIF ops (spiking/kernels/online_lif_cpu.cpp) against the reference path
(``backend="torch"``: the multi-step LIF, z = V + V_th (S − 1), the traces as L S, torch's surrogate)."""
import pytest
import torch
from torch import nn

from spiking.kernels import online_lif
from spiking.neuron import LIF
from spiking.neuron.functional import lif_multistep
from spiking.neuron.online import lif_online
from spiking.plasticity.networks import HLOPMLP

pytestmark = pytest.mark.skipif(not online_lif.extension().available(), reason="online-LIF extension not built")

SURROGATES = ("sigmoid", "atan", "fast_sigmoid", "triangle")


def run(x, g, be, steps=None, lam=0.5, **kw):
    """Spikes, traces, rows and x's gradient for ``g`` of ``lif_online`` through backend ``be``."""
    neuron = LIF(v_reset=None, backend=be, **kw)
    xx = x.clone().requires_grad_()
    s, a, r = lif_online(xx, neuron, steps=steps, trace_lambda=lam)
    (s * g).sum().backward()
    return s, a, r, xx.grad


def data(dtype, shape=(6, 5, 300), seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(*shape, generator=gen, dtype=dtype) * 1.5 + 0.8)
    return x.to(device), torch.randn(*shape, generator=gen, dtype=dtype).to(device)


def assert_fused_matches_reference(backend, dtype, surrogate, decay_input, device="cpu"):
    """``lif_online`` through ``backend`` against the reference path on the same device: spikes,
    traces and rows equal; the gradient within 8 ulp of σ'(0) (the kernels' exp, or a/b for
    torch's (1/b)·a in atan). Returns both gradients."""
    x, g = data(dtype, device=device)
    kw = dict(tau=2.0, v_threshold=1.0, decay_input=decay_input, surrogate=surrogate)
    s, a, r, gx = run(x, g, backend, **kw)
    s_ref, a_ref, r_ref, gx_ref = run(x, g, "torch", **kw)
    assert 0 < float(s.detach().mean()) < 1 and torch.equal(s, s_ref)
    assert torch.equal(a, a_ref) and torch.equal(r, r_ref)  # λ = 0.5: every trace is exact either way
    assert torch.equal(r.view(6, 2, 5, 300)[:, 0], s) and torch.equal(r.view(6, 2, 5, 300)[:, 1], a)
    assert float(gx.abs().sum()) > 0
    peak = float(LIF(surrogate=surrogate).surrogate.grad(torch.zeros((), dtype=dtype)))
    assert torch.all((gx - gx_ref).abs() <= 8 * torch.finfo(dtype).eps * peak * g.abs()), (gx - gx_ref).abs().max()
    return gx, gx_ref


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("decay_input", [False, True])
@pytest.mark.parametrize("default_param", [True, False])
def test_fused_equals_reference_spikes_traces_rows_and_gradient(dtype, surrogate, decay_input, default_param):
    gx, gx_ref = assert_fused_matches_reference("cpu", dtype, surrogate if default_param else (surrogate, 3.0),
                                                decay_input)
    if surrogate != "sigmoid" and default_param:  # the same float ops
        assert torch.equal(gx, gx_ref)


def test_surrogate_input_z_equals_the_reference_membrane_recovery():
    x, _ = data(torch.float32)
    s, z, a, r = online_lif.forward(x, 6, 1.0, 2.0, False)
    s_ref, v = lif_multistep(x, None, tau=2.0, v_threshold=1.0, v_reset=None, decay_input=False, return_v=True,
                             backend="torch")
    assert torch.equal(s, s_ref) and torch.equal(z, torch.add(v, s_ref, alpha=1.0).sub_(1.0))
    assert a.numel() == 0 and r.numel() == 0  # no trace asked for


def test_rows_with_steps_equal_the_time_major_call_and_other_lambdas_match_within_rounding():
    x, g = data(torch.float32)
    flat, flat_g = x.reshape(30, 300), g.reshape(30, 300)
    for be in ("cpu", "torch"):
        s3, a3, r3, gx3 = run(x, g, be, lam=0.3)
        s2, a2, r2, gx2 = run(flat, flat_g, be, steps=6, lam=0.3)
        assert s2.shape == (30, 300) and r2.shape == (60, 300)
        assert torch.equal(s2, s3.reshape(30, 300)) and torch.equal(a2, a3.reshape(30, 300))
        assert torch.equal(r2, r3.reshape(60, 300)) and torch.equal(gx2, gx3.reshape(30, 300))
    ref = run(flat, flat_g, "torch", steps=6, lam=0.3)[1]  # λ = 0.3: recurrence vs L S, rounding apart
    assert torch.allclose(a2, ref, rtol=1e-6, atol=1e-6) and float(a2.max()) > 1


def test_without_trace_returns_spikes_only_and_unused_spikes_need_no_gradient():
    x, g = data(torch.float64)
    neuron = LIF(v_reset=None, tau=2.0)
    assert torch.equal(lif_online(x, neuron), run(x, g, "torch", lam=0.5, tau=2.0)[0])
    xx = x.clone().requires_grad_()
    s, a, r = lif_online(xx, neuron, trace_lambda=0.5)
    assert not a.requires_grad and not r.requires_grad and s.requires_grad


def test_bad_input_is_refused_by_name():
    neuron = LIF(v_reset=None)
    x = torch.rand(6, 4, 3)
    with pytest.raises(ValueError, match="steps"):
        lif_online(x.view(24, 3), neuron, steps=5)
    with pytest.raises(ValueError, match="trace_lambda"):
        lif_online(x, neuron, trace_lambda=1.5)
    bad = x.clone()
    bad[3, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        lif_online(bad, neuron)
    lif_online(bad, LIF(v_reset=None, check_inputs=False))  # unchecked: runs
    with pytest.raises(TypeError, match="float32 or float64"):
        online_lif.forward(x.half(), 6, 1.0, 2.0, False)
    with pytest.raises(ValueError, match="tau"):
        online_lif.forward(x, 6, 1.0, 0.0, False)
    with pytest.raises(ValueError, match="divisible"):
        online_lif.forward(x, 4, 1.0, 2.0, False)
    with pytest.raises(ValueError, match="g and z"):
        online_lif.backward(x, x[0], LIF(v_reset=None).surrogate, 2.0, False)


def test_other_dtypes_take_the_reference_path():
    x = torch.rand(6, 4, 3, dtype=torch.bfloat16) * 3
    s, a, r = lif_online(x, LIF(v_reset=None), trace_lambda=0.5)
    assert s.dtype == torch.bfloat16 and torch.equal(r.view(6, 2, 4, 3)[:, 0], s)


def test_ottt_network_step_fused_equals_the_reference_path():
    torch.manual_seed(0)
    model = HLOPMLP((20, 24, 16, 5), method="ottt")
    with torch.no_grad():
        for fc in model.fcs:
            fc.weight.mul_(3.0)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(8, 20, generator=gen) * 2, torch.randint(0, 5, (8,), generator=gen)
    results = []
    for be in ("cpu", "torch"):
        for n in model.neurons:
            n.backend = be
        model.zero_grad()
        loss = model.loss_backward(x, y, nn.functional.cross_entropy)
        results.append((loss, [fc.weight.grad.clone() for fc in model.fcs], [fc.hebb_input for fc in model.fcs]))
    (loss, grads, rows), (loss_ref, grads_ref, rows_ref) = results
    assert torch.equal(loss, loss_ref) and all(torch.equal(a, b) for a, b in zip(rows, rows_ref))
    for a, b in zip(grads, grads_ref):  # the sigmoid surrogate's exp, a few ulp
        assert float(b.abs().sum()) > 0 and torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_cpu_backend_runs_one_op_each_way_and_torch_backend_none():
    from spiking.runner.overhead import OpCounter

    x, g = data(torch.float32)
    for be, expect in (("cpu", 1), ("auto", 1), ("torch", 0)):
        xx = x.clone().requires_grad_()
        with OpCounter() as c:
            s = lif_online(xx, LIF(v_reset=None, backend=be))
            torch.autograd.grad(s, xx, g)
        assert c.ops["forward"] == expect and c.ops["backward"] == expect, (be, c.ops)
        if expect:
            assert c.n_ops == 2, c.ops  # outputs allocated inside the ops
