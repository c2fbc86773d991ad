"""Sweeps on Ray: methods × hyperparameter grid × seeds (× datasets), local by default.

    from spiking.sweep import run_sweep
    result = run_sweep({"out": "sweeps/lr", "methods": ["finetune", "ewc"], "seeds": [1, 2, 3],
                        "grid": {"lr": [0.05, 0.1]}, "settings": {"dataset": "pmnist", "tasks": 3}})

The reality-check protocol (tune on one dataset, report on another) is ``tune_on`` / ``evaluate_on``.
Ray is an optional extra: ``pip install "spiking[sweep]"``. See ``docs/sweeps.md``.
"""
from .run import run_sweep
from .spec import SpecError, SweepSpec, load_spec

__all__ = ["run_sweep", "SweepSpec", "SpecError", "load_spec"]
