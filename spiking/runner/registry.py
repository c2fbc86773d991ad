"""Registries of task streams and models: the names ``dataset`` and ``model`` may take.

    DATASETS.register("my-stream", lambda cfg, seed: my_task_stream(seed))
    run({"dataset": "my-stream"})
    run({"dataset": "mypkg.streams:make"})          # or module:factory, imported on use

A dataset factory is ``factory(cfg, seed) -> TaskStream`` (``cfg``: the normalised run config),
a model factory ``factory(cfg, stream) -> nn.Module``; the runner cuts a stream to ``cfg['tasks']``.
"""
from __future__ import annotations

import importlib
from typing import Callable


class Registry:
    """name -> factory, plus ``module:factory`` strings resolved by import."""

    def __init__(self, setting: str):
        self.setting = setting
        self.entries: dict[str, Callable] = {}

    def register(self, name: str, factory: Callable | None = None):
        """Add ``factory`` under ``name`` (usable as ``@REGISTRY.register(name)``)."""
        if factory is None:
            return lambda f: self.register(name, f)
        if not callable(factory):
            raise TypeError(f"{self.setting} factory must be callable, got {factory!r}")
        self.entries[name] = factory
        return factory

    def names(self) -> tuple[str, ...]:
        return tuple(self.entries)

    def resolve(self, name: str) -> Callable:
        if name in self.entries:
            return self.entries[name]
        module, sep, attr = str(name).partition(":")
        if not sep:
            raise ValueError(f"{self.setting} must be one of {list(self.entries)} or module:factory, "
                             f"got {name!r}")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"{self.setting}: cannot import {name!r} ({exc})") from None
        if not callable(factory):
            raise ValueError(f"{self.setting}: {name!r} is not callable")
        return factory


DATASETS = Registry("dataset")
MODELS = Registry("model")


def _permuted(kind):
    def factory(cfg, seed):
        from ..data import permuted_mnist  # noqa: PLC0415
        return permuted_mnist(n_tasks=cfg["tasks"] or 10, seed=seed, train_subset=cfg["train_subset"],
                              dataset=kind, data_path=cfg["data_path"])
    return factory


def _split(kind):
    def factory(cfg, seed):
        from ..data import split_mnist  # noqa: PLC0415
        return split_mnist(scenario=cfg["scenario"] or "class", seed=seed, train_subset=cfg["train_subset"],
                           dataset=kind, data_path=cfg["data_path"])
    return factory


DATASETS.register("pmnist", _permuted("mnist"))
DATASETS.register("fashion-pmnist", _permuted("fashion"))
DATASETS.register("split-mnist", _split("mnist"))
DATASETS.register("split-fashion", _split("fashion"))


def _sizes(cfg, stream) -> list[int]:
    n_in = 1
    for d in stream.input_shape:
        n_in *= int(d)
    return [n_in, *cfg["hidden"], stream.n_outputs]


def checks_inputs(device) -> bool:
    """Whether the runner's layers check x for NaN/inf: the fused LIF's check is free on the CPU
    but a host sync per layer on CUDA (there a non-finite loss is caught where the task's loss is
    read, once per task)."""
    return not str(device).startswith("cuda")


@MODELS.register("spiking-mlp")
def spiking_mlp(cfg, stream):
    from ..models import SpikingMLP  # noqa: PLC0415
    return SpikingMLP(_sizes(cfg, stream), T=cfg["T"], check_inputs=checks_inputs(cfg.get("device", "cpu")))


@MODELS.register("mlp")
def mlp(cfg, stream):
    from ..models import MLP  # noqa: PLC0415
    return MLP(_sizes(cfg, stream))


def _hlop_network(train_method):
    def factory(cfg, stream):
        from .strategies.hlop import HLOPStrategy  # noqa: PLC0415
        return HLOPStrategy.build_model({"options": {"train_method": train_method}, "hidden": cfg["hidden"]},
                                        stream)
    factory.__doc__ = f"HLOP's {train_method.upper()} network (the paper's baselines use it too)."
    return factory


for _method in ("dsr", "bptt", "ottt"):
    MODELS.register(f"hlop-{_method}", _hlop_network(_method))
