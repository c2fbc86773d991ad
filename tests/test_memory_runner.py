"""The "sparsey" learner in the task-sequence runner (strategy contract, exact unlearning)."""
import torch

from spiking.data.streams import from_datasets
from spiking.runner.strategies import STRATEGIES


def toy_stream(seed=0, n=24):
    """Two class-incremental tasks of two classes; each class = a bar image plus noise."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.zeros(4, 28, 28)
    protos[0, 4:24, 6:9] = 1
    protos[1, 6:9, 4:24] = 1
    protos[2, 4:24, 18:21] = 1
    protos[3, 18:21, 4:24] = 1

    def split(classes, m):
        y = torch.tensor(classes).repeat_interleave(m)
        x = protos[y] + 0.2 * torch.rand(len(y), 28, 28, generator=g)
        return x.reshape(len(y), -1), y
    return from_datasets([(split([0, 1], n), split([0, 1], 8)), (split([2, 3], n), split([2, 3], 8))],
                         scenario="class")


def test_sparsey_registered_and_learns_unlearns_resumes():
    stream = toy_stream()
    s = STRATEGIES["sparsey"](Q=8, K=8, neighbours=3)
    model = torch.nn.Linear(784, stream.n_outputs)
    s.setup(model, stream, {"seed": 0})
    losses = []
    for task in stream:
        for x, y in task.train_batches(16, generator=torch.Generator().manual_seed(1)):
            losses.append(s.train_step(x, y, task))
    assert losses[0] == 1.0 and all(0.0 <= v <= 1.0 for v in losses)
    xs, ys = zip(*(t.test_data() for t in stream))
    x, y = torch.cat(xs), torch.cat(ys)
    logits = model(x)
    assert logits.shape == (len(y), stream.n_outputs)
    assert (logits.argmax(1) == y).float().mean() >= 0.9
    state = s.state_dict()
    s.unlearn({"task": 0})
    assert not bool(torch.isin(s.labels, torch.tensor([0, 1])).any())
    pred = model(x).argmax(1)
    assert not bool(torch.isin(pred, torch.tensor([0, 1])).any())       # nothing of task 0 votes
    assert (pred[y >= 2] == y[y >= 2]).float().mean() >= 0.9             # retained unchanged
    s.load_state_dict(state)
    assert (model(x).argmax(1) == y).float().mean() >= 0.9


def test_forget_features_removes_level1_writes_exactly():
    stream = toy_stream(seed=2)
    s = STRATEGIES["sparsey"](Q=8, K=8, theta_sat=None, forget_features=True)
    s.setup(torch.nn.Linear(784, stream.n_outputs), stream, {"seed": 0})
    for task in stream:
        for x, y in task.train_batches(16, shuffle=False):
            s.train_step(x, y, task)
    assert any(m.U.n_set() > 0 for m in s.hierarchy.macs)
    s.unlearn({"classes": [0, 1, 2, 3]})
    assert len(s.labels) == 0
    assert all(m.U.n_set() == 0 for m in s.hierarchy.macs)
