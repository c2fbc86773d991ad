"""The LIF module and its pure functions (torch reference path)."""

import math

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from spiking import LIF, lif_multistep, lif_step
from spiking.neuron import surrogate as sgm
from spiking.neuron.functional import lif_multistep_torch


def _x(T=12, B=3, N=5, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(T, B, N, generator=g) * scale


def test_hand_computed_hard_reset_trace():
    # tau = 2, V_th = 1, hard reset to 0, decay_input: H = V + (X - V)/2
    x = torch.tensor([1.5, 1.5, 0.4, 3.0]).view(4, 1, 1)
    s, v = LIF(tau=2.0, return_v=True, backend="torch")(x)
    # H1 = 0.75 -> no spike, V1 = 0.75; H2 = 0.75 + (1.5-0.75)/2 = 1.125 -> spike, V2 = 0
    # H3 = 0.2 -> V3 = 0.2; H4 = 0.2 + (3.0 - 0.2)/2 = 1.6 -> spike, V4 = 0
    assert s.flatten().tolist() == [0.0, 1.0, 0.0, 1.0]
    assert torch.allclose(v.flatten(), torch.tensor([0.75, 0.0, 0.2, 0.0]))


def test_hand_computed_soft_reset_no_decay_input():
    # decay_input=False: H = V - V/2 + X; soft reset subtracts V_th
    x = torch.tensor([1.2, 0.5, 0.0]).view(3, 1, 1)
    s, v = LIF(tau=2.0, v_reset=None, decay_input=False, return_v=True, backend="torch")(x)
    # H1 = 1.2 -> spike, V1 = 0.2; H2 = 0.1 + 0.5 = 0.6 -> V2 = 0.6; H3 = 0.3 -> V3 = 0.3
    assert s.flatten().tolist() == [1.0, 0.0, 0.0]
    assert torch.allclose(v.flatten(), torch.tensor([0.2, 0.6, 0.3]))


def test_shapes_and_return_v():
    x = torch.rand(7, 2, 3, 4)
    s = LIF()(x)
    assert s.shape == x.shape and s.dtype == x.dtype
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    s2, v = LIF(return_v=True)(x)
    assert torch.equal(s, s2) and v.shape == x.shape


def test_step_mode_equals_multistep():
    x = _x()
    lif = LIF(tau=3.0, v_reset=None, surrogate="atan")
    s_multi, v_multi = LIF(tau=3.0, v_reset=None, surrogate="atan", return_v=True)(x)
    v = None
    for t in range(x.shape[0]):
        s_t, v = lif.step(x[t], v)
        assert torch.equal(s_t, s_multi[t])
        assert torch.allclose(v, v_multi[t])


def test_stateful_continues_and_reset_state_restarts():
    x = _x(T=10)
    full = LIF(return_v=True)(x)[0]
    lif = LIF(stateful=True)
    first, second = lif(x[:5]), lif(x[5:])
    assert torch.equal(torch.cat([first, second]), full)
    lif.reset_state()
    assert torch.equal(lif(x[5:]), LIF()(x[5:]))
    # the default (stateful=False) starts every call afresh
    plain = LIF()
    assert torch.equal(plain(x[5:]), plain(x[5:]))


def test_stateful_shape_change_is_a_clear_error():
    lif = LIF(stateful=True)
    lif(torch.rand(3, 2, 4))
    with pytest.raises(ValueError, match="reset_state"):
        lif(torch.rand(3, 5, 4))


def test_detach_reset_changes_only_gradients():
    x = _x(seed=3).requires_grad_(True)
    a = LIF(detach_reset=False)(x)
    (ga,) = torch.autograd.grad(a.sum(), x)
    b = LIF(detach_reset=True)(x)
    (gb,) = torch.autograd.grad(b.sum(), x)
    assert torch.equal(a, b)
    assert not torch.allclose(ga, gb)


def test_learnable_threshold_gets_gradient_and_learns():
    torch.manual_seed(0)
    lif = LIF(learn_threshold=True, v_threshold=1.0)
    assert isinstance(lif.v_threshold, torch.nn.Parameter)
    x = _x(T=20, B=8, N=16, seed=1)
    opt = torch.optim.SGD(lif.parameters(), lr=0.05)
    before = lif(x).sum().item()
    for _ in range(5):
        opt.zero_grad()
        lif(x).mean().backward()  # minimise firing -> the threshold must rise
        assert lif.v_threshold.grad is not None and lif.v_threshold.grad < 0
        opt.step()
    assert lif.v_threshold.item() > 1.0
    assert lif(x).sum().item() < before


def test_threshold_gradient_matches_finite_difference_of_smooth_surrogate():
    # with a single step, dS/dV_th = -σ'(H - V_th): check the autograd value against it
    x = torch.rand(1, 4, 6) * 2
    vth = torch.tensor(0.7, requires_grad=True)
    s, _ = lif_step(x[0], torch.zeros(4, 6), v_threshold=vth, surrogate=sgm.sigmoid(4.0))
    s.sum().backward()
    h = x[0] / 2.0
    expect = -sgm.sigmoid(4.0).grad(h - 0.7).sum()
    assert torch.allclose(vth.grad, expect, atol=1e-6)


@pytest.mark.parametrize(
    "sg,primitive",
    [
        (sgm.sigmoid(3.0), lambda z: torch.sigmoid(3.0 * z)),
        (sgm.atan(2.5), lambda z: torch.atan(math.pi / 2 * 2.5 * z) / math.pi + 0.5),
        (sgm.fast_sigmoid(10.0), lambda z: z / (1 + 10.0 * z.abs())),
        (sgm.triangle(0.5), None),
    ],
)
def test_surrogate_gradients_are_derivatives_of_their_primitive(sg, primitive):
    z = torch.linspace(-2, 2, 401, dtype=torch.float64, requires_grad=True)
    if primitive is not None:
        (d,) = torch.autograd.grad(primitive(z).sum(), z)
        assert torch.allclose(sg.grad(z.detach()), d, atol=1e-10)
    else:  # triangle: integrates to 1 and peaks at 1/width
        g = sg.grad(z.detach())
        assert abs(torch.trapezoid(g, z.detach()).item() - 1.0) < 1e-3
        assert g.max().item() == pytest.approx(2.0)
    out = sg.spike(z)
    assert torch.equal(out, (z >= 0).double())
    (gs,) = torch.autograd.grad(out.sum(), z)
    assert torch.allclose(gs, sg.grad(z.detach()))


def test_surrogate_resolution():
    assert sgm.get_surrogate("superspike") == sgm.fast_sigmoid(25.0)
    assert sgm.get_surrogate(("atan", 3.0)).param == 3.0
    assert LIF(surrogate="triangle").surrogate == sgm.triangle(1.0)


def _allocated_bytes(T, fn):
    x = torch.rand(T, 8, 128, requires_grad=True)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        s, _ = fn(x)
        s.sum().backward()
    return sum(e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0)


def _indexing_loop(x):
    """The trap (Norse LIF module): x[t] on a grad-requiring input, a full-size zero grad per step."""
    v, out = torch.zeros_like(x[0]), []
    for t in range(x.shape[0]):
        s, v = lif_step(x[t], v, surrogate=sgm.sigmoid())
        out.append(s)
    return torch.stack(out), v


def test_forward_backward_memory_is_linear_in_T():
    ours = _allocated_bytes(200, lif_multistep_torch) / _allocated_bytes(50, lif_multistep_torch)
    trap = _allocated_bytes(200, _indexing_loop) / _allocated_bytes(50, _indexing_loop)
    assert 3.5 < ours < 4.6  # linear: 4x the steps, 4x the bytes
    assert trap > 8  # the measurement does see a quadratic path


@pytest.mark.parametrize(
    "kwargs,exc,word",
    [
        (dict(tau=-1.0), ValueError, "tau"),
        (dict(tau=0.0), ValueError, "tau"),
        (dict(tau=float("nan")), ValueError, "tau"),
        (dict(v_threshold=float("inf")), ValueError, "v_threshold"),
        (dict(v_reset=float("nan")), ValueError, "v_reset"),
        (dict(surrogate="relu"), ValueError, "surrogate"),
        (dict(surrogate=("atan", -1.0)), ValueError, "alpha"),
        (dict(surrogate=3), TypeError, "surrogate"),
        (dict(backend="metal"), ValueError, "backend"),
    ],
)
def test_bad_parameters_name_the_argument(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        LIF(**kwargs)


@pytest.mark.parametrize(
    "x,exc,word",
    [
        (torch.rand(5), ValueError, "T, batch"),
        (torch.rand(0, 3, 4), ValueError, "T = 0"),
        (torch.rand(4, 0, 3), ValueError, "empty batch"),
        (torch.ones(3, 2, 2, dtype=torch.int64), TypeError, "floating"),
        (torch.tensor([[[1.0, float("nan")]]]), ValueError, "NaN"),
        (torch.tensor([[[1.0, float("inf")]]]), ValueError, "inf"),
        ([[1.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_input_names_the_argument(x, exc, word):
    with pytest.raises(exc, match=word):
        LIF()(x)


def test_functional_validates_v0_shape_and_backend_name():
    x = torch.rand(4, 2, 3)
    with pytest.raises(ValueError, match="v0"):
        lif_multistep(x, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="backend"):
        lif_multistep(x, backend="fpga")
    with pytest.raises(ValueError, match="x"):
        LIF().step(torch.rand(0, 3))
