"""HLOP: Hebbian lateral subspaces and orthogonal projection of weight updates.

``hebbian`` (pure update/projection functions), ``layers`` (projected Linear), ``hlop``
(:class:`LateralBank`, :class:`HLOP`), ``networks`` (:class:`HLOPMLP` with DSR/BPTT/OTTT).
"""

from .hebbian import (hebbian_update, oja_delta, orthogonal_rows, principal_angles, project_input,
                      project_weight_grad, projected_weight_grad, quantise_lateral, subspace_energy)
from .hlop import HLOP, PAPER_PMNIST_SCHEDULE, LateralBank
from .layers import HLOPLinear, ProjectedLinearFn
from .networks import METHODS, HLOPMLP, method_defaults

__all__ = [
    "hebbian_update", "oja_delta", "orthogonal_rows", "principal_angles", "project_input",
    "project_weight_grad", "projected_weight_grad", "quantise_lateral", "subspace_energy",
    "HLOP", "LateralBank", "PAPER_PMNIST_SCHEDULE", "HLOPLinear", "ProjectedLinearFn",
    "HLOPMLP", "METHODS", "method_defaults",
]
