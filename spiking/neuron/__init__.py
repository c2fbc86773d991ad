"""Neurons: the template family (LIF, IF, PLIF, ALIF, CubaLIF, LI; :mod:`.registry`,
:mod:`.multistep`; LIF's own functions in :mod:`.functional` and :mod:`.module`), RLIF, and the
surrogates."""

from . import lif_spec, surrogate
from .alif import ALIF, alif_multistep
from .cuba_lif import CubaLIF, cuba_lif_multistep
from .functional import lif_multistep, lif_multistep_torch, lif_step
from .if_neuron import IF, if_multistep
from .li import LI, li_multistep
from .module import LIF
from .plif import PLIF, plif_multistep
from .registry import get_neuron, neuron_names
from .rlif import RLIF
from .surrogate import Surrogate, get_surrogate

__all__ = [
    "LIF", "lif_step", "lif_multistep", "lif_multistep_torch", "Surrogate", "get_surrogate", "surrogate",
    "IF", "PLIF", "ALIF", "CubaLIF", "LI", "RLIF", "if_multistep", "plif_multistep", "alif_multistep",
    "cuba_lif_multistep", "li_multistep", "get_neuron", "neuron_names",
]
