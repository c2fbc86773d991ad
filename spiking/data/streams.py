"""Continual-learning task streams: permuted MNIST, split MNIST and streams of user datasets.

Images are held once (uint8 for MNIST) and shared by every task; each batch is transformed on the
fly (pixel-permutation gather, scaling, normalisation, reshape; one native pass on the CPU, see
:mod:`spiking.kernels.pixels`), so ten permuted tasks cost one copy of MNIST. Batching is pure
tensor indexing: no per-sample Python.

Labels: task- and class-incremental streams yield global labels and ``task.classes`` lists the
task's classes; domain-incremental streams yield the within-task index ``0..k-1`` with
``n_outputs = k`` and ``task.classes = (0, ..., k-1)``.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ..kernels.pixels import pixels
from .idx import load_fashion_mnist, load_mnist

__all__ = [
    "Task",
    "TaskStream",
    "permuted_mnist",
    "split_mnist",
    "from_datasets",
    "SCENARIOS",
    "MNIST_MEAN",
    "MNIST_STD",
    "FASHION_MEAN",
    "FASHION_STD",
]

SCENARIOS = ("task", "domain", "class")
# Pixel statistics of the 60000 training images scaled to [0, 1].
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530
_DATASETS = {
    "mnist": (load_mnist, "mnist", MNIST_MEAN, MNIST_STD),
    "fashion": (load_fashion_mnist, "fashion-mnist", FASHION_MEAN, FASHION_STD),
}
# Independent random streams derived from one user seed.
_PERMUTATIONS, _TRAIN_SUBSET = 0, 1


# ----------------------------------------------------------------------------- validation


def _check_int(name: str, value, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def _check_choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def _generator(seed: int, purpose: int) -> torch.Generator:
    """A torch generator for one ``purpose``, derived deterministically from ``seed``."""
    state = np.random.SeedSequence([seed, purpose]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


# ----------------------------------------------------------------------------- tasks


@dataclass(frozen=True, eq=False)
class _Transform:
    """Stored rows -> float32 model input: permute pixels, affine scale, reshape."""

    input_shape: tuple[int, ...]
    permutation: torch.Tensor | None = None  # gather index over flattened pixels
    scale: float = 1.0  # x * scale + shift
    shift: float = 0.0

    def rows(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The model input of ``images[index]`` (one native pass for uint8 images on the CPU)."""
        x = pixels(images, index, self.permutation, self.scale, self.shift)
        return x.reshape(x.shape[0], *self.input_shape)


def _pixel_transform(input_shape, permutation=None, normalize=True, mean=0.0, std=1.0):
    """uint8 pixels -> [0, 1], then (optionally) ``(x - mean) / std``."""
    if normalize:
        return _Transform(input_shape, permutation, 1.0 / (255.0 * std), -mean / std)
    return _Transform(input_shape, permutation, 1.0 / 255.0, 0.0)


@dataclass(frozen=True, eq=False)
class _Samples:
    """Rows ``index`` of a shared ``images`` tensor, with their (already mapped) labels."""

    images: torch.Tensor
    index: torch.Tensor  # int64 [n]
    labels: torch.Tensor  # int64 [n]

    def __len__(self) -> int:
        return self.index.numel()


@dataclass(frozen=True, eq=False)
class Task:
    """One task of a stream; data are produced on demand from shared storage."""

    index: int
    name: str
    classes: tuple[int, ...]
    n_train: int = field(init=False)
    n_test: int = field(init=False)
    _train: _Samples = field(repr=False)
    _test: _Samples = field(repr=False)
    _transform: _Transform = field(repr=False)

    def __post_init__(self):
        object.__setattr__(self, "n_train", len(self._train))
        object.__setattr__(self, "n_test", len(self._test))

    def _rows(self, samples: _Samples, sel: torch.Tensor | slice | None = None):
        index = samples.index if sel is None else samples.index[sel]
        labels = samples.labels if sel is None else samples.labels[sel]
        return self._transform.rows(samples.images, index), labels

    def train_batches(
        self, batch_size: int, generator: torch.Generator | None = None, shuffle: bool = True,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x float32 [B, *input_shape], y int64 [B])`` over one epoch of training data."""
        batch_size = _check_int("batch_size", batch_size, 1)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        _check_bool("shuffle", shuffle)
        _check_bool("drop_last", drop_last)
        n = self.n_train
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        return (self._rows(self._train, order[i : i + batch_size]) for i in range(0, stop, batch_size))

    def train_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All training ``(x, y)`` of the task (for bases, replay)."""
        return self._rows(self._train)

    def test_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All test ``(x, y)`` of the task."""
        return self._rows(self._test)

    def test_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield the test ``(x, y)`` in order, ``batch_size`` rows at a time, each batch transformed
        as it is drawn: the float copy of the whole test set never exists (the evaluation's input
        then stays in cache and its buffers are reused)."""
        batch_size = _check_int("batch_size", batch_size, 1)
        return (self._rows(self._test, slice(i, i + batch_size)) for i in range(0, self.n_test, batch_size))

    def test_subset(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed, seeded subset of ``n`` test samples (same ``n``/``seed`` -> same rows)."""
        n = _check_int("n", n, 1, self.n_test)
        seed = _check_int("seed", seed, 0)
        g = torch.Generator().manual_seed(seed)
        sel = torch.randperm(self.n_test, generator=g)[:n].sort().values
        return self._rows(self._test, sel)


class TaskStream(Sequence):
    """An ordered sequence of :class:`Task` sharing one scenario, head width and input shape."""

    def __init__(self, tasks, name: str, scenario: str, n_outputs: int, input_shape):
        self._tasks = tuple(tasks)
        if not self._tasks or not all(isinstance(t, Task) for t in self._tasks):
            raise ValueError("tasks must be a non-empty sequence of Task")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        self.name = name
        self.scenario = _check_choice("scenario", scenario, SCENARIOS)
        self.n_outputs = _check_int("n_outputs", n_outputs, 1)
        self.input_shape = tuple(int(d) for d in input_shape)
        for t in self._tasks:
            if max(t.classes) >= self.n_outputs:
                raise ValueError(f"task {t.name}: classes {t.classes} exceed n_outputs={self.n_outputs}")

    @property
    def task_labels_at_test(self) -> bool:
        """Task-incremental: the runner masks logits to ``task.classes``."""
        return self.scenario == "task"

    def __len__(self) -> int:
        return len(self._tasks)

    def __getitem__(self, i):
        return self._tasks[i]

    def __repr__(self) -> str:
        return (
            f"TaskStream(name={self.name!r}, scenario={self.scenario!r}, n_tasks={len(self)}, "
            f"n_outputs={self.n_outputs}, input_shape={self.input_shape})"
        )


# ----------------------------------------------------------------------------- MNIST streams


def _load(dataset: str, data_path):
    _check_choice("dataset", dataset, _DATASETS)
    loader, label, mean, std = _DATASETS[dataset]
    return (*loader(path=data_path), label, mean, std)


def _subset(index: torch.Tensor, k, generator: torch.Generator) -> torch.Tensor:
    """Keep a seeded random ``k`` of ``index`` (in ascending order); ``k=None`` keeps all."""
    if k is None:
        return index
    k = _check_int("train_subset", k, 1, index.numel())
    return index[torch.randperm(index.numel(), generator=generator)[:k].sort().values]


def _check_common(seed, flatten, normalize) -> None:
    _check_int("seed", seed, 0)
    _check_bool("flatten", flatten)
    _check_bool("normalize", normalize)


def permuted_mnist(
    n_tasks: int = 10, seed: int = 0, first_unpermuted: bool = False, train_subset: int | None = None,
    flatten: bool = True, normalize: bool = True, dataset: str = "mnist", data_path=None,
) -> TaskStream:
    """Domain-incremental stream: task ``i`` applies a fixed seeded pixel permutation.

    ``first_unpermuted`` makes task 0 the identity while tasks 1.. keep the same permutations
    as without it. ``train_subset`` keeps a seeded random subset of training images (the same
    rows for every task); the full test set is used.
    """
    n_tasks = _check_int("n_tasks", n_tasks, 1)
    _check_bool("first_unpermuted", first_unpermuted)
    _check_common(seed, flatten, normalize)
    train_x, train_y, test_x, test_y, label, mean, std = _load(dataset, data_path)
    train_idx = _subset(torch.arange(train_x.shape[0]), train_subset, _generator(seed, _TRAIN_SUBSET))
    train = _Samples(train_x, train_idx, train_y[train_idx])
    test = _Samples(test_x, torch.arange(test_x.shape[0]), test_y)
    classes = tuple(torch.unique(train_y).tolist())
    input_shape = (train_x[0].numel(),) if flatten else (1, *train_x.shape[1:])
    g = _generator(seed, _PERMUTATIONS)
    tasks = []
    for i in range(n_tasks):
        perm = torch.randperm(train_x[0].numel(), generator=g)  # drawn even if unused: stable tasks 1..
        identity = first_unpermuted and i == 0
        tf = _pixel_transform(input_shape, None if identity else perm, normalize, mean, std)
        name = f"{label}-unpermuted" if identity else f"permuted-{label}-{i}"
        tasks.append(Task(i, name, classes, _train=train, _test=test, _transform=tf))
    return TaskStream(tasks, f"permuted-{label}", "domain", len(classes), input_shape)


def split_mnist(
    scenario: str = "class", seed: int = 0, train_subset: int | None = None, flatten: bool = True,
    normalize: bool = True, dataset: str = "mnist", data_path=None,
) -> TaskStream:
    """Five tasks of classes (0,1), (2,3), ..., (8,9) under ``scenario`` task/domain/class.

    ``train_subset`` keeps a seeded random subset of that many training images per task.
    """
    _check_choice("scenario", scenario, SCENARIOS)
    _check_common(seed, flatten, normalize)
    train_x, train_y, test_x, test_y, label, mean, std = _load(dataset, data_path)
    all_classes = torch.unique(train_y)
    if all_classes.numel() % 2:
        raise ValueError(f"dataset {dataset!r} has an odd number of classes ({all_classes.numel()})")
    input_shape = (train_x[0].numel(),) if flatten else (1, *train_x.shape[1:])
    tf = _pixel_transform(input_shape, None, normalize, mean, std)
    g = _generator(seed, _TRAIN_SUBSET)
    domain = scenario == "domain"
    tasks = []
    for t, pair in enumerate(all_classes.view(-1, 2)):
        tr = _subset(torch.isin(train_y, pair).nonzero().squeeze(1), train_subset, g)
        te = torch.isin(test_y, pair).nonzero().squeeze(1)
        tr_y, te_y = train_y[tr], test_y[te]
        if domain:
            tr_y, te_y = torch.searchsorted(pair, tr_y), torch.searchsorted(pair, te_y)
        classes = (0, 1) if domain else tuple(pair.tolist())
        name = f"split-{label}-{pair[0].item()}-{pair[1].item()}"
        tasks.append(Task(t, name, classes, _train=_Samples(train_x, tr, tr_y),
                          _test=_Samples(test_x, te, te_y), _transform=tf))
    n_outputs = 2 if domain else int(all_classes.max()) + 1
    return TaskStream(tasks, f"split-{label}-{scenario}", scenario, n_outputs, input_shape)


# ----------------------------------------------------------------------------- user datasets


def _materialise(obj, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` tensors from an ``(x, y)`` pair or a torch Dataset of ``(x, y)`` items."""
    if isinstance(obj, (tuple, list)):
        if len(obj) != 2:
            raise ValueError(f"{what} must be an (x, y) pair, got {len(obj)} items")
        x, y = (torch.as_tensor(v) for v in obj)
    elif isinstance(obj, TensorDataset):
        if len(obj.tensors) != 2:
            raise ValueError(f"{what}: TensorDataset must hold exactly (x, y), "
                             f"got {len(obj.tensors)} tensors")
        x, y = obj.tensors
    elif isinstance(obj, Dataset):
        if len(obj) == 0:
            raise ValueError(f"{what} is empty")
        xs, ys = [], []
        for batch in DataLoader(obj, batch_size=1024, shuffle=False):
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise ValueError(f"{what}: dataset items must be (x, y) pairs")
            xs.append(torch.as_tensor(batch[0]))
            ys.append(torch.as_tensor(batch[1]))
        x, y = torch.cat(xs), torch.cat(ys)
    else:
        raise TypeError(f"{what} must be an (x, y) pair of tensors or a torch Dataset, "
                        f"got {type(obj).__name__}")
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"{what}: x must be [n >= 1, ...features], got shape {tuple(x.shape)}")
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{what}: x must be real numeric, got {x.dtype}")
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise ValueError(f"{what}: x contains NaN or inf")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"{what}: y must be 1-D with {x.shape[0]} labels, got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool or y.is_complex():
        raise TypeError(f"{what}: y must hold integer labels, got {y.dtype}")
    if (y < 0).any():
        raise ValueError(f"{what}: y must be non-negative class labels")
    return x, y.to(torch.int64)


def from_datasets(datasets, scenario: str = "class", name: str = "custom") -> TaskStream:
    """A stream from ``[(train, test), ...]``; each of train/test is ``(x, y)`` or a torch Dataset.

    Datasets are materialised once into tensors. uint8 ``x`` is scaled to [0, 1]; other dtypes
    are cast to float32 unchanged. ``task.classes`` are the labels present in the task.
    """
    if isinstance(datasets, (str, bytes)) or not isinstance(datasets, Sequence):
        raise TypeError(f"datasets must be a list of (train, test) pairs, got {type(datasets).__name__}")
    if len(datasets) == 0:
        raise ValueError("datasets must hold at least one (train, test) pair")
    _check_choice("scenario", scenario, SCENARIOS)
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    parts = []
    for i, item in enumerate(datasets):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"datasets[{i}] must be a (train, test) pair")
        (tr_x, tr_y), (te_x, te_y) = (_materialise(item[0], f"datasets[{i}] train"),
                                      _materialise(item[1], f"datasets[{i}] test"))
        if te_x.shape[1:] != tr_x.shape[1:] or te_x.dtype != tr_x.dtype:
            raise ValueError(f"datasets[{i}]: test x {tuple(te_x.shape[1:])}/{te_x.dtype} differs "
                             f"from train x {tuple(tr_x.shape[1:])}/{tr_x.dtype}")
        if parts and tr_x.shape[1:] != parts[0][0].shape[1:]:
            raise ValueError(f"datasets[{i}]: input shape {tuple(tr_x.shape[1:])} differs from "
                             f"datasets[0]'s {tuple(parts[0][0].shape[1:])}")
        parts.append((tr_x, tr_y, te_x, te_y))
    input_shape = tuple(parts[0][0].shape[1:])
    tasks, widest = [], 0
    for i, (tr_x, tr_y, te_x, te_y) in enumerate(parts):
        present = torch.unique(torch.cat([tr_y, te_y]))
        if scenario == "domain":
            tr_y, te_y = torch.searchsorted(present, tr_y), torch.searchsorted(present, te_y)
            classes = tuple(range(present.numel()))
        else:
            classes = tuple(present.tolist())
        widest = max(widest, max(classes) + 1)
        scale = 1.0 / 255.0 if tr_x.dtype == torch.uint8 else 1.0
        tf = _Transform(input_shape, None, scale, 0.0)
        tasks.append(Task(i, f"{name}-{i}", classes, _train=_Samples(tr_x, torch.arange(len(tr_y)), tr_y),
                          _test=_Samples(te_x, torch.arange(len(te_y)), te_y), _transform=tf))
    return TaskStream(tasks, name, scenario, widest, input_shape)
