"""Task-sequence runner: event timeline, strategies, continual evaluation, metrics, outputs.

    from spiking.runner import run
    results = run({"method": "ewc", "dataset": "pmnist", "tasks": 3, "train_subset": 1000})
"""
from .config import SETTINGS, RunConfig
from .registry import DATASETS, MODELS
from .run import default_config, run
from .strategies import STRATEGIES, register
from .strategy import Strategy

__all__ = ["run", "default_config", "RunConfig", "SETTINGS", "DATASETS", "MODELS", "Strategy", "STRATEGIES",
           "register"]
