"""The runner strategy "hlop": options, logs, resume state, and the generic-model path."""

import pytest
import torch

from spiking.data.streams import from_datasets
from spiking.models import SpikingMLP
from spiking.plasticity import HLOPMLP, principal_angles
from spiking.runner.run import run
from spiking.runner.strategies import STRATEGIES
from spiking.runner.strategies.hlop import HLOPStrategy, parse_lateral


def _stream(n_tasks=2, n=96, d=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    parts = []
    for _ in range(n_tasks):
        W = torch.randn(d, 3, generator=g)
        x = torch.randn(n + 60, d, generator=g)
        y = (x @ W).argmax(1)
        parts.append(((x[:n], y[:n]), (x[n:], y[n:])))
    return from_datasets(parts, scenario="domain", name="synthetic")


def test_registered_and_options_validated():
    assert STRATEGIES["hlop"] is HLOPStrategy
    assert set(HLOPStrategy.options) >= {"train_method", "lateral", "hebb_iters"}
    with pytest.raises(ValueError, match="train_method"):
        HLOPStrategy(train_method="stdp")
    with pytest.raises(ValueError, match="subspace"):
        HLOPStrategy(subspace="svd")
    with pytest.raises(ValueError, match="lateral"):
        parse_lateral("1,2", 3)
    with pytest.raises(ValueError, match="lateral"):
        parse_lateral("paper", 2)
    assert parse_lateral("1,2,3/4,5,6", 3) == [[1, 2, 3], [4, 5, 6]]


@pytest.mark.parametrize("method", ["dsr", "ottt"])
def test_runner_run_logs_banks_and_resumes_state(method):
    torch.manual_seed(0)
    stream = _stream()
    models = []

    def model_fn(s):
        models.append(HLOPStrategy.build_model({"options": {"train_method": method}, "hidden": [16, 12]}, s))
        return models[-1]

    res = run({"method": "hlop", "tasks": 2, "batch_size": 32, "T": 4,
               "options": {"train_method": method, "lateral": "3,4,2/2,2,2", "energy_samples": 50}},
              stream=stream, model_fn=model_fn)
    model = models[-1]
    assert isinstance(model, HLOPMLP) and model.method == method
    assert model.T == (20 if method == "dsr" else 6)  # the method's own T, not the runner's
    log = model.hlop_log
    assert log["lateral_sizes"] == [{"fcs.0": 3, "fcs.1": 4, "fcs.2": 2}, {"fcs.0": 5, "fcs.1": 6, "fcs.2": 4}]
    assert len(log["subspace_energy"]) == 2 and all(0 < e <= 1 for s in log["subspace_energy"] for e in s.values())
    assert len(res["acc_matrix"]) == 2
    # resume state: a fresh strategy restored from state_dict has the same banks and log
    fresh = lambda: HLOPStrategy.build_model({"options": {"train_method": method}, "hidden": [16, 12]}, stream)
    s1 = HLOPStrategy(train_method=method, lateral="3,4,2/2,2,2")
    s1.setup(fresh(), stream, {"lr": 0.1})
    for task in stream:
        s1.before_task(task)
        x, y = next(iter(task.train_batches(32)))
        s1.train_step(x, y, task)
        s1.after_task(task)
    s2 = HLOPStrategy(train_method=method, lateral="3,4,2/2,2,2")
    s2.setup(fresh(), stream, {"lr": 0.1})
    s2.load_state_dict(s1.state_dict())
    assert s2.hlop.sizes() == s1.hlop.sizes()
    assert torch.equal(s2.hlop.banks["fcs.1"].H, s1.hlop.banks["fcs.1"].H)
    assert s2.report()["lateral_sizes"] == s1.report()["lateral_sizes"]
    assert not any(p.requires_grad for p in s2.model.parameters() if p.dim() <= 1)


def test_generic_model_needs_bptt_and_gets_gradient_hooks():
    stream = _stream()
    with pytest.raises(ValueError, match="train_method"):
        HLOPStrategy(train_method="dsr").setup(SpikingMLP([20, 16, 3], T=3), stream, {"lr": 0.1})
    torch.manual_seed(0)
    model = SpikingMLP([20, 16, 3], T=3)
    s = HLOPStrategy(train_method="bptt", lateral="5,4")
    s.setup(model, stream, {"lr": 0.1})
    s.before_task(stream[0])
    for x, y in stream[0].train_batches(32):
        s.train_step(x, y, stream[0])
    s.after_task(stream[0])
    s.before_task(stream[1])
    H = s.hlop.banks["fcs.0"].frozen
    assert H.shape == (5, 20)
    W0 = model.fcs[0].weight.detach().clone()
    x, y = next(iter(stream[1].train_batches(32)))
    s.train_step(x, y, stream[1])
    dW = model.fcs[0].weight.detach() - W0
    assert float(dW.norm()) > 0
    # the step is δᵀ x⊥ (lr 0.1): its component along H equals −lr·δᵀX(I−HᵀH)Hᵀ, small for Oja rows
    assert float((dW @ H.t()).norm()) < 0.05 * float(dW.norm())


@pytest.mark.parametrize("bad, match", [({"weight_decay": 1e-4}, "weight_decay"), ({"optimizer": "adam"}, "optimizer")])
def test_optimizer_settings_that_break_the_projection_are_refused(bad, match):
    cfg = dict(method="hlop", tasks=2, hidden=[16], epochs=1, batch_size=32, lr=0.1, seed=0,
               options={"train_method": "bptt", "lateral": "4,4"}, **bad)
    model_fn = lambda s: HLOPStrategy.build_model({"options": cfg["options"], "hidden": [16]}, s)  # noqa: E731
    with pytest.raises(ValueError, match=match):
        run(cfg, stream=_stream(), model_fn=model_fn)
    ok = {k: v for k, v in cfg.items() if k not in bad}
    assert len(run({**ok, "momentum": 0.9}, stream=_stream(), model_fn=model_fn)["acc_matrix"]) == 2


def test_sgd_momentum_is_reset_between_tasks_so_old_outputs_stay_put():
    """With momentum the buffer of task 1 would keep moving W along task-1 inputs during task 2;
    it is cleared in before_task, so task-2 steps stay in the projected (orthogonal) subspace."""
    stream = _stream(n_tasks=2, n=64, d=12)
    s = HLOPStrategy(train_method="bptt", lateral="12,12")  # the full input space: nothing may move
    model = HLOPStrategy.build_model({"options": {"train_method": "bptt"}, "hidden": [16]}, stream)
    s.setup(model, stream, {"lr": 0.1, "momentum": 0.9, "seed": 0})
    s.hlop.banks["fcs.0"].orthonormal = True
    for task in stream:
        s.before_task(task)
        if task.index == 1:
            W1 = model.fcs[0].weight.detach().clone()
        for x, y in task.train_batches(16, generator=torch.Generator().manual_seed(0)):
            s.train_step(x, y, task)
        s.after_task(task)
    assert float((model.fcs[0].weight.detach() - W1).abs().max()) < 1e-5


def test_pca_subspace_gives_the_exact_principal_rows_of_each_task():
    """``subspace="pca"``: no Hebbian update while training; after task k the first layer's new rows
    are the exact top principal directions of task k's training inputs outside the earlier rows."""
    torch.manual_seed(0)
    stream = _stream(d=20)
    model = HLOPStrategy.build_model({"options": {"train_method": "dsr"}, "hidden": [16, 12]}, stream)
    s = HLOPStrategy(train_method="dsr", lateral="4,3,2/3,2,2", subspace="pca", energy_samples=50)
    s.setup(model, stream, {"lr": 0.1})
    bank = s.hlop.banks["fcs.0"]
    expected = []
    for task in stream:
        s.before_task(task)
        start = bank.H.clone()
        for x, y in task.train_batches(32, generator=torch.Generator().manual_seed(1)):
            s.train_step(x, y, task)
        assert torch.equal(bank.H, start)  # no Oja step during the task
        X = task.train_data()[0].reshape(-1, 20).double()
        C = X.t() @ X
        if expected:  # the part of C outside the earlier rows
            Q = torch.linalg.qr(torch.cat(expected).t())[0]
            P = torch.eye(20, dtype=torch.float64) - Q @ Q.t()
            C = P @ C @ P
        k = bank.size - bank.n_frozen
        expected.append(torch.linalg.eigh(C)[1][:, -k:].t())
        s.after_task(task)
        assert principal_angles(bank.H[-k:].double(), expected[-1]).max() < 1e-4
    assert bank.n_frozen == 7 and principal_angles(bank.H.double(), torch.cat(expected)).max() < 1e-4
    assert s.report()["knobs"]["subspace"] == "pca"
    with pytest.raises(ValueError, match="fcs.1"):
        s.hlop.fit_principal({"fcs.0": torch.eye(20, dtype=torch.float64)})
    with pytest.raises(ValueError, match=r"C must be \[20, 20\]"):
        bank.fit_principal(torch.eye(19))
