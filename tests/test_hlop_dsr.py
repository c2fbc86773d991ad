"""DSR LIF neurons and the DSR network: forward equations, and the rate-graph backward equals the
per-step DSR gradient transcribed from the equations."""

import math

import pytest
import torch

from spiking.neuron.dsr import DSRLIF, dsr_spikes, dsr_weights, weighted_rate
from spiking.plasticity.networks import HLOPMLP


def _loop_spikes(I, vth, tau=1.0, dt=0.05, alpha=0.3):
    """Scalar-by-scalar transcription of u_t = βu + (1−β)I_t, spike at αV_th, soft reset, value V_th/Δt."""
    beta = math.exp(-dt / tau)
    out = []
    for row in I.reshape(I.shape[0], -1).t().tolist():
        u, o = 0.0, []
        for i in row:
            u = beta * u + (1 - beta) * i
            s = 1.0 if u >= alpha * vth else 0.0
            u -= vth * s
            o.append(s * vth / dt)
        out.append(o)
    return torch.tensor(out).t().reshape(I.shape)


def test_dsr_spikes_match_the_equations_and_rate_approximates_clamp():
    g = torch.Generator().manual_seed(0)
    I = torch.randn(20, 3, 7, generator=g) * 4
    assert torch.allclose(dsr_spikes(I, 0.3) * 0.3 / 0.05, _loop_spikes(I, 0.3))
    c = torch.linspace(-2, 10, 49)
    s = dsr_spikes(c, 0.3, T=200)
    assert torch.all((s == 0) | (s == 1))
    o = s * 0.3 / 0.05
    assert torch.allclose(o, _loop_spikes(c.expand(200, -1), 0.3))
    # long-run rate ≈ clamp(I/τ, 0, V_th/Δt) (τ = 1)
    assert torch.allclose(o.mean(0), c.clamp(0, 6.0), atol=0.15)


def test_weighted_rate_uses_exponential_weights():
    w = dsr_weights(4, tau=1.0, dt=0.05)
    assert torch.allclose(w, torch.tensor([math.exp(-0.15), math.exp(-0.10), math.exp(-0.05), 1.0]))
    s = torch.arange(8.0).reshape(4, 2)
    assert torch.allclose(weighted_rate(s), (w[:, None] * s).sum(0) / w.sum())


class _RefDSR(torch.autograd.Function):
    """Per-step DSR layer written from the equations: o = spikes(I); backward
    g = T·Σ w_t ∂L/∂o_t / Σw, ∂L/∂I_t = 1[0 < Î < V_th τ/Δt]·g/(τT), ∂L/∂V_th = Δt Σ g 1[Î > V_th τ/Δt]."""

    @staticmethod
    def forward(ctx, I, vth):
        ctx.save_for_backward(I, vth)
        return _loop_spikes(I, float(vth))

    @staticmethod
    def backward(ctx, grad_out):
        I, vth = ctx.saved_tensors
        T, w = I.shape[0], dsr_weights(I.shape[0])
        I_hat = (w[:, None, None] * I).sum(0) / w.sum()
        g = T * (w[:, None, None] * grad_out).sum(0) / w.sum()
        bound = float(vth) * 1.0 / 0.05
        inside = ((I_hat > 0) & (I_hat < bound)).float()
        grad_I = (inside * g / T).expand(T, *g.shape)
        return grad_I, (g * (I_hat > bound).float()).sum() * 0.05


def test_rate_graph_gradients_equal_the_per_step_dsr_gradients():
    torch.manual_seed(0)
    net = HLOPMLP((12, 16, 14, 5), method="dsr")
    with torch.no_grad():
        for fc in net.fcs:
            fc.weight.mul_(6.0)  # drive some neurons into saturation so the threshold gradient is non-zero
    x, y = torch.randn(9, 12), torch.randint(0, 5, (9,))
    loss = net.loss_backward(x, y, torch.nn.functional.cross_entropy)
    grads = [p.grad.clone() for p in net.parameters()]

    W1, W2, W3 = (fc.weight.detach().clone().requires_grad_() for fc in net.fcs)
    v1, v2 = (n.v_threshold.detach().clone().requires_grad_() for n in net.neurons)
    T = net.T
    o1 = _RefDSR.apply((x @ W1.t()).expand(T, -1, -1), v1)
    o2 = _RefDSR.apply(o1 @ W2.t(), v2)
    logits = (o2 @ W3.t()).mean(0)
    ref_loss = torch.nn.functional.cross_entropy(logits, y)
    ref_loss.backward()
    assert float(ref_loss.detach()) == pytest.approx(float(loss), rel=1e-5)
    ref = {"fcs.0.weight": W1.grad, "fcs.1.weight": W2.grad, "fcs.2.weight": W3.grad,
           "neurons.0.v_threshold": v1.grad, "neurons.1.v_threshold": v2.grad}
    for (name, _), g in zip(net.named_parameters(), grads):
        assert torch.allclose(g, ref[name], rtol=1e-4, atol=1e-6), name
    assert float(v1.grad.abs() + v2.grad.abs()) > 0


def test_threshold_floor_and_errors():
    n = DSRLIF(T=5)
    with torch.no_grad():
        n.v_threshold.fill_(-1.0)
    n(torch.ones(2, 3))
    assert float(n.v_threshold.detach()) == pytest.approx(5e-4)
    with pytest.raises(ValueError, match="alpha"):
        DSRLIF(alpha=0.0)
    with pytest.raises(ValueError, match="I_seq"):
        n(torch.ones(2, 3), torch.ones(4, 2, 3))
    with pytest.raises(ValueError, match="drive"):
        n(torch.ones(2, 3), drive=torch.ones(4, 2, 3))
    with pytest.raises(ValueError, match="not both"):
        n(torch.ones(2, 3), torch.ones(5, 2, 3), drive=torch.ones(5, 2, 3))


def test_drive_input_equals_the_current_input():
    """``drive = k·I + c`` (what the network forms in its spike product) gives the spikes, rate and
    gradients of the currents ``I`` themselves; ``rate=False`` skips the rate without a graph."""
    g = torch.Generator().manual_seed(4)
    n = DSRLIF(T=20)
    with torch.no_grad():
        n.v_threshold.fill_(0.45)
    I = torch.randn(20, 6, 9, generator=g) * 8  # dyadic: k·I + c rounds like the reference's own sum
    I = torch.round(I * 16) / 16
    k, c = n.drive_scale(), n.drive_shift
    I_mean = I.mean(0).requires_grad_()
    s_ref, r_ref = n(I_mean, I)
    s_new, r_new = n(I_mean, drive=I * k + c)
    assert (s_ref != s_new).float().mean() < 0.01
    up = torch.randn(6, 9, generator=g)
    (g_ref,) = torch.autograd.grad(r_ref, I_mean, up)
    (g_new,) = torch.autograd.grad(r_new, I_mean, up)
    torch.testing.assert_close(g_new, g_ref)
    with torch.no_grad():
        spikes, rate = n(None, drive=I * k + c, rate=False)
    assert rate is None and torch.equal(spikes, s_new)
