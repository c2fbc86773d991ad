"""spiking: spiking neural networks for continual learning and episodic memory.

Public names: :class:`LIF` (multi-step LIF layer), :func:`lif_multistep` / :func:`lif_step` (the
pure functions under it), the neuron family :class:`IF`, :class:`PLIF`, :class:`ALIF`,
:class:`CubaLIF`, :class:`LI`, :class:`RLIF` (``docs/neurons.md``), ``spiking.nir`` (NIR export/load),
:mod:`spiking.neuron.surrogate`, :mod:`spiking.encode`.
Sub-packages: ``spiking.data`` (MNIST loaders, task streams), ``spiking.memory`` (Sparsey-style
SDR memory), ``spiking.plasticity`` (HLOP), ``spiking.runner`` (task-sequence runner).
"""

from . import encode
from .neuron import (ALIF, IF, LI, LIF, PLIF, RLIF, CubaLIF, Surrogate, get_neuron, get_surrogate, lif_multistep,
                     lif_step, neuron_names, surrogate)

__version__ = "0.1.0"

__all__ = ["LIF", "IF", "PLIF", "ALIF", "CubaLIF", "LI", "RLIF", "get_neuron", "neuron_names", "lif_multistep",
           "lif_step", "Surrogate", "get_surrogate", "surrogate", "encode", "__version__"]
