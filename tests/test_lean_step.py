"""The op-lean training-step pieces (issue #13) against their plain references."""
import math
import random

import pytest
import torch
import torch.nn.functional as F

from spiking.data import from_datasets
from spiking.models import MLP, time_mean
from spiking.runner import STRATEGIES
from spiking.runner.cross_entropy import cross_entropy


def test_cross_entropy_equals_functional_bit_for_bit_and_refuses_double_backward():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 5, generator=g)
    z[:, 3] = float("-inf")  # task-IL masking
    y = torch.tensor([0, 1, 2, 4, 0, 1, 2])
    a, b = z.clone().requires_grad_(), z.clone().requires_grad_()
    la, lb = cross_entropy(a, y), F.cross_entropy(b, y)
    (la * 3).backward()
    (lb * 3).backward()
    assert torch.equal(la, lb) and torch.equal(a.grad, b.grad)
    probs = torch.softmax(torch.randn(7, 5, generator=g), 1)  # probability targets: F.cross_entropy
    assert torch.equal(cross_entropy(z, probs), F.cross_entropy(z, probs))
    c = torch.randn(3, 4, requires_grad=True)
    (gc,) = torch.autograd.grad(cross_entropy(c, torch.tensor([0, 1, 3])), c, create_graph=True)
    with pytest.raises(RuntimeError):
        gc.sum().backward()


def test_time_mean_gradient_equals_mean():
    s = torch.randn(6, 4, 3)
    a, b = s.clone().requires_grad_(), s.clone().requires_grad_()
    w = torch.randn(4, 3)
    (time_mean(a) * w).sum().backward()
    (b.mean(0) * w).sum().backward()
    assert torch.equal(time_mean(s), s.mean(0)) and torch.equal(a.grad, b.grad)


def _stream(sizes, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return from_datasets([((torch.randn(n, d, generator=g), torch.arange(n) % 3),
                           (torch.randn(4, d, generator=g), torch.arange(4) % 3)) for n in sizes],
                         scenario="task")


def _strategy(name, stream, **opts):
    s = STRATEGIES[name](**opts)
    s.setup(MLP([6, 8, stream.n_outputs]), stream, {"lr": 0.1, "batch_size": 8, "seed": 0})
    return s


def test_batches_equal_the_tasks_own_batches():
    stream = _stream([21])
    s = _strategy("finetune", stream)
    ours = list(s.batches(stream[0], 8, torch.Generator().manual_seed(3)))
    ref = list(stream[0].train_batches(8, generator=torch.Generator().manual_seed(3)))
    assert len(ours) == len(ref) == 3
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(ours, ref))


@pytest.mark.parametrize("budget", ["union", "task"])
def test_joint_batches_equal_zipping_each_tasks_batches(budget):
    stream = _stream([10, 17, 7])
    task = stream[2]
    s = _strategy("joint", stream, budget=budget)
    ours = []
    for x, y in s.batches(task, 7, torch.Generator().manual_seed(5)):
        ours.append((x, y, s._task_ids))
    g, per = torch.Generator().manual_seed(5), math.ceil(7 / 3)  # the definition: zip, then concatenate
    iters = [stream[j].train_batches(per, generator=g) for j in range(3)]
    ref = []
    while True:
        parts = [(b[0], b[1], torch.full((len(b[1]),), j)) for j, it in enumerate(iters)
                 if (b := next(it, None)) is not None]
        if not parts or (budget == "task" and len(ref) == math.ceil(task.n_train / 7)):
            break
        ref.append(tuple(torch.cat(p) for p in zip(*parts)))
    assert len(ours) == len(ref) == (6 if budget == "union" else 1)  # ⌈17/3⌉ steps, or ⌈7/7⌉
    assert all(all(torch.equal(a, b) for a, b in zip(o, r)) for o, r in zip(ours, ref))


def test_reservoir_writes_equal_vitters_algorithm():
    stream = _stream([40, 40])
    s = _strategy("replay", stream, buffer_size=12)
    rng, seen, ref_x, ref_y = random.Random(7919), 0, [], []  # the strategy's seed: 0 + 7919
    for t in range(2):
        for x, y in stream[t].train_batches(8, generator=torch.Generator().manual_seed(t)):
            s._reservoir(x, y, stream[t])
            for i in range(len(y)):
                seen += 1
                if len(ref_x) < 12:
                    ref_x.append(x[i]), ref_y.append(int(y[i]))
                elif (j := rng.randrange(seen)) < 12:
                    ref_x[j], ref_y[j] = x[i], int(y[i])
    assert s.seen == seen and s.by.tolist() == ref_y and torch.equal(s.bx, torch.stack(ref_x))
