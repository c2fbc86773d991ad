"""NIR interchange: round trips with identical spikes, HLOP export, refusals and bad graphs."""

from __future__ import annotations


import nir
import numpy as np
import pytest
import torch
from torch import nn

import spiking
import spiking.nir as snir

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _scaled(net: nn.Sequential, gain: float) -> nn.Sequential:
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(gain)
    return net


def _input(shape, seed=0, scale=2.0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * scale


def _run_stateful(model, x):
    """Run a peer's imported single-step graph module over T, passing its state along."""
    out, state = [], None
    for xt in x:
        o, state = model(xt) if state is None else model(xt, state)
        out.append(o)
    return torch.stack(out)


def _mixed_mlp():
    torch.manual_seed(0)
    net = _scaled(nn.Sequential(
        nn.Linear(6, 9), spiking.LIF(tau=3.0, v_reset=None, decay_input=False, surrogate="atan"),
        nn.Linear(9, 8), spiking.CubaLIF(tau_syn=3.0, tau_mem=2.5),
        nn.Linear(8, 7), spiking.IF(v_reset=None),
        nn.Linear(7, 7, bias=False), spiking.PLIF(tau=3.0),
        nn.Linear(7, 5), spiking.RLIF(5, tau=2.0),
        nn.Linear(5, 3), spiking.LI(tau=4.0, v_leak=0.1)), 4.0)
    with torch.no_grad():
        net[8].bias.fill_(1.0)  # drive the recurrent layer
    return net


def test_ours_to_nir_to_ours_identical():
    net = _mixed_mlp()
    x = _input((25, 3, 6))
    graph = snir.export(net, x, dt=1e-3)
    assert graph.metadata["dt"] == 1e-3 and graph.metadata["time_steps"] == 25
    kinds = [type(graph.nodes[k]).__name__ for k in graph.nodes]
    assert kinds == ["Input", "Affine", "LIF", "Affine", "CubaLIF", "Affine", "IF", "Linear", "LIF", "Affine",
                     "NIRGraph", "Affine", "LI", "Output"]
    back = snir.load(graph)
    with torch.no_grad():
        ref, got = net(x), back(x)
        hidden = net[:10](x)
    assert hidden.sum() > 0 and torch.equal(got, ref)
    assert isinstance(back[1], spiking.LIF) and back[1].v_reset is None and back[1].surrogate.name == "atan"


def test_conv_network_round_trip_with_per_channel_plif():
    torch.manual_seed(1)
    net = _scaled(nn.Sequential(
        snir.TimeDistributed(nn.Conv2d(2, 4, 3, padding=1)), spiking.PLIF(channels=4),
        snir.TimeDistributed(nn.AvgPool2d(2)), snir.TimeDistributed(snir.SumPool2d(2)),
        snir.TimeDistributed(nn.Flatten()), nn.Linear(16, 5), spiking.LIF()), 3.0)
    with torch.no_grad():
        net[1].w.copy_(torch.tensor([0.1, -0.5, 0.3, 1.0]))
    x = _input((6, 2, 2, 8, 8), scale=3.0)
    graph = snir.export(net, x)
    assert isinstance(graph.nodes["0"], nir.Conv2d) and isinstance(graph.nodes["3"], nir.SumPool2d)
    assert graph.nodes["1"].tau.shape == (4, 8, 8)
    back = snir.load(graph)
    with torch.no_grad():
        assert net[:2](x).sum() > 0 and net(x).sum() > 0
        assert torch.equal(back(x), net(x))


def test_nir_file_round_trip_keeps_spikes(tmp_path):
    torch.manual_seed(2)
    net = _scaled(nn.Sequential(nn.Linear(5, 6), spiking.LIF(tau=2.0), nn.Linear(6, 4), spiking.CubaLIF()), 2.0)
    x = _input((20, 2, 5))
    nir.write(tmp_path / "net.nir", snir.export(net, x, dt=1e-3))
    graph = nir.read(tmp_path / "net.nir")
    back = snir.load(graph, dt=1e-3)  # dt explicit (a file may not keep the graph's metadata)
    with torch.no_grad():
        assert net(x).sum() > 0 and torch.equal(back(x), net(x))


snntorch = pytest.importorskip("snntorch")
norse = pytest.importorskip("norse.torch")


def test_ours_to_nir_to_snntorch():
    from snntorch.import_nir import import_from_nir

    torch.manual_seed(3)
    net = _scaled(nn.Sequential(nn.Linear(6, 5), spiking.LIF(tau=4.0, decay_input=False), nn.Linear(5, 4),
                                spiking.CubaLIF(tau_syn=3.0, tau_mem=4.0, decay_input=False)), 3.0)
    x = _input((30, 2, 6))
    with torch.no_grad():
        ours = net(x)
        theirs = _run_stateful(import_from_nir(snir.export(net, x, dt=1e-4)), x)
    assert ours.sum() > 0 and torch.equal(ours, theirs)


def test_ours_to_nir_to_norse():
    torch.manual_seed(4)
    net = _scaled(nn.Sequential(nn.Linear(6, 5), spiking.LIF(tau=4.0), nn.Linear(5, 5), spiking.IF(),
                                nn.Linear(5, 4), spiking.CubaLIF(tau_syn=2.0, tau_mem=3.0)), 3.0)
    x = _input((30, 2, 6), scale=4.0)
    with torch.no_grad():
        ours = net(x)
        theirs = _run_stateful(norse.from_nir(snir.export(net, x, dt=1e-3), dt=1e-3), x)
    assert net[:2](x).sum() > 0 and ours.sum() > 0 and torch.equal(ours, theirs)


def test_snntorch_model_to_nir_to_ours():
    from snntorch.export_nir import export_to_nir

    torch.manual_seed(5)
    lif = snntorch.Leaky(beta=torch.full((5,), 0.75), threshold=torch.ones(5), reset_mechanism="zero",
                         reset_delay=False, init_hidden=True)
    syn = snntorch.Synaptic(alpha=torch.full((4,), 0.5), beta=torch.full((4,), 0.8), threshold=torch.ones(4),
                            reset_mechanism="zero", reset_delay=False, init_hidden=True, output=True)
    net = _scaled(nn.Sequential(nn.Linear(6, 5), lif, nn.Linear(5, 4), syn), 3.0)
    x = _input((30, 2, 6))
    graph = export_to_nir(net, x[0, :1], ignore_dims=[0])
    ours = snir.load(graph, dt=1e-4)
    assert isinstance(ours[1], spiking.LIF) and isinstance(ours[3], spiking.CubaLIF)
    with torch.no_grad():
        from snntorch import utils

        utils.reset(net)
        theirs = torch.stack([net(xt)[0] for xt in x])
        assert theirs.sum() > 0 and torch.equal(ours(x), theirs)


def test_norse_model_to_nir_to_ours():
    # Norse 1.1's to_nir writes tau = dt / tau_mem_inv, which is NIR's tau only for dt = 1 (time in steps)
    torch.manual_seed(6)
    p1 = norse.LIFBoxParameters(tau_mem_inv=torch.tensor(0.25), v_th=torch.tensor(1.0))
    net = norse.SequentialState(nn.Linear(6, 5), norse.LIFBoxCell(p1, dt=1.0), nn.Linear(5, 5),
                                norse.IAFCell(), nn.Linear(5, 4), norse.LIFBoxCell(p1, dt=1.0))
    _scaled(net, 3.0)
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.bias.fill_(0.5)
    x = _input((30, 2, 6), scale=4.0)
    graph = norse.to_nir(net, x[0], dt=1.0)
    ours = snir.load(graph, dt=1.0)
    with torch.no_grad():
        theirs = _run_stateful(net, x)
        assert theirs.sum() > 0 and torch.equal(ours(x), theirs)


# ------------------------------------------------------------------------------------- HLOP, refusals


def _trained_hlop_mlp(method="bptt"):
    from spiking.plasticity import HLOP
    from spiking.plasticity.networks import HLOPMLP

    torch.manual_seed(7)
    net = HLOPMLP((12, 16, 10), method=method)
    hlop = HLOP(net, schedule=[[3, 3], [2, 2]])
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.rand(16, 12) * 3, torch.randint(0, 10, (16,))
    for task in (0, 1):
        hlop.before_task(task)
        for _ in range(3):
            opt.zero_grad()
            net.loss_backward(x, y, nn.functional.cross_entropy)
            opt.step()
            hlop.hebbian_step()
        hlop.after_task(task)
    return net, hlop, x


def test_network_trained_with_hlop_exports():
    net, hlop, x = _trained_hlop_mlp()
    assert any(b.size for b in hlop.banks.values())
    graph = snir.export(net, x)
    assert [type(n).__name__ for n in graph.nodes.values()] == ["Input", "Linear", "LIF", "Linear", "Output"]
    assert graph.metadata["time_steps"] == net.T and "mean" in graph.metadata["readout"]
    back = snir.load(graph)
    net.eval()
    with torch.no_grad():
        seq = x.unsqueeze(0).expand(net.T, *x.shape)
        assert net.neurons[0](net.fcs[0](seq)).sum() > 0
        assert torch.equal(back(seq).mean(0), net(x))
    with pytest.raises(TypeError, match="lateral banks"):
        snir.export(hlop, x)
    with pytest.raises(TypeError, match="lateral banks"):
        snir.export(next(iter(hlop.banks.values())), x)


def test_refusals_say_why():
    from spiking.plasticity.networks import HLOPMLP

    with pytest.raises(ValueError, match="rate readout"):
        snir.export(HLOPMLP((12, 8, 4), method="dsr"), torch.rand(2, 12))
    with pytest.raises(ValueError, match="adaptive-threshold"):
        snir.export(nn.Sequential(nn.Linear(3, 3), spiking.ALIF()), torch.rand(2, 1, 3))
    with pytest.raises(ValueError, match=r"'1' \(ReLU\) has no NIR mapping"):
        snir.export(nn.Sequential(nn.Linear(3, 3), nn.ReLU()), torch.rand(2, 1, 3))
    with pytest.warns(UserWarning, match="soft reset"):
        snir.export(nn.Sequential(spiking.LIF(v_reset=None)), torch.rand(2, 1, 3))
    with pytest.raises(ValueError, match="dt must be"):
        snir.export(nn.Sequential(spiking.LIF()), torch.rand(2, 1, 3), dt=0)


# ---------------------------------------------------------------------------------------- bad graphs


def _graph(nodes, edges=None, **meta):
    names = list(nodes)
    edges = edges if edges is not None else list(zip(names, names[1:]))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)


def _inp(n):
    return nir.Input(input_type={"input": np.array([n])})


def _out(n):
    return nir.Output(output_type={"output": np.array([n])})


def _lif(n, tau=2e-3):
    return nir.LIF(tau=np.full(n, tau) if np.isscalar(tau) else tau, r=np.ones(n), v_leak=np.zeros(n),
                   v_threshold=np.ones(n), v_reset=np.zeros(n))


def test_bad_graphs_name_the_node():
    w = np.ones((4, 3))
    with pytest.raises(ValueError, match=r"node 'delay' \(Delay\) is not supported"):
        snir.load(_graph({"in": _inp(3), "delay": nir.Delay(np.ones(3)), "out": _out(3)}, dt=1e-3))
    with pytest.raises(ValueError, match=r"node 'fc'.*does not fit its input of shape \(5,\)"):
        snir.load(_graph({"in": _inp(5), "fc": nir.Linear(weight=w), "out": _out(4)}, dt=1e-3))
    with pytest.raises(ValueError, match=r"node 'lif': tau varies across neurons"):
        snir.load(_graph({"in": _inp(3), "lif": _lif(3, np.array([1e-3, 2e-3, 3e-3])), "out": _out(3)}, dt=1e-3))
    with pytest.raises(ValueError, match=r"node 'lif': tau has shape \(4,\) but the node's input has shape \(3,\)"):
        snir.load(_graph({"in": _inp(3), "lif": _lif(4), "out": _out(3)}, dt=1e-3))
    leaky = _lif(3)
    leaky.v_leak = np.full(3, 0.5)
    with pytest.raises(ValueError, match=r"node 'lif': v_leak = 0.5 differs from v_reset = 0"):
        snir.load(_graph({"in": _inp(3), "lif": leaky, "out": _out(3)}, dt=1e-3))
    with pytest.raises(ValueError, match=r"node 'a': feeds 2 nodes"):
        snir.load(_graph({"in": _inp(3), "a": _lif(3), "b": _lif(3), "out": _out(3)},
                         [("in", "a"), ("a", "b"), ("a", "out"), ("b", "out")], dt=1e-3))
    with pytest.raises(ValueError, match="dt: the graph does not record its time step"):
        snir.load(_graph({"in": _inp(3), "lif": _lif(3), "out": _out(3)}))
    with pytest.raises(TypeError, match="nir.NIRGraph"):
        snir.load(_lif(3))


def test_general_nir_parameters_map_through_scales():
    """r ≠ 1 and ≠ tau/dt becomes an input Scale; the loaded LIF equals NIR's Euler step."""
    dt, tau, r = 1e-3, 4e-3, 2.5
    node = nir.LIF(tau=np.full(3, tau), r=np.full(3, r), v_leak=np.zeros(3), v_threshold=np.ones(3),
                   v_reset=np.zeros(3))
    net = snir.load(_graph({"in": _inp(3), "lif": node, "out": _out(3)}, dt=dt))
    assert isinstance(net[0], snir.Scale) and isinstance(net[1], spiking.LIF)
    x = _input((40, 2, 3), scale=1.0).double()
    v, ref = torch.zeros(2, 3, dtype=torch.float64), []
    for xt in x:
        v = v + dt / tau * ((0.0 - v) + r * xt)
        s = (v >= 1.0).double()
        v = torch.where(s > 0, torch.zeros_like(v), v)
        ref.append(s)
    with torch.no_grad():
        out = net.double()(x)
    assert out.sum() > 0 and torch.equal(out, torch.stack(ref))


def test_spiking_mlp_exports_with_its_readout():
    from spiking.models import SpikingMLP

    torch.manual_seed(8)
    model = SpikingMLP((12, 10, 8, 4), T=5)
    x = torch.rand(3, 12) * 3
    graph = snir.export(model, x)
    assert [type(n).__name__ for n in graph.nodes.values()] == ["Input", "Linear", "LIF", "Linear", "LIF", "Linear",
                                                                 "Output"]
    seq = x.unsqueeze(0).expand(5, 3, 12)
    with torch.no_grad():  # its readout is W·mean(s) = mean(W·s): equal up to rounding
        assert torch.allclose(snir.load(graph)(seq).mean(0), model(x), atol=1e-5)
