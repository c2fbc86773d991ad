"""spiking: spiking neural networks for continual learning and episodic memory.

Public names: :class:`LIF` (multi-step LIF layer), :func:`lif_multistep` / :func:`lif_step`
(the pure functions under it), :mod:`spiking.neuron.surrogate`, :mod:`spiking.encode`.
Sub-packages: ``spiking.data`` (MNIST loaders, task streams), ``spiking.memory`` (Sparsey-style
SDR memory), ``spiking.plasticity`` (HLOP), ``spiking.runner`` (task-sequence runner).
"""

from . import encode
from .neuron import LIF, Surrogate, get_surrogate, lif_multistep, lif_step, surrogate

__version__ = "0.1.0"

__all__ = ["LIF", "lif_multistep", "lif_step", "Surrogate", "get_surrogate", "surrogate", "encode", "__version__"]
