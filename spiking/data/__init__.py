"""Datasets (IDX loaders with md5 checks and a search order) and continual-learning task streams."""

from .idx import load_fashion_mnist, load_mnist
from .streams import Task, TaskStream, from_datasets, permuted_mnist, split_mnist

__all__ = [
    "load_mnist",
    "load_fashion_mnist",
    "Task",
    "TaskStream",
    "permuted_mnist",
    "split_mnist",
    "from_datasets",
]
