"""Tiny task streams for sweep tests, importable by Ray workers as ``sweep_streams:FACTORY``."""
import torch

from spiking.data import from_datasets


def _teacher_stream(seed: int, n_train: int, offset: int, n_tasks: int = 3, d: int = 16):
    """``n_tasks`` domain-incremental tasks; labels are the argmax of a task's random linear teacher."""
    g = torch.Generator().manual_seed(1000 * offset + seed)
    parts = []
    for _ in range(n_tasks):
        W = torch.randn(d, 4, generator=g)

        def draw(n):
            x = torch.randn(n, d, generator=g)
            return x, (x @ W).argmax(1)
        parts.append((draw(n_train), draw(128)))
    return from_datasets(parts, scenario="domain", name=f"teacher{offset}")


def synthetic(cfg, seed):
    """The tuning scenario; ``train_subset`` samples per task (default 128)."""
    return _teacher_stream(seed, cfg["train_subset"] or 128, offset=0)


def synthetic_b(cfg, seed):
    """Same shape, other teachers: the evaluation scenario of the reality-check test."""
    return _teacher_stream(seed, cfg["train_subset"] or 128, offset=1)


def flaky(cfg, seed):
    """Fails for seed 13 (a trial that raises), else ``synthetic``."""
    if seed == 13:
        raise RuntimeError("no data for seed 13")
    return synthetic(cfg, seed)


def tiny_model(cfg, stream):
    """A model factory for ``model='sweep_streams:tiny_model'``."""
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(),
                               torch.nn.Linear(8, stream.n_outputs))
