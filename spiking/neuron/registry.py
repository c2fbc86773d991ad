"""The neuron registry: a name → :class:`NeuronSpec` map shared by the modules, NIR and the kernels.

A spec is everything the generic multi-step machinery (:mod:`spiking.neuron.multistep`) needs:
the parameter ``NamedTuple`` (its field order is the kernel's parameter order), the state names,
the torch reference step and the initial state. The fused kernels find the same neuron by name in
``cuda/neuron_template.cuh`` (``NRN_FOR_EACH``); ``docs/neurons.md`` walks through adding one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["NeuronSpec", "register", "get_neuron", "neuron_names"]


@dataclass(frozen=True)
class NeuronSpec:
    """One neuron model.

    ``step(x, state, params, cfg) -> (out, state)`` is the torch reference for one time step
    (``state`` a tuple in ``states`` order, ``params`` an instance of ``params``, every field a
    tensor broadcastable to ``x``); ``initial(params, like) -> state`` gives the state before the
    first step (tensors broadcastable to one step ``like``; single values stay single, so the fused
    path makes no per-neuron copy); ``spiking`` is False for readouts whose output is the membrane.
    """

    name: str
    params: type
    states: tuple[str, ...]
    step: Callable
    initial: Callable[[tuple, torch.Tensor], tuple]
    spiking: bool = True


_NEURONS: dict[str, NeuronSpec] = {}


def register(spec: NeuronSpec) -> NeuronSpec:
    """Add ``spec`` under ``spec.name``; ``ValueError`` if the name is taken by another spec."""
    old = _NEURONS.get(spec.name)
    if old is not None and old is not spec:
        raise ValueError(f"neuron name {spec.name!r} is already registered")
    _NEURONS[spec.name] = spec
    return spec


def get_neuron(name: str) -> NeuronSpec:
    """The spec registered as ``name``; ``ValueError`` listing the known names otherwise."""
    if not isinstance(name, str) or name not in _NEURONS:
        raise ValueError(f"neuron: unknown name {name!r}; registered neurons: {neuron_names()}")
    return _NEURONS[name]


def neuron_names() -> list[str]:
    """Registered neuron names, sorted."""
    return sorted(_NEURONS)
