"""End to end on a small permuted-MNIST subset: HLOP forgets far less than fine-tuning."""

import pytest
import torch

from spiking.data import permuted_mnist
from spiking.plasticity import HLOPMLP
from spiking.runner.strategies import STRATEGIES
from spiking.runner.strategy import Strategy


@pytest.fixture(autouse=True)
def _one_thread():
    """Small matrices: one thread is faster and steadier on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _accuracy(model, task):
    x, y = task.test_subset(1000, 0)
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _run(strategy, method, stream, epochs=4):
    torch.manual_seed(0)
    model = HLOPMLP((784, 100, 100, 10), method=method)
    strategy.setup(model, stream, {"lr": 0.1, "seed": 0})
    R = []
    for task in stream:
        strategy.before_task(task)
        g = torch.Generator().manual_seed(task.index)
        for _ in range(epochs):
            for x, y in task.train_batches(64, generator=g):
                strategy.train_step(x, y, task)
        strategy.after_task(task)
        R.append([_accuracy(model, t) for t in stream])
    return R, model


@pytest.mark.parametrize("method", ["dsr", "bptt"])
def test_hlop_forgets_far_less_than_finetune_on_permuted_mnist(method):
    try:
        stream = permuted_mnist(n_tasks=3, seed=0, train_subset=3000)
    except FileNotFoundError as exc:  # pragma: no cover - data shipped in data/mnist
        pytest.skip(f"MNIST not available: {exc}")
    hlop = STRATEGIES["hlop"](train_method=method, lateral="80,40,40")
    R_h, model = _run(hlop, method, stream)
    R_f, _ = _run(Strategy(), method, stream)
    bwt = lambda R: sum(R[-1][i] - R[i][i] for i in range(len(R) - 1)) / (len(R) - 1)
    forget_h, forget_f = R_h[0][0] - R_h[-1][0], R_f[0][0] - R_f[-1][0]
    assert min(R_h[i][i] for i in range(3)) > 0.85  # every task is learned under HLOP
    assert forget_f > 0.05                            # fine-tuning forgets the first task
    assert forget_h < 0.35 * forget_f                 # HLOP keeps most of it
    assert bwt(R_h) > bwt(R_f) + 0.02
    log = model.hlop_log
    assert [s["fcs.1"] for s in log["lateral_sizes"]] == [40, 80, 100]  # capped at the layer's width 100
    assert all(0.5 < e["fcs.0"] <= 1.0 for e in log["subspace_energy"])
    assert log["hebbian_s"] > 0 and log["projection_s"] > 0
