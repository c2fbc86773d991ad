"""LIF neurons: pure functions (:mod:`.functional`), the module (:mod:`.module`), surrogates."""

from . import surrogate
from .functional import lif_multistep, lif_multistep_torch, lif_step
from .module import LIF
from .surrogate import Surrogate, get_surrogate

__all__ = ["LIF", "lif_step", "lif_multistep", "lif_multistep_torch", "Surrogate", "get_surrogate", "surrogate"]
