"""OTTT in one backward pass over the sequence equals the online per-step algorithm (issue #13)."""
import pytest
import torch
from torch import nn

from spiking.neuron import LIF
from spiking.neuron.online import lif_online
from spiking.plasticity.hlop import HLOP
from spiking.plasticity.networks import HLOPMLP


def per_step_ottt(model, x, y):
    """The online algorithm as written in the paper: one forward/backward per step, the membrane and
    the traces â_t = λ â_{t−1} + s_t detached, loss CE_t/T; returns the loss and the Hebbian rows
    concat(s_t, â_t) of every layer."""
    lam, fc = model.cfg["trace_lambda"], model.fcs
    traces, v, hebb, total = [None] * len(fc), [None] * len(model.neurons), [[] for _ in fc], 0.0
    for _ in range(model.T):
        inp = x
        for i, layer in enumerate(fc):
            traces[i] = inp.detach() if traces[i] is None else lam * traces[i] + inp.detach()
            hebb[i] += [inp.detach(), traces[i]]
            out = layer(inp, traces[i])
            if i < len(model.neurons):
                inp, v[i] = model.neurons[i].step(out, None if v[i] is None else v[i].detach())
        loss = nn.functional.cross_entropy(out, y) / model.T
        loss.backward()
        total = total + loss.detach()
    return total, [torch.cat(rows) for rows in hebb]


@pytest.mark.parametrize("frozen", [False, True])
def test_sequence_ottt_weight_gradient_and_hebbian_rows_equal_the_per_step_algorithm(frozen):
    torch.manual_seed(0)
    model = HLOPMLP((20, 24, 16, 5), method="ottt")
    with torch.no_grad():  # enough drive that every layer spikes
        for fc in model.fcs:
            fc.weight.mul_(3.0)
    hlop = HLOP(model, schedule=[[4, 6, 5]], lr=0.01)
    hlop.before_task(0)
    g = torch.Generator().manual_seed(1)
    if frozen:  # projections active: the weight gradients use â_t⊥
        hlop.after_task(0)
        hlop.before_task(1)
    x, y = torch.rand(8, 20, generator=g) * 2, torch.randint(0, 5, (8,), generator=g)
    ref_loss, ref_rows = per_step_ottt(model, x, y)
    ref_grads = [fc.weight.grad.clone() for fc in model.fcs]
    model.zero_grad()
    loss = model.loss_backward(x, y, nn.functional.cross_entropy)
    assert float(ref_grads[1].abs().sum()) > 0 and float(ref_grads[0].abs().sum()) > 0  # spikes flowed
    assert torch.allclose(loss, ref_loss, rtol=1e-6, atol=1e-7)
    for fc, ref in zip(model.fcs, ref_grads):
        assert torch.allclose(fc.weight.grad, ref, rtol=1e-5, atol=1e-6), (fc.weight.grad - ref).abs().max()
    for fc, rows in zip(model.fcs, ref_rows):
        assert torch.allclose(fc.hebb_input, rows, rtol=1e-6, atol=1e-6)


def test_lif_online_gradient_is_each_steps_own_and_refuses_hard_reset():
    torch.manual_seed(0)
    neuron = LIF(tau=2.0, v_threshold=1.0, v_reset=None, decay_input=True, surrogate=("sigmoid", 4.0))
    x = (torch.rand(5, 3, 7) * 3).requires_grad_()
    g = torch.randn(5, 3, 7)
    (lif_online(x, neuron) * g).sum().backward()
    xs = x.detach().clone().requires_grad_()
    v, total = None, 0.0
    for t in range(5):  # per step, the previous membrane detached
        s, v = neuron.step(xs[t], None if v is None else v.detach())
        total = total + (s * g[t]).sum()
    total.backward()
    assert torch.allclose(x.grad, xs.grad, rtol=1e-5, atol=1e-6) and float(x.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="soft-reset"):
        lif_online(x, LIF(v_reset=0.0))
