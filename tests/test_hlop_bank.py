"""LateralBank growth/merge and the HLOP wrapper: projected updates leave old-subspace outputs unchanged."""

import pytest
import torch
from torch import nn

from spiking.plasticity.hebbian import principal_angles
from spiking.plasticity.hlop import HLOP, PAPER_PMNIST_SCHEDULE, LateralBank
from spiking.plasticity.networks import HLOPMLP


def test_bank_growth_orthonormal_blocks_and_merge():
    g = torch.Generator().manual_seed(0)
    bank = LateralBank(30, lr=0.01)
    bank.add_group(4, g)
    assert bank.size == 4 and bank.n_frozen == 0 and bank.groups == [4]
    assert torch.allclose(bank.H @ bank.H.t(), torch.eye(4), atol=1e-5)
    bank.update(torch.randn(16, 30, generator=g))
    bank.add_group(3, g)  # merges the first block
    assert bank.n_frozen == 4 and bank.size == 7 and bank.groups == [4, 3]
    assert torch.allclose(bank.H[4:] @ bank.H[4:].t(), torch.eye(3), atol=1e-5)
    before = bank.H[:4].clone()
    bank.update(torch.randn(16, 30, generator=g))
    assert torch.equal(bank.H[:4], before)
    bank.add_group(100, g)  # capped at the input width
    assert bank.size == 30
    with pytest.raises(ValueError, match="in_features"):
        LateralBank(0)


def test_paper_schedule_sizes():
    totals = [sum(s[i] for s in PAPER_PMNIST_SCHEDULE) for i in range(3)]
    assert len(PAPER_PMNIST_SCHEDULE) == 10 and totals == [470, 590, 490]


def _train_task(model, hlop, batches, task, lr=0.1):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    hlop.before_task(task)
    for x, y in batches:
        opt.zero_grad()
        model.loss_backward(x, y, nn.functional.cross_entropy)
        opt.step()
        hlop.hebbian_step()
    hlop.after_task(task)


def _subspace_batches(U, n, g, B=32):
    return [(torch.randn(B, U.shape[0], generator=g) @ U, torch.randint(0, 4, (B,), generator=g)) for _ in range(n)]


@pytest.mark.parametrize("method", ["dsr", "bptt", "ottt"])
def test_projected_updates_leave_first_layer_outputs_on_old_subspace_unchanged(method):
    """Task 1 inputs live in a 6-dim subspace; task 2 inputs are generic. With the bank learned on
    task 1, every task-2 update of fc1 is orthogonal to that subspace: fc1's output on task-1
    inputs barely moves, while without HLOP it moves a lot."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    U = torch.linalg.qr(torch.randn(24, 6, generator=g))[0].t()  # [6, 24] orthonormal rows
    old = _subspace_batches(U, 150, g)
    new = [(torch.randn(32, 24, generator=g), torch.randint(0, 4, (32,), generator=g)) for _ in range(20)]
    x_old = torch.randn(200, 6, generator=g) @ U
    moved = {}
    for protect in (True, False):
        torch.manual_seed(0)
        model = HLOPMLP((24, 32, 16, 4), method=method)
        hlop = HLOP(model, schedule=[[6, 12, 12]] if protect else [[0, 0, 0]], lr=[0.01, 0.01, 0.01])
        _train_task(model, hlop, old, 0)
        if protect:
            assert principal_angles(hlop.banks["fcs.0"].frozen, U).max() < 0.1
        W_before = model.fcs[0].weight.detach().clone()
        _train_task(model, hlop, new, 1)
        dW = model.fcs[0].weight.detach() - W_before
        moved[protect] = float((x_old @ dW.t()).norm() / (x_old @ W_before.t()).norm())
        assert float(dW.norm()) > 0  # the layer did learn task 2
    assert moved[False] > 0.003
    assert moved[True] < 0.01 * moved[False]


def test_exact_orthonormal_projector_gives_exactly_unchanged_outputs():
    """With a projector spanning the old inputs exactly, old outputs of every layer type do not move."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    lin, conv = nn.Linear(20, 7, bias=False), nn.Conv2d(2, 3, 3, bias=False)
    model = nn.Sequential(conv, nn.Flatten(), nn.ReLU(), nn.Linear(3 * 4 * 4, 20, bias=False), nn.ReLU(), lin)
    hlop = HLOP(model, layers=["0", "3", "5"], schedule=1, lr=0.01)
    hlop.before_task(0)
    hlop.after_task(0)
    Q = torch.linalg.qr(torch.randn(18, 18, generator=g))[0].t()[:5]   # conv patch subspace
    Ql = torch.linalg.qr(torch.randn(20, 20, generator=g))[0].t()[:8]  # last-layer input subspace
    hlop.banks["0"].H, hlop.banks["0"].n_frozen = Q.clone(), 5
    hlop.banks["5"].H, hlop.banks["5"].n_frozen = Ql.clone(), 8
    hlop.banks["3"].H, hlop.banks["3"].n_frozen = torch.zeros(0, 48), 0
    W0, Wl = conv.weight.detach().clone(), lin.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 2, 6, 6, generator=g)).pow(2).sum().backward()
        opt.step()
    patches = torch.randn(50, 5, generator=g) @ Q
    assert float((patches @ (conv.weight.detach() - W0).reshape(3, 18).t()).abs().max()) < 1e-5
    assert float((conv.weight.detach() - W0).abs().max()) > 1e-2
    x_old = torch.randn(50, 8, generator=g) @ Ql
    assert float((x_old @ (lin.weight.detach() - Wl).t()).abs().max()) < 1e-5
    # the Hebbian rule of a conv layer sees its unfolded patches: 8 images × 4·4 positions × (2·3·3)
    assert hlop.hebbian_input("0").shape == (8 * 16, 18)
    hlop.remove()
    hlop.clear_inputs()
    model(torch.randn(2, 2, 6, 6))
    assert hlop.hebbian_input("0") is None  # no capture after remove()


def test_input_form_and_gradient_hook_give_the_same_gradients():
    """HLOPLinear projects its saved input; a plain nn.Linear gets the gradient hook: same numbers."""
    torch.manual_seed(0)
    net = HLOPMLP((10, 12, 5), method="bptt")
    plain = nn.Sequential(nn.Linear(10, 12, bias=False), nn.Linear(12, 5, bias=False))
    plain.load_state_dict({"0.weight": net.fcs[0].weight, "1.weight": net.fcs[1].weight})
    h_net = HLOP(net, schedule=[[4, 3]])
    h_plain = HLOP(plain, schedule=[[4, 3]])
    for h in (h_net, h_plain):
        h.before_task(0)
        for b in h.banks.values():
            b.H.mul_(0.7)  # not orthonormal
        h.after_task(0)
    h_plain.banks["0"].H.copy_(h_net.banks["fcs.0"].H)
    h_plain.banks["1"].H.copy_(h_net.banks["fcs.1"].H)
    h_net._sync_projectors()
    x = torch.randn(6, 10)
    net.fcs[1](net.fcs[0](x)).sum().backward()
    plain(x).sum().backward()
    assert torch.allclose(net.fcs[0].weight.grad, plain[0].weight.grad, atol=1e-6)
    assert torch.allclose(net.fcs[1].weight.grad, plain[1].weight.grad, atol=1e-6)
    assert h_plain.hebbian_input("0").shape == (6, 10)


def test_one_dimensional_parameters_frozen_after_first_task_and_state_roundtrip():
    net = HLOPMLP((10, 12, 12, 4), method="dsr")
    hlop = HLOP(net, schedule=[[2, 3, 4], [1, 1, 1]])
    hlop.before_task(0)
    assert all(p.requires_grad for p in net.parameters())
    hlop.after_task(0)
    assert [n for n, p in net.named_parameters() if not p.requires_grad] == ["neurons.0.v_threshold", "neurons.1.v_threshold"]
    hlop.before_task(1)
    assert hlop.sizes() == {"fcs.0": 3, "fcs.1": 4, "fcs.2": 5}
    assert net.fcs[1].projector.shape == (3, 12)
    other = HLOP(HLOPMLP((10, 12, 12, 4), method="dsr"), schedule=[[2, 3, 4], [1, 1, 1]])
    other.load_state_dict(hlop.state_dict())
    assert other.sizes() == hlop.sizes() and torch.equal(other.banks["fcs.2"].H, hlop.banks["fcs.2"].H)
    with pytest.raises(ValueError, match="schedule"):
        HLOP(net, schedule=[[1, 2]])
    with pytest.raises(ValueError, match="layers"):
        HLOP(net, layers=["nope"])


def test_lateral_spiking_bank_uses_quantised_responses():
    """With lateral spiking neurons the update is the Oja step on round(clamp(y,±s)/s·Ts)/Ts·s."""
    from spiking.plasticity.hebbian import oja_delta, quantise_lateral
    g = torch.Generator().manual_seed(0)
    bank = LateralBank(6, lr=0.1, iters=1, momentum=0.0, quantise=(20.0, 40.0))
    bank.add_group(2, g)
    H0, X = bank.H.clone(), torch.randn(5, 6, generator=g) * 3
    bank.update(X)
    Y = quantise_lateral(X @ H0.t(), 20.0, 40.0)
    expected = H0 + 0.1 * (Y.t() @ (X - Y @ H0) / 5).clamp(-10, 10)
    assert torch.allclose(bank.H, expected, atol=1e-5)
    analog = H0 + 0.1 * oja_delta(H0, X).clamp(-10, 10)
    assert not torch.allclose(bank.H, analog, atol=1e-4)  # quantisation changed the update


@pytest.mark.parametrize("method, hebb_rate", [("dsr", "mean"), ("dsr", "weighted"), ("bptt", None)])
def test_residual_handed_over_by_the_projection_gives_the_same_hebbian_update(method, hebb_rate):
    """Layers whose Hebbian input is their gradient input reuse the backward pass's x⊥ as the
    frozen rows' residual; the Oja update must equal the one computed from scratch (float64)."""
    import copy
    extra = {"hebb_rate": hebb_rate} if hebb_rate else {}
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    net = HLOPMLP((20, 24, 24, 4), method=method, **extra).double()
    hlop = HLOP(net, schedule=[[6, 8, 8], [3, 3, 3]], lr=[0.01, 0.01, 0.01])
    batches = [(torch.randn(16, 20, generator=g, dtype=torch.float64), torch.randint(0, 4, (16,), generator=g))
               for _ in range(5)]
    _train_task(net, hlop, batches, 0)
    hlop.before_task(1)
    sharing = [n for n, m in hlop.modules.items() if m.hebb_is_grad_input]
    assert sharing == (["fcs.0", "fcs.1", "fcs.2"] if hebb_rate != "weighted" else ["fcs.0"])
    results = []
    for use_shared in (True, False):
        n2, h2 = copy.deepcopy((net, hlop))
        x, y = batches[0]
        n2.loss_backward(x, y, nn.functional.cross_entropy)
        for name in sharing:
            assert h2.modules[name].residual is not None
            if not use_shared:
                h2.modules[name].residual = None
        h2.hebbian_step()
        results.append({n: b.H.clone() for n, b in h2.banks.items()})
    for n in results[0]:
        assert torch.allclose(results[0][n], results[1][n], rtol=0, atol=1e-13)
        assert (results[0][n][-3:] - hlop.banks[n].H[-3:]).abs().max() > 1e-6  # the rows did learn
