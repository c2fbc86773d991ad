"""Spike-for-spike parity with snnTorch Leaky, Norse LIFBoxCell and SpikingJelly LIFNode.

Mappings (docs/design.md, docs/peers.md), for our tau, V_th, V_reset = 0:
- snnTorch Leaky: beta = 1 - 1/tau, input x/tau, reset "zero" (hard) with its reset detached;
  soft reset via "subtract" with reset_delay=False (its reset then carries gradient; equal while
  the membrane stays below 2·V_th).
- Norse LIFBoxCell: tau_mem_inv·dt = 1/tau, v_leak = 0, reset_value (hard) or reset_subtract (soft).
- SpikingJelly LIFNode: the same equations as ours.
"""

import pytest
import torch

from spiking import LIF
from spiking.neuron import surrogate as sgm

snntorch = pytest.importorskip("snntorch")
from snntorch import surrogate as snn_sg  # noqa: E402

T, B, N = 40, 8, 64
TAU, VTH = 2.0, 1.0


def _input(seed, scale=1.5):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, N, generator=g) * 2.0 * scale).requires_grad_(True)


def _ours(x, **kw):
    kw.setdefault("backend", "torch")
    return LIF(tau=TAU, v_threshold=VTH, **kw)(x)


def _snntorch(x, reset, spike_grad):
    if reset == "hard":
        lif = snntorch.Leaky(beta=1 - 1 / TAU, threshold=VTH, spike_grad=spike_grad, reset_mechanism="zero")
    else:
        lif = snntorch.Leaky(
            beta=1 - 1 / TAU, threshold=VTH, spike_grad=spike_grad, reset_mechanism="subtract", reset_delay=False
        )
    mem = lif.init_leaky()
    out = []
    for t in range(x.shape[0]):
        spk, mem = lif(x[t] / TAU, mem)
        out.append(spk)
    return torch.stack(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_snntorch_hard_reset_spikes_and_grads(seed):
    x = _input(seed)
    ours = _ours(x, v_reset=0.0, detach_reset=True, surrogate=sgm.sigmoid(4.0))
    theirs = _snntorch(x, "hard", snn_sg.sigmoid(slope=4.0))
    assert ours.sum() > 100  # the test input makes the neurons fire
    assert torch.equal(ours, theirs)
    w = torch.randn_like(ours)
    (g_ours,) = torch.autograd.grad((ours * w).sum(), x)
    (g_theirs,) = torch.autograd.grad((theirs * w).sum(), x)
    assert torch.allclose(g_ours, g_theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_snntorch_soft_reset_spikes_and_grads(seed):
    # inputs small enough that the membrane never exceeds 2·V_th (snnTorch then resets twice)
    x = _input(seed, scale=0.9)
    ours = _ours(x, v_reset=None, detach_reset=False, surrogate=sgm.atan(2.0))
    theirs = _snntorch(x, "soft", snn_sg.atan(alpha=2.0))
    assert ours.sum() > 100
    assert torch.equal(ours, theirs)
    w = torch.randn_like(ours)
    (g_ours,) = torch.autograd.grad((ours * w).sum(), x)
    (g_theirs,) = torch.autograd.grad((theirs * w).sum(), x)
    assert torch.allclose(g_ours, g_theirs, atol=1e-5, rtol=0)


def test_snntorch_fast_sigmoid_gradients_match():
    x = _input(5)
    ours = _ours(x, v_reset=0.0, detach_reset=True, surrogate=sgm.fast_sigmoid(25.0))
    theirs = _snntorch(x, "hard", snn_sg.fast_sigmoid(slope=25))
    assert torch.equal(ours, theirs)
    (g_ours,) = torch.autograd.grad(ours.sum(), x)
    (g_theirs,) = torch.autograd.grad(theirs.sum(), x)
    assert torch.allclose(g_ours, g_theirs, atol=1e-5, rtol=0)


def _norse(x, reset, method, alpha):
    norse = pytest.importorskip("norse.torch")
    from norse.torch.functional.reset import reset_subtract, reset_value

    p = norse.LIFBoxParameters(
        tau_mem_inv=torch.as_tensor(1.0 / (TAU * 1e-3)),
        v_leak=torch.as_tensor(0.0),
        v_th=torch.as_tensor(VTH),
        v_reset=torch.as_tensor(0.0),
        method=method,
        alpha=torch.as_tensor(alpha),
        reset_method=reset_value if reset == "hard" else reset_subtract,
    )
    cell = norse.LIFBoxCell(p, dt=1e-3)
    state, out = None, []
    for t in range(x.shape[0]):
        z, state = cell(x[t], state)
        out.append(z)
    return torch.stack(out)


@pytest.mark.parametrize("reset", ["hard", "soft"])
@pytest.mark.parametrize(
    "method,alpha,ours_sg",
    [
        # Norse 1.1's SuperSpike ignores its alpha: σ'(z) = 1 / (|z| + 1)², i.e. our slope 1
        ("super", 100.0, sgm.fast_sigmoid(1.0)),
        ("triangle", 1.0, sgm.triangle(1.0)),
    ],
)
def test_norse_lifbox_spikes_and_grads(reset, method, alpha, ours_sg):
    x = _input(3)
    ours = _ours(x, v_reset=0.0 if reset == "hard" else None, detach_reset=False, surrogate=ours_sg)
    theirs = _norse(x, reset, method, alpha)
    assert ours.sum() > 100
    assert torch.equal(ours, theirs)
    w = torch.randn_like(ours)
    (g_ours,) = torch.autograd.grad((ours * w).sum(), x)
    (g_theirs,) = torch.autograd.grad((theirs * w).sum(), x)
    assert torch.allclose(g_ours, g_theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("v_reset", [0.0, None])
@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("detach_reset", [True, False])
def test_spikingjelly_lifnode_spikes_and_grads(v_reset, decay_input, detach_reset):
    try:
        from spikingjelly.activation_based import neuron, surrogate
    except Exception as e:  # pragma: no cover - optional peer
        pytest.skip(f"SpikingJelly not importable: {e}")
    x = _input(7, scale=1.0 if decay_input else 0.6)
    node = neuron.LIFNode(
        tau=TAU, decay_input=decay_input, v_threshold=VTH, v_reset=v_reset,
        surrogate_function=surrogate.Sigmoid(alpha=4.0), detach_reset=detach_reset,
        step_mode="m",
    )
    theirs = node(x)
    ours = _ours(x, v_reset=v_reset, decay_input=decay_input, detach_reset=detach_reset, surrogate=sgm.sigmoid(4.0))
    assert ours.sum() > 100
    assert torch.equal(ours, theirs)
    w = torch.randn_like(ours)
    (g_ours,) = torch.autograd.grad((ours * w).sum(), x)
    (g_theirs,) = torch.autograd.grad((theirs * w).sum(), x)
    assert torch.allclose(g_ours, g_theirs, atol=1e-5, rtol=0)
