"""Library guards: LIF stability bound and threshold, LIF.step dtypes, HLOP's optimizer check,
Macrocolumn state validation and compact traces."""
import copy

import pytest
import torch
from torch import nn

from spiking import LIF
from spiking.memory import Macrocolumn
from spiking.neuron.functional import lif_step
from spiking.neuron.surrogate import Surrogate
from spiking.plasticity import HLOP


# ----------------------------------------------------------------------------- LIF


@pytest.mark.parametrize("decay_input", [True, False])
def test_the_discrete_update_is_unstable_exactly_below_tau_1(decay_input):
    """Free membrane (no input, no spike): V_t = (1 - 1/tau)^t V_0 for either decay_input."""
    def free(tau, steps=12):
        v, out = torch.tensor([0.5]), []
        for _ in range(steps):
            _, v = lif_step(torch.zeros(1), v, tau=tau, v_threshold=1e9, v_reset=None,
                            decay_input=decay_input, surrogate=Surrogate("sigmoid", 4.0))
            out.append(float(v))
        return out
    assert all(0 <= b <= a for a, b in zip(free(1.5), free(1.5)[1:]))      # monotone decay
    assert free(1.0)[0] == 0.0                                              # no memory
    alt = free(0.8)                                                         # sign flips, decays
    assert all(a * b < 0 for a, b in zip(alt, alt[1:])) and abs(alt[-1]) < abs(alt[0])
    assert abs(free(0.5)[-1]) == pytest.approx(0.5)                         # never decays
    assert abs(free(0.3)[-1]) > 100                                         # diverges
    for tau in (0.3, 0.5, 0.8, 0.999):
        with pytest.raises(ValueError, match="tau must be >= 1"):
            LIF(tau=tau, decay_input=decay_input)
    LIF(tau=1.0, decay_input=decay_input)


@pytest.mark.parametrize("kw", [dict(v_threshold=0.0), dict(v_threshold=-1.0),
                                dict(v_threshold=0.0, v_reset=None), dict(v_threshold=-2.0, v_reset=-1.0)])
def test_threshold_at_or_below_rest_is_refused(kw):
    with pytest.raises(ValueError, match="above the resting potential"):
        LIF(**kw)


def test_threshold_above_a_negative_rest_is_fine_and_a_learned_one_is_checked():
    s = LIF(v_threshold=-0.5, v_reset=-1.0)(torch.zeros(4, 2, 3))
    assert s.sum() == 0  # at rest (-1) below threshold (-0.5): silent
    lif = LIF(learn_threshold=True)
    with torch.no_grad():
        lif.v_threshold.fill_(-0.1)
    with pytest.raises(ValueError, match="above the resting potential"):
        lif(torch.zeros(3, 2, 4))


def test_step_checks_dtypes_like_forward():
    lif = LIF()
    x = torch.rand(2, 5)
    with pytest.raises(TypeError, match="dtype of x"):
        lif.step(x, torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="v must be a torch.Tensor"):
        lif.step(x, 0.0)
    s, v = lif.step(x, torch.zeros(2, 5))
    assert s.dtype == v.dtype == torch.float32


# ----------------------------------------------------------------------------- HLOP


def _hlop_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    hlop = HLOP(net, schedule=2, iters=1)
    hlop.before_task(0)
    return net, hlop


def _step(net, opt):
    opt.zero_grad()
    net(torch.randn(4, 6)).sum().backward()
    opt.step()


@pytest.mark.parametrize("make, match", [
    (lambda p: torch.optim.Adam(p, lr=0.01), "Adam rescales"),
    (lambda p: torch.optim.RMSprop(p, lr=0.01), "RMSprop"),
    (lambda p: torch.optim.SGD(p, lr=0.01, weight_decay=1e-4), "weight_decay"),
])
def test_hlop_refuses_optimizers_that_leave_the_projection(make, match):
    net, hlop = _hlop_net()
    opt = make(net.parameters())
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(ValueError, match=f"HLOP: .*{match}"):
        _step(net, opt)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # refused before the step
    hlop.remove()
    _step(net, opt)  # once detached, any optimizer is the caller's business


def test_hlop_accepts_sgd_with_momentum_and_ignores_unrelated_optimizers():
    net, hlop = _hlop_net()
    _step(net, torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True))
    other = nn.Linear(3, 3)
    opt = torch.optim.Adam(other.parameters())
    other(torch.randn(2, 3)).sum().backward()
    opt.step()
    hlop.remove()


# ----------------------------------------------------------------------------- Macrocolumn


def _mac(**kw):
    mac = Macrocolumn(40, Q=4, K=3, seed=1, **kw)
    mac.store((torch.rand(6, 40, generator=torch.Generator().manual_seed(0)) < 0.3).to(torch.uint8))
    return mac


def test_load_state_dict_validates_every_key_and_shape_before_loading():
    src = _mac().state_dict()
    dst = _mac(theta_sat=0.9)
    dst.store(torch.ones(40, dtype=torch.uint8))
    snapshot = copy.deepcopy(dst.state_dict())
    bad_traces = {**src["traces"], "code": torch.zeros(6, 5, dtype=torch.int16)}
    bad_u = {**src["U"], "packed": torch.zeros(3, 1, dtype=torch.int64)}
    cases = [({k: v for k, v in src.items() if k != "generator"}, "lacks \\['generator'\\]"),
             ({**src, "traces": bad_traces}, "'code'.*must be"),
             ({**src, "U": bad_u}, "'U'.*packed"),
             ({**src, "traces": {k: v for k, v in src["traces"].items() if k != "alive"}}, "alive"),
             ({**src, "config": {**src["config"], "theta_sat": 2.0}}, "theta_sat"),
             ({**src, "params": {**src["params"], "bogus": 1}}, "params")]
    for bad, match in cases:
        with pytest.raises(ValueError, match=match):
            dst.load_state_dict(bad)
        after = dst.state_dict()
        assert len(dst) == 7 and dst.theta_sat == 0.9
        assert torch.equal(after["traces"]["code"], snapshot["traces"]["code"])
    dst.load_state_dict(src)
    assert len(dst) == 6 and torch.equal(dst.state_dict()["traces"]["x"], src["traces"]["x"])


def test_trace_returns_compact_copies():
    mac = _mac(horizontal=True)
    t = mac.trace(3)
    assert t["code"].dtype == torch.int64 and t["code"].shape == (4,)
    assert t["code"].untyped_storage().nbytes() == 4 * 8  # one row, not the whole table
    assert t["x"].untyped_storage().nbytes() <= 64 * 8
    assert t["prev"] is None or t["prev"].untyped_storage().nbytes() == 4 * 8
    assert torch.equal(t["code"], mac.traces["code"][3].long())


@pytest.mark.parametrize("bad", [0.0, 1.5, True, "0.5"])
def test_theta_sat_is_validated(bad):
    with pytest.raises(ValueError, match="theta_sat"):
        Macrocolumn(40, Q=4, K=3, theta_sat=bad)
