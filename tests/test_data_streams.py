"""Task streams of spiking.data.streams: permuted/split MNIST and user datasets."""

from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from spiking.data import Task, TaskStream, from_datasets, load_mnist, permuted_mnist, split_mnist
from spiking.data import streams

needs_fashion = pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)


@pytest.fixture(scope="module")
def mnist():
    return load_mnist(download=False)


def rows(x: torch.Tensor):
    """The multiset of rows of ``x``: sorted distinct rows and their counts (exact comparison)."""
    return torch.unique(x.reshape(len(x), -1), dim=0, return_counts=True)


def same_rows(a: torch.Tensor, b: torch.Tensor) -> bool:
    return all(torch.equal(u, v) for u, v in zip(rows(a), rows(b)))


def pixel_keys(images: torch.Tensor) -> torch.Tensor:
    """An exact int64 fingerprint per uint8-valued image."""
    w = torch.randint(1, 10**6, (images[0].numel(),), generator=torch.Generator().manual_seed(0))
    return images.reshape(len(images), -1).long() @ w


def expected_pixels(raw: torch.Tensor, mean=streams.MNIST_MEAN, std=streams.MNIST_STD):
    return ((raw.reshape(len(raw), -1).float() / 255) - mean) / std


# ----------------------------------------------------------------------------- permuted MNIST


def test_permuted_stream_layout():
    s = permuted_mnist(n_tasks=3, train_subset=500)
    assert isinstance(s, TaskStream) and len(s) == 3 and isinstance(s[0], Task)
    assert s.scenario == "domain" and not s.task_labels_at_test
    assert s.n_outputs == 10 and s.input_shape == (784,)
    assert [t.index for t in s] == [0, 1, 2] and len({t.name for t in s}) == 3
    assert all(t.classes == tuple(range(10)) and t.n_train == 500 and t.n_test == 10000 for t in s)
    x, y = next(s[1].train_batches(32))
    assert x.shape == (32, 784) and x.dtype == torch.float32 and y.dtype == torch.int64
    x, y = next(permuted_mnist(n_tasks=1, flatten=False, train_subset=10)[0].train_batches(4))
    assert x.shape == (4, 1, 28, 28)


def test_permutation_seeding(mnist):
    a = permuted_mnist(n_tasks=3, seed=1)
    b = permuted_mnist(n_tasks=3, seed=1)
    c = permuted_mnist(n_tasks=3, seed=2)
    xa, ya = a[1].test_subset(50, seed=0)
    xb, yb = b[1].test_subset(50, seed=0)
    xc, yc = c[1].test_subset(50, seed=0)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(ya, yc) and not torch.equal(xa, xc)
    assert not torch.equal(xa, a[2].test_subset(50, seed=0)[0])
    # a permutation only moves pixels: each image keeps its multiset of values
    plain = expected_pixels(mnist[2][:50])
    x0 = a[0].test_data()[0][:50]
    assert torch.allclose(x0.sort(dim=1).values, plain.sort(dim=1).values, atol=1e-6)
    assert not torch.allclose(x0, plain, atol=1e-6)


def test_first_unpermuted(mnist):
    s = permuted_mnist(n_tasks=3, seed=3, first_unpermuted=True)
    ref = permuted_mnist(n_tasks=3, seed=3)
    x0, y0 = s[0].test_data()
    assert torch.allclose(x0, expected_pixels(mnist[2]), atol=1e-5)
    assert torch.equal(y0, mnist[3])
    for i in (1, 2):  # later tasks are unchanged by the option
        assert torch.equal(s[i].test_subset(20, 0)[0], ref[i].test_subset(20, 0)[0])


def test_normalisation(mnist):
    x, _ = permuted_mnist(n_tasks=1, first_unpermuted=True)[0].train_data()
    assert abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1) < 1e-3
    raw, _ = permuted_mnist(n_tasks=1, first_unpermuted=True, normalize=False)[0].test_data()
    assert torch.allclose(raw, mnist[2].reshape(10000, -1).float() / 255)


def test_train_subset_is_seeded_and_shared(mnist):
    kw = dict(n_tasks=2, train_subset=300, first_unpermuted=True, normalize=False)
    a, b, c = permuted_mnist(seed=5, **kw), permuted_mnist(seed=5, **kw), permuted_mnist(seed=6, **kw)
    xa, ya = a[0].train_data()
    assert torch.equal(xa, b[0].train_data()[0]) and not torch.equal(ya, c[0].train_data()[1])
    assert torch.equal(ya, a[1].train_data()[1])  # same rows for every task
    # every subset row is a distinct MNIST training image, with its own label
    keys = pixel_keys((xa * 255).round())
    full_keys, order = pixel_keys(mnist[0]).sort()
    pos = torch.searchsorted(full_keys, keys)
    assert torch.equal(full_keys[pos], keys) and keys.unique().numel() == 300
    assert torch.equal(mnist[1][order[pos]], ya)


def test_epoch_covers_each_training_sample_once():
    task = permuted_mnist(n_tasks=2, seed=0, train_subset=2000)[1]
    batches = list(task.train_batches(300, generator=torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in batches] == [300] * 6 + [200]
    xs = torch.cat([x for x, _ in batches])
    ys = torch.cat([y for _, y in batches])
    x_all, y_all = task.train_data()
    assert same_rows(xs, x_all)
    assert torch.equal(ys.sort().values, y_all.sort().values)
    assert not torch.equal(ys, y_all)  # shuffled
    dropped = list(task.train_batches(300, drop_last=True))
    assert [len(y) for _, y in dropped] == [300] * 6


def test_batch_order_seeding():
    task = permuted_mnist(n_tasks=1, train_subset=1000)[0]

    def order(seed):
        return torch.cat([y for _, y in task.train_batches(100, torch.Generator().manual_seed(seed))])

    assert torch.equal(order(1), order(1)) and not torch.equal(order(1), order(2))
    plain = torch.cat([y for _, y in task.train_batches(100, shuffle=False)])
    assert torch.equal(plain, task.train_data()[1])


def test_exact_indices_from_custom_stream():
    n = 103
    x = torch.arange(n, dtype=torch.float32)[:, None]
    zeros = torch.zeros(n, dtype=torch.long)
    stream = from_datasets([((x, zeros), (x[:5], zeros[:5]))])
    seen = torch.cat([xb[:, 0] for xb, _ in stream[0].train_batches(10, torch.Generator().manual_seed(0))])
    assert seen.long().sort().values.tolist() == list(range(n))


def test_test_subset(mnist):
    task = permuted_mnist(n_tasks=1, first_unpermuted=True, normalize=False)[0]
    x1, y1 = task.test_subset(100, seed=7)
    x2, _ = task.test_subset(100, seed=7)
    x3, _ = task.test_subset(100, seed=8)
    assert x1.shape == (100, 784) and torch.equal(x1, x2) and not torch.equal(x1, x3)
    keys = pixel_keys((x1 * 255).round())  # every subset row is a distinct test image
    full_keys, order = pixel_keys(mnist[2]).sort()
    pos = torch.searchsorted(full_keys, keys)
    assert torch.equal(full_keys[pos], keys) and keys.unique().numel() == 100
    assert torch.equal(mnist[3][order[pos]], y1)
    with pytest.raises(ValueError, match="n must be <= 10000"):
        task.test_subset(10001, seed=0)
    with pytest.raises(ValueError, match="seed"):
        task.test_subset(10, seed=-1)


def test_test_batches_are_the_test_data_in_order(mnist):
    task = permuted_mnist(n_tasks=2, seed=3)[1]
    x, y = task.test_data()
    batches = list(task.test_batches(3000))
    assert [len(b[1]) for b in batches] == [3000, 3000, 3000, 1000]
    assert torch.equal(torch.cat([b[0] for b in batches]), x) and torch.equal(torch.cat([b[1] for b in batches]), y)
    small = from_datasets([((torch.randn(4, 3), torch.zeros(4, dtype=torch.long)),
                            (torch.randn(5, 3), torch.arange(5) % 2))])[0]
    xs, ys = small.test_data()
    got = list(small.test_batches(2))
    assert [b[0].shape[0] for b in got] == [2, 2, 1] and torch.equal(torch.cat([b[0] for b in got]), xs)
    with pytest.raises(ValueError, match="batch_size"):
        small.test_batches(0)


# ----------------------------------------------------------------------------- split MNIST


@pytest.mark.parametrize("scenario", ["class", "task", "domain"])
def test_split_labels(mnist, scenario):
    s = split_mnist(scenario=scenario)
    counts = torch.bincount(mnist[1])
    assert len(s) == 5 and s.scenario == scenario
    assert s.task_labels_at_test == (scenario == "task")
    assert s.n_outputs == (2 if scenario == "domain" else 10)
    for t, task in enumerate(s):
        pair = (2 * t, 2 * t + 1)
        assert task.classes == ((0, 1) if scenario == "domain" else pair)
        assert task.n_train == counts[2 * t] + counts[2 * t + 1]
        x, y = task.test_data()
        assert task.n_test == len(y) == int(torch.isin(mnist[3], torch.tensor(pair)).sum())
        xb, yb = next(task.train_batches(4096))
        if scenario == "domain":
            assert set(y.tolist()) == {0, 1} and set(yb.tolist()) == {0, 1}
        else:
            assert set(y.tolist()) == set(pair) and set(yb.tolist()) == set(pair)
    # domain labels are the within-task index of the global label
    g = split_mnist(scenario="class")[3].test_data()[1]
    d = split_mnist(scenario="domain")[3].test_data()[1]
    assert torch.equal(d, g - 6)


def test_split_train_subset():
    s = split_mnist(train_subset=100, seed=1)
    assert all(t.n_train == 100 and set(t.train_data()[1].tolist()) <= set(t.classes) for t in s)
    assert torch.equal(s[2].train_data()[0], split_mnist(train_subset=100, seed=1)[2].train_data()[0])
    with pytest.raises(ValueError, match="train_subset"):
        split_mnist(train_subset=12000)  # larger than a task (classes 4, 5 have 11263)


# ----------------------------------------------------------------------------- user datasets


def test_from_tensors_class_and_domain():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (40, 2, 3), dtype=torch.uint8, generator=g)
    y1, y2 = torch.tensor([3, 7] * 20), torch.tensor([1, 2] * 20)
    pairs = [((x, y1), (x[:6], y1[:6])), ((x, y2), (x[:6], y2[:6]))]
    s = from_datasets(pairs, scenario="class", name="mine")
    assert s.name == "mine" and s.input_shape == (2, 3) and s.n_outputs == 8
    assert s[0].classes == (3, 7) and s[1].classes == (1, 2)
    xb, yb = s[0].train_data()
    assert torch.allclose(xb, x.float() / 255) and torch.equal(yb, y1)
    d = from_datasets(pairs, scenario="domain")
    assert d.n_outputs == 2 and d[0].classes == (0, 1)
    assert torch.equal(d[0].train_data()[1], (y1 == 7).long())
    assert torch.equal(d[1].test_data()[1], (y2[:6] == 2).long())
    t = from_datasets(pairs, scenario="task")
    assert t.task_labels_at_test and torch.equal(t[1].train_data()[1], y2)


def test_from_tensor_dataset_and_generic_dataset():
    x = torch.randn(30, 5)
    y = torch.arange(30) % 3

    class Plain(Dataset):
        def __len__(self):
            return 30

        def __getitem__(self, i):
            return x[i], int(y[i])

    s = from_datasets([(TensorDataset(x, y), Plain())])
    assert s.input_shape == (5,) and s[0].classes == (0, 1, 2)
    xt, yt = s[0].train_data()
    xe, ye = s[0].test_data()
    assert torch.equal(xt, x) and torch.equal(yt, y) and torch.equal(xe, x) and torch.equal(ye, y)
    xt[0, 0] = 99.0  # returned tensors never alias the stored ones
    assert x[0, 0] != 99.0


def test_from_datasets_rejects_bad_input():
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    ok = (x, y)
    with pytest.raises(ValueError, match="datasets"):
        from_datasets([])
    with pytest.raises(TypeError, match=r"datasets\[0\]"):
        from_datasets([ok])
    with pytest.raises(ValueError, match=r"datasets\[1\]"):
        from_datasets([(ok, ok), ((torch.randn(4, 2), y), (torch.randn(4, 2), y))])
    with pytest.raises(ValueError, match=r"datasets\[0\] test"):
        from_datasets([(ok, (x, y[:3]))])
    with pytest.raises(TypeError, match="integer labels"):
        from_datasets([(ok, (x, y.float()))])
    with pytest.raises(ValueError, match="NaN"):
        from_datasets([((torch.full((4, 3), float("nan")), y), ok)])
    with pytest.raises(ValueError, match="scenario"):
        from_datasets([(ok, ok)], scenario="online")


# ----------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "call, exc, name",
    [
        (lambda: permuted_mnist(n_tasks=0), ValueError, "n_tasks"),
        (lambda: permuted_mnist(n_tasks=2.0), TypeError, "n_tasks"),
        (lambda: permuted_mnist(seed=-1), ValueError, "seed"),
        (lambda: permuted_mnist(dataset="cifar"), ValueError, "dataset"),
        (lambda: permuted_mnist(train_subset=0), ValueError, "train_subset"),
        (lambda: permuted_mnist(train_subset=60001), ValueError, "train_subset"),
        (lambda: permuted_mnist(first_unpermuted=1), TypeError, "first_unpermuted"),
        (lambda: split_mnist(scenario="online"), ValueError, "scenario"),
        (lambda: split_mnist(dataset="kmnist"), ValueError, "dataset"),
        (lambda: split_mnist(flatten="yes"), TypeError, "flatten"),
    ],
)
def test_bad_arguments(call, exc, name):
    with pytest.raises(exc, match=name):
        call()


def test_bad_batch_arguments():
    task = permuted_mnist(n_tasks=1, train_subset=10)[0]
    with pytest.raises(ValueError, match="batch_size"):
        task.train_batches(0)
    with pytest.raises(TypeError, match="batch_size"):
        task.train_batches(True)
    with pytest.raises(TypeError, match="generator"):
        task.train_batches(4, generator=0)


@needs_fashion
def test_fashion_streams():
    s = permuted_mnist(n_tasks=2, dataset="fashion", first_unpermuted=True)
    assert s.name == "permuted-fashion-mnist" and s[0].n_train == 60000
    x, _ = s[0].train_data()
    assert abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1) < 1e-3
    sp = split_mnist(dataset="fashion", scenario="task")
    assert [t.n_train for t in sp] == [12000] * 5 and sp[4].classes == (8, 9)
