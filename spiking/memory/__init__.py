"""Sparsey-style sparse distributed (SDR) associative memory: macrocolumns with the Code Selection
Algorithm, episodic traces in superposition, exact forgetting, and a patch hierarchy for images."""
from .csa import CSAParams
from .macrocolumn import Macrocolumn
from .hierarchy import PatchHierarchy

__all__ = ["CSAParams", "Macrocolumn", "PatchHierarchy"]
