"""HLOP: Hebbian lateral subspaces and orthogonal projection of weight updates.

``hebbian`` (pure update/projection functions), ``projector`` (the per-task projection in its
cheapest exact form), ``layers`` (projected Linear), ``hlop``
(:class:`LateralBank`, :class:`HLOP`), ``networks`` (:class:`HLOPMLP` with DSR/BPTT/OTTT).
"""

from .hebbian import (dense_projector, frozen_residual, hebbian_update, oja_delta, oja_iterations, orthogonal_rows,
                      orthonormal_basis, principal_angles, principal_rows, project_input, project_weight_grad,
                      quantise_lateral, subspace_energy)
from .hlop import HLOP, PAPER_PMNIST_SCHEDULE, LateralBank
from .layers import HLOPLinear, ProjectedLinearFn
from .projector import Projector
from .networks import METHODS, HLOPMLP, method_defaults

__all__ = [
    "hebbian_update", "oja_delta", "oja_iterations", "frozen_residual", "orthogonal_rows", "orthonormal_basis",
    "principal_angles", "principal_rows", "project_input", "project_weight_grad", "dense_projector",
    "quantise_lateral", "subspace_energy", "Projector",
    "HLOP", "LateralBank", "PAPER_PMNIST_SCHEDULE", "HLOPLinear", "ProjectedLinearFn",
    "HLOPMLP", "METHODS", "method_defaults",
]
