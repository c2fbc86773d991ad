"""The neuron family against the peers' equivalents: spike for spike, gradients within 1e-5.

Mappings (docs/neurons.md), float64, random inputs, odd shapes, T = 1 and long T, both our torch
reference and the fused CPU path:

- SpikingJelly ``IFNode`` = ``IF``; ``ParametricLIFNode(init_tau)`` = ``PLIF(tau)`` (same ``w``).
- snnTorch ``Synaptic(alpha, beta, reset_mechanism="zero", reset_delay=False)`` =
  ``CubaLIF(tau_syn=1/(1-alpha), tau_mem=1/(1-beta), decay_input=False, v_reset=0)``.
- snnTorch ``RLeaky(beta, linear_features=N, reset_mechanism="zero", reset_delay=False)`` =
  ``RLIF(N, tau=1/(1-beta), decay_input=False, v_reset=0)`` with the same recurrent weights.
- Norse ``LIFCell(tau_syn_inv, tau_mem_inv)`` at ``dt`` = ``CubaLIF(tau_syn=1/(dt·tau_syn_inv),
  tau_mem=1/(dt·tau_mem_inv), decay_input=True)``; Norse 1.1's SuperSpike ignores its alpha:
  σ' = 1/(1 + |z|)², our ``("fast_sigmoid", 1.0)``.
- Norse ``LIBoxCell(tau_mem_inv, v_leak)`` = ``LI(tau=1/(dt·tau_mem_inv), v_leak)``.
- Norse ``LSNNCell`` (adaptive LIF) with ``dt·tau_syn_inv = 1`` = ``ALIF(tau=1/(dt·tau_mem_inv),
  tau_adapt=1/(dt·tau_adapt_inv), beta=ρ·β_norse/(1-ρ))`` on the input delayed by one step
  (Norse's membrane sees the previous step's current).
"""

from __future__ import annotations

import pytest
import torch

import spiking
from spiking.neuron import surrogate as sgm

BACKENDS = ["torch", "cpu"]
SHAPES = [(1, 4, 9), (7, 2, 3, 5), (300, 3, 11)]


def _x(shape, seed, scale=1.5, offset=0.0):
    """Uniform input on [(-1 + offset)·scale, (1 + offset)·scale]; tripled for T = 1 (one step must fire)."""
    g = torch.Generator().manual_seed(seed)
    scale = scale * 3 if shape[0] == 1 else scale
    return ((torch.rand(shape, generator=g, dtype=torch.float64) * 2.0 - 1.0 + offset) * scale).requires_grad_(True)


def _loop(cell, x, *state):
    """Run a peer's single-step module over T; returns the stacked first outputs."""
    out = []
    st = state
    for xt in x.unbind(0):
        res = cell(xt, *st) if st and st[0] is not None else cell(xt)
        if isinstance(res, tuple) and len(res) == 2 and isinstance(res[1], tuple):  # norse: (z, state)
            out.append(res[0])
            st = (res[1],)
        else:
            out.append(res[0])
            st = res[1:]
    return torch.stack(out)


def _check(ours, theirs, inputs_ours, inputs_theirs, min_spikes=1, spiking_out=True):
    if spiking_out:
        assert ours.sum() >= min_spikes, "the test input must make the neurons fire"
        assert torch.equal(ours, theirs)
    else:
        assert torch.allclose(ours, theirs, atol=1e-12, rtol=0)
    w = torch.randn_like(ours)
    g1 = torch.autograd.grad((ours * w).sum(), inputs_ours)
    g2 = torch.autograd.grad((theirs * w).sum(), inputs_theirs)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-5, rtol=0), float((a - b).abs().max())


# ------------------------------------------------------------------------------------------ SpikingJelly
sj_neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
from spikingjelly.activation_based import surrogate as sj_sg  # noqa: E402


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("v_reset,detach", [(0.0, False), (None, True), (-0.2, False)])
def test_if_vs_spikingjelly_ifnode(backend, shape, v_reset, detach):
    x = _x(shape, 1, scale=1.5, offset=0.3)
    node = sj_neuron.IFNode(v_threshold=1.0, v_reset=v_reset, surrogate_function=sj_sg.Sigmoid(alpha=4.0),
                            detach_reset=detach, step_mode="m")
    ours = spiking.IF(v_threshold=1.0, v_reset=v_reset, detach_reset=detach, surrogate=sgm.sigmoid(4.0),
                      backend=backend)(x)
    _check(ours, node(x), (x,), (x,))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("v_reset,decay_input", [(0.0, True), (None, False), (None, True)])
def test_plif_vs_spikingjelly_parametric_lif(backend, shape, v_reset, decay_input):
    x = _x(shape, 2, scale=2.0, offset=0.4)
    node = sj_neuron.ParametricLIFNode(init_tau=3.0, decay_input=decay_input, v_reset=v_reset,
                                       surrogate_function=sj_sg.ATan(alpha=2.0), step_mode="m").double()
    ours_m = spiking.PLIF(tau=3.0, decay_input=decay_input, v_reset=v_reset, surrogate=sgm.atan(2.0),
                          backend=backend).double()
    _check(ours_m(x), node(x), (x, ours_m.w), (x, node.w))


def test_plif_per_channel_equals_shared_per_slice():
    """A per-channel tau equals running each channel with its own shared-tau PLIF (fused vs torch)."""
    x = _x((9, 2, 3, 4), 3, scale=2.0, offset=0.3)
    per = spiking.PLIF(channels=3, backend="cpu").double()
    with torch.no_grad():
        per.w.copy_(torch.tensor([-1.0, 0.0, 0.7]))
    out = per(x)
    for c in range(3):
        one = spiking.PLIF(backend="torch").double()
        with torch.no_grad():
            one.w.fill_(per.w[c].item())
        assert torch.equal(out[:, :, c], one(x[:, :, c]))
    w = torch.randn_like(out)
    (g,) = torch.autograd.grad((out * w).sum(), per.w)
    assert g.shape == (3,) and torch.all(g != 0)


# ------------------------------------------------------------------------------------------ snnTorch
snntorch = pytest.importorskip("snntorch")
from snntorch import surrogate as snn_sg  # noqa: E402


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_cuba_lif_vs_snntorch_synaptic(backend, shape):
    alpha, beta = 0.7, 0.8
    x = _x(shape, 4, scale=0.6, offset=0.3)
    syn = snntorch.Synaptic(alpha=alpha, beta=beta, threshold=1.0, spike_grad=snn_sg.atan(alpha=2.0),
                            reset_mechanism="zero", reset_delay=False)
    i0, m0 = syn.init_synaptic()
    theirs = _loop(syn, x, i0, m0)
    ours = spiking.CubaLIF(tau_syn=1 / (1 - alpha), tau_mem=1 / (1 - beta), decay_input=False, v_reset=0.0,
                           surrogate=sgm.atan(2.0), backend=backend)(x)
    _check(ours, theirs, (x,), (x,))


@pytest.mark.parametrize("shape", [(1, 3, 6), (50, 4, 13)])
def test_rlif_vs_snntorch_rleaky(shape):
    beta, n = 0.75, shape[-1]
    x = _x(shape, 5, scale=1.5, offset=0.4)
    rl = snntorch.RLeaky(beta=beta, linear_features=n, threshold=1.0, spike_grad=snn_sg.atan(alpha=2.0),
                         reset_mechanism="zero", reset_delay=False).double()
    ours = spiking.RLIF(n, tau=1 / (1 - beta), decay_input=False, v_reset=0.0, surrogate=sgm.atan(2.0)).double()
    with torch.no_grad():
        ours.recurrent.weight.copy_(rl.recurrent.weight * 0.5)
        ours.recurrent.bias.copy_(rl.recurrent.bias)
        rl.recurrent.weight.mul_(0.5)
    spk, mem = rl.init_rleaky()
    spk, mem, out = spk.double(), mem.double(), []
    for xt in x.unbind(0):  # RLeaky(input, spk, mem) -> (spk, mem); its atan spike is float32
        spk, mem = rl(xt, spk.double(), mem)
        out.append(spk.double())
    theirs = torch.stack(out)
    _check(ours(x), theirs, (x, ours.recurrent.weight), (x, rl.recurrent.weight))


# ------------------------------------------------------------------------------------------ Norse
norse = pytest.importorskip("norse.torch")
DT = 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_cuba_lif_vs_norse_lifcell(backend, shape):
    x = _x(shape, 6, scale=2.0, offset=0.3)
    p = norse.LIFParameters(tau_syn_inv=torch.tensor(200.0, dtype=torch.float64),
                            tau_mem_inv=torch.tensor(250.0, dtype=torch.float64), v_th=torch.tensor(1.0),
                            method="super", alpha=torch.tensor(20.0))
    theirs = _loop(norse.LIFCell(p, dt=DT), x, None)
    ours = spiking.CubaLIF(tau_syn=5.0, tau_mem=4.0, v_reset=0.0, surrogate=("fast_sigmoid", 1.0),
                           backend=backend)(x)
    _check(ours, theirs, (x,), (x,))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_li_vs_norse_liboxcell(backend, shape):
    x = _x(shape, 7)
    p = norse.LIBoxParameters(tau_mem_inv=torch.tensor(250.0, dtype=torch.float64),
                              v_leak=torch.tensor(0.25, dtype=torch.float64))
    theirs = _loop(norse.LIBoxCell(p, dt=DT), x, None)
    ours = spiking.LI(tau=4.0, v_leak=0.25, backend=backend)(x)
    _check(ours, theirs, (x,), (x,), spiking_out=False)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_alif_vs_norse_lsnn(backend, shape):
    tau_mem_inv, tau_adapt_inv, beta_n = 250.0, 50.0, 0.3
    rho = 1 - DT * tau_adapt_inv
    x = _x(shape, 8, scale=3.0, offset=0.4)
    p = norse.LSNNParameters(tau_syn_inv=torch.tensor(1 / DT), tau_mem_inv=torch.tensor(tau_mem_inv),
                             tau_adapt_inv=torch.tensor(tau_adapt_inv), v_th=torch.tensor(1.0),
                             beta=torch.tensor(beta_n), method="super", alpha=20.0)
    theirs = _loop(norse.LSNNCell(p, dt=DT), x, None)
    delayed = torch.cat([torch.zeros_like(x[:1]), x[:-1]])
    ours = spiking.ALIF(tau=1 / (DT * tau_mem_inv), tau_adapt=1 / (DT * tau_adapt_inv), beta=rho * beta_n / (1 - rho),
                        v_reset=0.0, surrogate=("fast_sigmoid", 1.0), backend=backend)(delayed)
    if shape[0] > 1:
        assert ours.sum() > 0 and torch.equal(ours, theirs)
    else:  # one step: Norse's membrane has not seen any input yet
        assert torch.equal(ours, theirs) and ours.sum() == 0
    w = torch.randn_like(ours)
    (g_ours,) = torch.autograd.grad((ours * w).sum(), x)
    (g_theirs,) = torch.autograd.grad((theirs * w).sum(), x, allow_unused=True, materialize_grads=True)
    assert torch.allclose(g_ours, g_theirs, atol=1e-5, rtol=0)
    assert torch.all(g_theirs[-1] == 0)  # the last input reaches Norse's membrane only after the sequence
