"""HLOP: lateral subspace banks on a model's Linear/Conv2d layers (Xiao et al., ICLR 2024).

:class:`LateralBank` holds one layer's lateral weights ``H [M, N]`` with rows grouped by task;
:class:`HLOP` attaches banks to a model. Per task k (0-based):

* ``before_task(k)``: every bank grows by ``schedule[k]`` rows (orthonormal init within the new
  block); the projectors used for training are the rows merged after earlier tasks
  (:class:`~spiking.plasticity.projector.Projector`; ``orthonormal=True``: an orthonormal basis of
  their span).
* each training batch: the layer's weight gradient uses ``x⊥ = x − Hᵀ(Hx)`` (forward and the
  back-propagated error untouched), then ``hebbian_step()`` runs the Oja-subspace rule
  (:func:`~spiking.plasticity.hebbian.hebbian_update`) on the new rows with the layer's input;
  the frozen rows enter it through the residual ``X − X̂_old``, which is ``x⊥`` itself when the
  Hebbian input is the weight-gradient input (then the backward pass hands it over).
* ``after_task(k)``: the new rows are merged into the frozen set; after the first task every 1-D
  parameter (thresholds, norms, biases) is frozen.

The lateral neurons never change the forward pass or inference.
"""

from __future__ import annotations

import time
import weakref
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from .hebbian import (basis_residual, hebbian_args, oja_iterations_many, orthogonal_rows, orthonormal_basis,
                      principal_rows, subspace_energy)
from .layers import HLOPLinear
from .projector import Projector

__all__ = ["LateralBank", "HLOP", "PAPER_PMNIST_SCHEDULE", "layer_rows", "optimizer_conflict"]

# lateral neurons per layer [fc1, fc2, head] added before each permuted-MNIST task (paper)
PAPER_PMNIST_SCHEDULE = [[80, 200, 100]] + [[70] * 3] * 2 + [[50] * 3] * 3 + [[30] * 3] * 3 + [[10] * 3]


class LateralBank:
    """Lateral weights of one layer: ``H [M, N]``, ``groups`` = rows per task, ``n_frozen`` merged rows.

    Args:
        in_features: N, the layer's input width (conv: ``C·kh·kw``).
        lr: Hebbian rate η. iters: iterations per batch. clip: bound on ΔH entries.
        momentum: m ← momentum·m + (1 − momentum)·ΔH.
        quantise: ``(s, Ts)`` for lateral spiking neurons, ``None`` for analog responses.
        orthonormal: project (and form the frozen residual of the Hebbian rule) with an orthonormal
            basis of the frozen rows instead of the rows themselves.
    """

    def __init__(self, in_features: int, lr: float = 0.01, iters: int = 5, clip: float = 10.0,
                 momentum: float = 0.9, quantise: Optional[tuple[float, float]] = None,
                 orthonormal: bool = False, dtype=torch.float32, device=None):
        if in_features < 1:
            raise ValueError(f"in_features must be >= 1, got {in_features}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        self.in_features, self.lr, self.iters, self.clip = int(in_features), float(lr), int(iters), float(clip)
        self.momentum, self.quantise, self.orthonormal = float(momentum), quantise, bool(orthonormal)
        self.H = torch.zeros(0, in_features, dtype=dtype, device=device)
        self.m = torch.zeros_like(self.H)
        self.groups: list[int] = []
        self.n_frozen = 0
        self._projector: Optional[tuple[tuple[int, int], Projector]] = None  # (key, projector)

    def __getstate__(self):  # the kept views of H are rebuilt by a copy
        state = self.__dict__.copy()
        state.pop("_views", None)
        return state

    @property
    def size(self) -> int:
        return self.H.shape[0]

    @property
    def frozen(self) -> torch.Tensor:
        """The merged rows ``[n_frozen, N]``."""
        return self.H[: self.n_frozen]

    @property
    def projector(self) -> Optional[Projector]:
        """``I − HᵀH`` of the frozen rows (built once per merge), ``None`` while none is frozen."""
        if self.n_frozen == 0:
            return None
        key = (self.n_frozen, self.H.data_ptr())
        if self._projector is None or self._projector[0] != key:
            self._projector = (key, Projector(self.frozen, orthonormal=self.orthonormal))
        return self._projector[1]

    def add_group(self, k: int, generator: Optional[torch.Generator] = None) -> None:
        """Add ``k`` learning rows (orthonormal among themselves); earlier learning rows are merged first."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        self.merge()
        k = min(k, self.in_features - self.size)
        if k == 0:
            self.groups.append(0)
            return
        new = orthogonal_rows(k, self.in_features, generator, dtype=self.H.dtype).to(self.H.device)
        self.H = torch.cat([self.H, new])
        self.m = torch.cat([self.m, torch.zeros_like(new)])
        self.groups.append(k)

    def update(self, X: torch.Tensor, X_res: Optional[torch.Tensor] = None) -> None:
        """Oja-subspace iterations on rows ``[B, N]`` (any leading shape) for the learning rows.

        ``X_res``: the frozen rows' residual ``X − X̂_old`` if the caller has it (it must be
        ``projector.input(X)``); computed here otherwise.
        """
        with torch.no_grad():
            args = self.hebbian_args(X, X_res)
            if args is not None:
                oja_iterations_many([args], self.iters, self.clip, self.momentum, self.quantise)

    def hebbian_args(self, X: torch.Tensor, X_res: Optional[torch.Tensor] = None) -> Optional[tuple]:
        """The arguments of this bank's Oja iterations on ``X`` (see :meth:`update`; call under
        ``torch.no_grad()``); ``None`` when no row is learning."""
        if X.shape[-1] != self.in_features:
            raise ValueError(f"X has {X.shape[-1]} features but the bank has N = {self.in_features}")
        if self.n_frozen == self.size:
            return None
        basis = None
        if X_res is None and self.n_frozen:
            P = self.projector
            if P.P is None or self.quantise is not None:  # :meth:`residual`, formed by the iterations
                basis = P.H
            else:
                X_res = P.input(X if X.dim() == 2 else X.reshape(-1, self.in_features))
        return hebbian_args(self.H, self.m, X, self.n_frozen, self.lr, self.quantise, X_res,
                            learning=self._learning(), basis=basis)

    def _learning(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Views ``(H[n_frozen:], m[n_frozen:], H[n_frozen:]ᵀ)``, kept while ``H``, ``m`` and
        ``n_frozen`` stay (the updates are in place): no slicing ops per batch."""
        key = (self.H.data_ptr(), self.m.data_ptr(), self.n_frozen, self.size)
        if getattr(self, "_views", (None,))[0] != key:
            H_new = self.H[self.n_frozen:]
            self._views = (key, (H_new, self.m[self.n_frozen:], H_new.t()))
        return self._views[1]

    def fit_principal(self, C: torch.Tensor) -> None:
        """Set the learning rows to the top principal directions of ``C = XᵀX`` outside the frozen rows
        (:func:`~spiking.plasticity.hebbian.principal_rows`): the exact subspace instead of Oja's estimate."""
        k = self.size - self.n_frozen
        if C.shape != (self.in_features, self.in_features):
            raise ValueError(f"C must be [{self.in_features}, {self.in_features}], got {tuple(C.shape)}")
        if k == 0:
            return
        rows = principal_rows(C, k, orthonormal_basis(self.frozen) if self.n_frozen else None)
        self.H[self.n_frozen:] = rows.to(self.H.dtype)
        self.m.zero_()

    def residual(self, X: torch.Tensor) -> torch.Tensor:
        """``X − q(X Pᵀ) P`` for the frozen basis ``P`` (the projector's ``H``): what the new rows learn
        (the residual :meth:`hebbian_args` leaves to the Oja iterations)."""
        P = self.projector
        if self.quantise is None:
            return P.input(X)
        rows = X if X.dim() == 2 else X.reshape(-1, self.in_features)
        return basis_residual(rows, P.H, self.quantise, P.Ht).reshape(X.shape)

    def merge(self) -> None:
        """Freeze every row (end of a task)."""
        self.n_frozen = self.size
        self.m.zero_()

    def energy(self, X: torch.Tensor, frozen_only: bool = True) -> float:
        """Share of ``X``'s energy in the span of the (frozen) rows; 0 when the bank is empty, NaN
        when ``X`` has no energy (e.g. a silent spiking layer)."""
        H = self.frozen if frozen_only else self.H
        if not H.shape[0]:
            return 0.0
        return subspace_energy(X, H) if bool(X.detach().abs().sum() > 0) else float("nan")

    def state_dict(self) -> dict:
        return {"H": self.H.clone(), "m": self.m.clone(), "groups": list(self.groups), "n_frozen": self.n_frozen}

    def load_state_dict(self, d: dict) -> None:
        self.H, self.m = d["H"].clone(), d["m"].clone()
        self.groups, self.n_frozen = list(d["groups"]), int(d["n_frozen"])


def layer_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input rows a layer's weight sees: ``[*, in]`` for Linear, unfolded patches for Conv2d."""
    if isinstance(module, nn.Conv2d):
        p = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=module.padding, stride=module.stride)
        return p.transpose(1, 2).reshape(-1, p.shape[1])
    return x.reshape(-1, x.shape[-1])


def optimizer_conflict(optimizer: torch.optim.Optimizer) -> Optional[str]:
    """Why ``optimizer``'s step would leave the projected gradient's subspace, or None.

    Protection needs ``ΔW = −lr · Σ (projected gradients)``: plain SGD, momentum and Nesterov keep
    that form; any other optimizer rescales coordinates (Adam: ``g / sqrt(v)``), and weight decay
    adds ``λW``, which is not projected.
    """
    if not isinstance(optimizer, torch.optim.SGD):
        return f"{type(optimizer).__name__} rescales the projected gradient coordinate-wise"
    for group in optimizer.param_groups:
        if group.get("weight_decay", 0):
            return f"weight_decay={group['weight_decay']} adds λW, which is not projected"
    return None


def _in_features(module: nn.Module) -> int:
    if isinstance(module, nn.Conv2d):
        return module.in_channels * module.kernel_size[0] * module.kernel_size[1]
    return module.in_features


def _optimizer_guard(hlop_ref):
    """Global optimizer pre-step hook: refuse (before the step) an optimizer that updates a protected
    weight and is not compatible with the projection (:func:`optimizer_conflict`)."""
    def hook(optimizer, args, kwargs):
        hlop = hlop_ref()
        if hlop is None:
            return
        if any(id(p) in hlop.weight_ids for g in optimizer.param_groups for p in g["params"]):
            why = optimizer_conflict(optimizer)
            if why is not None:
                raise ValueError(f"HLOP: the optimizer of the protected layers must be plain SGD "
                                 f"(momentum allowed) without weight decay: {why}")
    return hook


class HLOP:
    """Attach lateral banks to ``layers`` of ``model`` (default: every Linear and Conv2d).

    Args:
        model: the network. layers: names of the protected modules (in order).
        schedule: rows added per layer before each task: ``schedule[k][l]`` (the last entry repeats);
            an int gives the same number for every layer and task.
        lr: Hebbian rate, one float or one per layer. iters, clip, momentum: see :class:`LateralBank`.
        quantise: ``(s, Ts)`` lateral spiking neurons, or ``None``.
        orthonormal: project with an orthonormal basis of the frozen rows (see :class:`LateralBank`).
        freeze_1d: freeze parameters with ``ndim <= 1`` after the first task.
        seed: seed of the orthogonal initialisation.

    :class:`~spiking.plasticity.layers.HLOPLinear` layers project their saved input (and supply
    ``hebb_input``); other layers get a hook that projects the weight gradient ``G (I − HᵀH)`` and
    a forward hook that keeps their input for the Hebbian rule. Both are the same linear map.
    Any optimizer stepping a protected weight must keep the update a sum of projected gradients:
    its first ``step()`` raises ``ValueError`` otherwise (:func:`optimizer_conflict`).
    """

    def __init__(self, model: nn.Module, layers: Optional[Sequence[str]] = None,
                 schedule: Union[int, Sequence[Sequence[int]]] = PAPER_PMNIST_SCHEDULE,
                 lr: Union[float, Sequence[float]] = 0.01, iters: int = 5, clip: float = 10.0,
                 momentum: float = 0.9, quantise: Optional[tuple[float, float]] = None,
                 orthonormal: bool = False, freeze_1d: bool = True, seed: int = 0):
        self.model = model
        named = dict(model.named_modules())
        if layers is None:
            layers = [n for n, m in named.items() if isinstance(m, (nn.Linear, nn.Conv2d))]
        if not layers:
            raise ValueError("layers: the model has no Linear/Conv2d layer to protect")
        missing = [n for n in layers if n not in named]
        if missing:
            raise ValueError(f"layers: no module named {missing} in the model")
        self.layers = list(layers)
        self.modules = {n: named[n] for n in self.layers}
        for n, m in self.modules.items():
            if not isinstance(m, (nn.Linear, nn.Conv2d)):
                raise TypeError(f"layers: {n!r} is a {type(m).__name__}, HLOP protects Linear/Conv2d only")
            if isinstance(m, nn.Conv2d) and (m.groups != 1 or m.padding_mode != "zeros"):
                raise ValueError(f"layers: Conv2d {n!r} must have groups=1 and zero padding for HLOP")
        lrs = [float(lr)] * len(self.layers) if isinstance(lr, (int, float)) else [float(v) for v in lr]
        if len(lrs) != len(self.layers):
            raise ValueError(f"lr must be one float or one per layer ({len(self.layers)}), got {len(lrs)}")
        if isinstance(schedule, int):
            schedule = [[schedule] * len(self.layers)]
        self.schedule = [list(s) for s in schedule]
        if not self.schedule or any(len(s) != len(self.layers) for s in self.schedule):
            raise ValueError(f"schedule must list {len(self.layers)} sizes per task, got {schedule!r}")
        p = next(iter(model.parameters()))
        self.banks = {n: LateralBank(_in_features(m), lr=l, iters=iters, clip=clip, momentum=momentum,
                                     quantise=quantise, orthonormal=orthonormal, dtype=p.dtype,
                                     device=p.device)
                      for (n, m), l in zip(self.modules.items(), lrs)}
        self.freeze_1d = freeze_1d
        self.generator = torch.Generator().manual_seed(seed)
        self.tasks_seen = 0
        self._inputs: dict[str, torch.Tensor] = {}
        self._handles = []
        self.stats = {"projection_s": 0.0, "hebbian_s": 0.0}
        for n, m in self.modules.items():
            if isinstance(m, HLOPLinear):
                m.stats = self.stats
            else:
                self._handles.append(m.register_forward_pre_hook(self._capture(n)))
                self._handles.append(m.weight.register_hook(self._grad_hook(n)))
        self.weight_ids = {id(m.weight) for m in self.modules.values()}  # for the optimizer guard
        self._handles.append(register_optimizer_step_pre_hook(
            _optimizer_guard(weakref.ref(self))))

    # ------------------------------------------------------------------ hooks
    def _capture(self, name):
        def hook(module, args):
            if module.training:
                self._inputs[name] = args[0].detach()
        return hook

    def _grad_hook(self, name):
        def hook(grad):
            P = self.banks[name].projector
            if P is None:
                return grad
            t0 = time.perf_counter()
            out = P.grad(grad)
            self.stats["projection_s"] += time.perf_counter() - t0
            return out
        return hook

    def remove(self) -> None:
        """Detach every hook and projector from the model."""
        for h in self._handles:
            h.remove()
        self._handles = []
        for m in self.modules.values():
            if isinstance(m, HLOPLinear):
                m.projector, m.stats = None, None

    # ------------------------------------------------------------------ tasks
    def sizes_for(self, k: int) -> list[int]:
        return self.schedule[min(k, len(self.schedule) - 1)]

    def before_task(self, k: int) -> None:
        for (name, bank), size in zip(self.banks.items(), self.sizes_for(k)):
            bank.add_group(size, self.generator)
        self._sync_projectors()

    def after_task(self, k: int) -> None:
        for bank in self.banks.values():
            bank.merge()
        if self.freeze_1d and self.tasks_seen == 0:
            for p in self.model.parameters():
                if p.dim() <= 1:
                    p.requires_grad_(False)
        self.tasks_seen += 1
        self._sync_projectors()

    def _sync_projectors(self) -> None:
        for n, m in self.modules.items():
            if isinstance(m, HLOPLinear):
                m.projector = self.banks[n].projector

    def hebbian_input(self, name: str) -> Optional[torch.Tensor]:
        """The rows the Hebbian rule sees for layer ``name`` from the latest training forward.

        :class:`HLOPLinear`: ``hebb_input`` when the network set one, else the weight-gradient input.
        """
        m = self.modules[name]
        if isinstance(m, HLOPLinear):
            x = m.hebb_input if not m.hebb_is_grad_input and m.hebb_input is not None else m.last_input
            return x if x is None or x.dim() == 2 else x.reshape(-1, x.shape[-1])
        x = self._inputs.get(name)
        return None if x is None else layer_rows(m, x)

    def hebbian_step(self) -> None:
        """One Hebbian update (``iters`` iterations) of every bank on its latest input, then clear it.

        The banks' iterations run together (:func:`~spiking.plasticity.hebbian.oja_iterations_many`):
        one native op for all layers (each bank's frozen residual formed inside it), the same
        arithmetic per bank as the Python reference.
        """
        t0 = time.perf_counter()
        work: dict = {}  # banks grouped by their iteration settings
        with torch.no_grad():
            for name, bank in self.banks.items():
                X = self.hebbian_input(name)
                if X is None:
                    raise RuntimeError(f"no training input recorded for layer {name!r}; run a training forward first")
                m = self.modules[name]
                shared = getattr(m, "residual", None) if bank.quantise is None else None
                args = bank.hebbian_args(X, shared)
                if args is not None:
                    work.setdefault((bank.iters, bank.clip, bank.momentum, bank.quantise), []).append(args)
            for settings, banks in work.items():
                oja_iterations_many(banks, *settings)
        self.clear_inputs()
        self.stats["hebbian_s"] += time.perf_counter() - t0

    def add_moments(self, moments: dict[str, torch.Tensor]) -> None:
        """Add ``XᵀX`` (float64) of every layer's latest recorded input to ``moments[name]``, then clear it."""
        for name in self.layers:
            X = self.hebbian_input(name)
            if X is None:
                raise RuntimeError(f"no training input recorded for layer {name!r}; run a training forward first")
            X = X.double()
            moments[name] = moments[name] + X.t() @ X if name in moments else X.t() @ X
        self.clear_inputs()

    def fit_principal(self, moments: dict[str, torch.Tensor]) -> None:
        """Every bank's learning rows ← the exact principal directions of ``moments[name]`` (see
        :meth:`LateralBank.fit_principal`); call before :meth:`after_task` merges them."""
        missing = [n for n in self.banks if n not in moments]
        if missing:
            raise ValueError(f"moments: no second-moment matrix for layer(s) {missing}")
        t0 = time.perf_counter()
        for name, bank in self.banks.items():
            bank.fit_principal(moments[name])
        self.stats["hebbian_s"] += time.perf_counter() - t0

    def clear_inputs(self) -> None:
        self._inputs.clear()
        for m in self.modules.values():
            if isinstance(m, HLOPLinear):
                m.hebb_input = m.last_input = m.residual = None

    # ------------------------------------------------------------ reporting
    def sizes(self) -> dict[str, int]:
        return {n: b.size for n, b in self.banks.items()}

    def energy(self, frozen_only: bool = True) -> dict[str, float]:
        """Subspace energy of each layer's latest recorded input (see :meth:`LateralBank.energy`)."""
        out = {}
        for name, bank in self.banks.items():
            X = self.hebbian_input(name)
            if X is None:
                raise RuntimeError(f"no input recorded for layer {name!r}")
            out[name] = bank.energy(X, frozen_only)
        return out

    def state_dict(self) -> dict:
        return {"banks": {n: b.state_dict() for n, b in self.banks.items()}, "tasks_seen": self.tasks_seen,
                "generator": self.generator.get_state()}

    def load_state_dict(self, d: dict) -> None:
        for n, b in self.banks.items():
            b.load_state_dict(d["banks"][n])
        self.tasks_seen = int(d["tasks_seen"])
        self.generator.set_state(d["generator"])
        if self.freeze_1d and self.tasks_seen > 0:
            for p in self.model.parameters():
                if p.dim() <= 1:
                    p.requires_grad_(False)
        self._sync_projectors()
