"""NIR interchange: :func:`export` a network to a ``nir.NIRGraph`` and :func:`load` one back.

NIR (the Neuromorphic Intermediate Representation, ``nir`` 1.0) is how snnTorch, Norse, Sinabs,
Spyx, Lava and hardware toolchains exchange trained networks. Its neurons are continuous-time
equations; the time step ``dt`` turns them into ours (``tau_steps = tau_nir / dt``) and is
explicit on both sides: ``export(..., dt=)`` records it in ``graph.metadata["dt"]``, ``load``
reads it from there or from its ``dt`` argument. The mappings are in ``docs/nir.md``.
"""

from .export import export
from .layers import Scale, SumPool2d, TimeDistributed
from .load import NIRNetwork, load

__all__ = ["export", "load", "NIRNetwork", "TimeDistributed", "Scale", "SumPool2d"]
