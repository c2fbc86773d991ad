"""Baseline strategies: finetune, EWC, replay, GPM, joint (behaviour, not just that they run)."""
import math

import pytest
import torch
from torch import nn

from spiking.data import from_datasets
from spiking.models import MLP
from spiking.runner import STRATEGIES, run
from spiking.runner.strategies.gpm import extend_basis

CFG = {"lr": 0.1, "batch_size": 8, "seed": 0}


def random_stream(n_tasks=2, scenario="class", n=40, d=12, classes_per_task=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    parts = []
    for t in range(n_tasks):
        lo = 0 if scenario == "domain" else classes_per_task * t
        def draw(m):
            return torch.randn(m, d, generator=g), lo + torch.arange(m) % classes_per_task
        parts.append((draw(n), draw(n // 2)))
    return from_datasets(parts, scenario=scenario)


def setup(name, stream, model=None, **opts):
    torch.manual_seed(0)
    model = model or MLP([12, 16, stream.n_outputs])
    s = STRATEGIES[name](**opts)
    s.setup(model, stream, CFG)
    return s, model


def train_task(s, task, steps=None):
    s.before_task(task)
    for i, (x, y) in enumerate(s.batches(task, 8, torch.Generator().manual_seed(task.index))):
        if steps is not None and i >= steps:
            break
        s.train_step(x, y, task)
    s.after_task(task)


def test_registry_and_base_behaviour():
    assert {"finetune", "ewc", "replay", "gpm", "joint"} <= set(STRATEGIES)
    with pytest.raises(ValueError, match="buffer_sise"):
        STRATEGIES["replay"](buffer_sise=3)
    s, _ = setup("finetune", random_stream())
    with pytest.raises(NotImplementedError, match="finetune"):
        s.unlearn({"task": 0})


def test_task_il_training_only_touches_the_task_outputs():
    stream = random_stream(scenario="task")
    s, model = setup("finetune", stream, model=nn.Linear(12, 4))
    w0 = model.weight.detach().clone()
    x, y = next(iter(stream[1].train_batches(8)))
    s.train_step(x, y, stream[1])
    changed = (model.weight.detach() - w0).abs().sum(1) > 0
    assert changed.tolist() == [False, False, True, True]  # task 1 owns classes 2, 3


def test_extend_basis_energy_threshold():
    g = torch.Generator().manual_seed(0)
    dirs = torch.linalg.qr(torch.randn(10, 3, generator=g))[0]
    # energies 100, 10, 0.01 along three orthogonal directions
    A = dirs @ torch.diag(torch.tensor([10.0, 3.1623, 0.1])) @ torch.linalg.qr(torch.randn(50, 3, generator=g))[0].T
    # energy shares 100/110.01 = 0.909, 10/110.01 = 0.091, 0.01/110.01 = 0.00009
    U1 = extend_basis(None, A, 0.90)
    assert U1.shape == (10, 1)
    assert torch.allclose((U1.T @ dirs[:, 0]).abs(), torch.ones(1), atol=1e-4)
    U2 = extend_basis(None, A, 0.95)
    assert U2.shape == (10, 2) and torch.allclose(U2.T @ U2, torch.eye(2), atol=1e-5)
    assert extend_basis(None, A, 0.99995).shape == (10, 3)
    # an existing basis counts towards the criterion: U1 covers 0.909, one more direction is enough
    grown = extend_basis(U1, A, 0.95)
    assert grown.shape == (10, 2) and torch.allclose(grown.T @ grown, torch.eye(2), atol=1e-5)
    assert extend_basis(U2, A, 0.95).shape == (10, 2)  # already covered: nothing added


def test_gpm_updates_are_orthogonal_to_old_inputs():
    stream = random_stream()
    s, model = setup("gpm", stream, model=MLP([12, 16, 4], bias=True), threshold_first=0.9,
                     threshold=0.9)
    train_task(s, stream[0])
    assert all(U is not None for U in s.bases)
    before = [lin.weight.detach().clone() for lin in s.linears]
    bias = [lin.bias.detach().clone() for lin in s.linears]
    bases = [U.clone() for U in s.bases]
    train_task(s, stream[1], steps=4)
    assert sum(U.shape[1] for U in s.bases) > sum(U.shape[1] for U in bases)  # task 1 added some
    for lin, U, w0, b0 in zip(s.linears, bases, before, bias):
        dW = lin.weight.detach() - w0
        assert dW.abs().sum() > 0
        assert torch.allclose(dW @ U, torch.zeros_like(dW @ U), atol=1e-5)
        assert torch.equal(lin.bias.detach(), b0)  # non-weight parameters frozen after task 1


def test_online_ewc_proximal_penalty_and_fisher_accumulation():
    stream = random_stream()
    s, model = setup("ewc", stream, ewc_lambda=10.0, ewc_gamma=0.5, fisher_samples=16)
    train_task(s, stream[0])
    F0 = {n: f.clone() for n, f in s.fisher.items()}
    assert all((f >= 0).all() for f in F0.values()) and any(f.sum() > 0 for f in F0.values())
    assert s.penalty().item() == 0.0  # at the anchor
    with torch.no_grad():
        model.net[0].weight.add_(0.1)
    w = model.net[0].weight.detach().clone()
    a, f = s.anchor["net.0.weight"], s.fisher["net.0.weight"]
    assert s.penalty().item() == pytest.approx(0.5 * 10.0 * (f * 0.01).sum().item(), rel=1e-4)
    s.proximal(lr=0.1)  # θ* + (θ − θ*) / (1 + lr λ F)
    assert torch.allclose(model.net[0].weight, a + (w - a) / (1 + 0.1 * 10.0 * f))
    new = s.estimate_fisher(stream[1])
    s.after_task(stream[1])
    for n in F0:
        assert torch.allclose(s.fisher[n], 0.5 * F0[n] + new[n])


def test_ewc_is_stable_for_a_huge_lambda():
    stream = random_stream()
    s, model = setup("ewc", stream, ewc_lambda=1e9, fisher_samples=16)
    train_task(s, stream[0])
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_task(s, stream[1])
    for n, p in model.named_parameters():
        assert torch.isfinite(p).all()
        moved = (p.detach() - anchor[n]).abs()
        assert (moved[s.fisher[n] > 1e-4] < 1e-3).all()  # parameters that matter stay put


def test_reservoir_replay_buffer_and_schedule():
    stream = random_stream(n_tasks=3, n=64)
    s, _ = setup("replay", stream, buffer_size=30, schedule="power", schedule_rate=8.0)
    train_task(s, stream[0])
    assert len(s.by) == 30 and s.seen == 64 and set(s.bt.tolist()) == {0}
    train_task(s, stream[1])
    assert len(s.by) == 30 and s.seen == 128 and set(s.bt.tolist()) == {0, 1}
    # a replayed batch draws old tasks only; the power schedule (rate 8) favours the youngest
    _, _, t = s.sample(2)
    assert set(t) <= {0, 1} and t.count(1) > t.count(0)
    state = s.state_dict()
    other, _ = setup("replay", stream, buffer_size=30, schedule="power", schedule_rate=8.0)
    other.load_state_dict(state)
    assert torch.equal(other.bx, s.bx) and other.seen == s.seen
    assert torch.equal(other.sample(2)[0], s.sample(2)[0])  # generator state restored


def test_class_balanced_buffer_quotas():
    stream = random_stream(n_tasks=2, n=40)
    s, _ = setup("replay", stream, buffer_size=20, policy="class_balanced")
    train_task(s, stream[0])
    assert torch.bincount(s.by).tolist() == [10, 10]
    train_task(s, stream[1])
    assert torch.bincount(s.by, minlength=4).tolist() == [5, 5, 5, 5]


def test_joint_batches_mix_all_seen_tasks():
    stream = random_stream(n_tasks=3, n=24)
    s, _ = setup("joint", stream)
    batches = list(s.batches(stream[2], 9, torch.Generator().manual_seed(0)))
    # 3 samples per task per step, 24 samples per task -> 8 steps over the union
    assert len(batches) == 8 and all(len(y) == 9 for _, y in batches)
    assert sorted(set(batches[0][1].tolist())) == [0, 1, 2, 3, 4, 5]
    t, _ = setup("joint", stream, budget="task")
    assert len(list(t.batches(stream[2], 9, torch.Generator().manual_seed(0)))) == math.ceil(24 / 9)


def test_replay_unlearning_event_lowers_the_forgotten_task():
    stream = random_stream(n_tasks=2, n=64)
    res = run({"method": "replay", "model": "mlp", "hidden": [16], "epochs": 3, "batch_size": 8,
               "lr": 0.1, "unlearn": [[1, {"task": 0}]],
               "options": {"buffer_size": 64, "unlearn_steps": 30, "unlearn_alpha": 1.0}},
              stream=stream)
    rec = res["unlearning"][0]
    assert rec["target"] == {"task": 0} and rec["time_s"] > 0
    assert rec["forgotten_acc"] < rec["forgotten_acc_before"]
