"""GPM (Saha et al., ICLR 2021): gradient projection onto the orthogonal complement of the input
subspaces of past tasks, for every ``nn.Linear`` layer.

After each task, for each Linear layer l with inputs A (in × n: ``gpm_samples`` training samples;
a [T, B, in] input contributes all T·B rows) and basis U (in × r, orthonormal):

    Â = A − U Uᵀ A,  Â = Ũ S̃ Ṽᵀ;   keep the first r̃ columns of Ũ with
    (‖A‖² − ‖Â‖² + Σ_{i≤r̃} s̃_i²) / ‖A‖²  ≥  ε_l     (ε = 0.95 first layer, 0.99 others)
    U ← [U, Ũ_{:, :r̃}]   (first task: U = 0, so Â = A)

While training later tasks: g_W ← g_W − g_W U Uᵀ for each Linear weight W; every other parameter
(biases, thresholds, ...) is frozen from the second task on (its gradient zeroed), as in GPM.
"""
from __future__ import annotations

import torch
from torch import nn

from ..strategy import Strategy


def extend_basis(U: torch.Tensor | None, A: torch.Tensor, threshold: float) -> torch.Tensor | None:
    """Grow the orthonormal basis ``U`` [in, r] with the principal directions of ``A`` [in, n]
    not yet covered, until the energy criterion ``threshold`` is met (see module docstring)."""
    A = A.double()
    total = A.pow(2).sum()
    if total == 0:
        return U
    resid = A if U is None else A - U.double() @ (U.double().T @ A)
    Ur, S, _ = torch.linalg.svd(resid, full_matrices=False)
    covered = (total - resid.pow(2).sum()) / total
    ratios = S.pow(2) / total
    need = threshold - covered
    if need <= 0:
        return U
    r = int(torch.searchsorted(torch.cumsum(ratios, 0), need).item()) + 1
    r = min(r, Ur.shape[1])
    new = Ur[:, :r].to(A.dtype)
    Unew = new if U is None else torch.cat([U.double(), new], 1)
    return Unew[:, : Unew.shape[0]].float()


class GPM(Strategy):
    name = "gpm"
    options = {
        "threshold_first": (float, 0.95, "energy threshold of the first Linear layer"),
        "threshold": (float, 0.99, "energy threshold of the other Linear layers"),
        "gpm_samples": (int, 300, "training samples per task for the representation matrices"),
    }

    def setup(self, model, stream, config):
        super().setup(model, stream, config)
        self.linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not self.linears:
            raise TypeError("gpm needs a model with nn.Linear layers")
        self.bases: list[torch.Tensor | None] = [None] * len(self.linears)
        ids = {id(m.weight) for m in self.linears}
        self.others = [p for p in model.parameters() if id(p) not in ids]

    def adjust_gradients(self, task):
        if all(U is None for U in self.bases):
            return
        for lin, U, Ut in zip(self.linears, self.bases, self._transposes()):
            g = lin.weight.grad
            if U is not None and g is not None:  # g − (g U) Uᵀ in two ops (mm, addmm), a new grad tensor
                lin.weight.grad = torch.addmm(g, torch.mm(g, U), Ut, alpha=-1)
        for p in self.others:
            if p.grad is not None:
                p.grad.zero_()

    def _transposes(self) -> list:
        """``Uᵀ`` of every basis, kept until the bases change (no transpose op per step)."""
        key = [id(U) for U in self.bases]
        if getattr(self, "_bases_t", (None,))[0] != key:
            self._bases_t = (key, [None if U is None else U.T for U in self.bases])
        return self._bases_t[1]

    @torch.no_grad()
    def representations(self, task) -> list[torch.Tensor]:
        """Inputs of every Linear layer on ``gpm_samples`` training samples, as [in, n] matrices."""
        rows: list[list[torch.Tensor]] = [[] for _ in self.linears]
        hooks = [lin.register_forward_hook(
            lambda _m, inp, _out, i=i: rows[i].append(inp[0].detach().reshape(-1, inp[0].shape[-1])))
            for i, lin in enumerate(self.linears)]
        g = torch.Generator().manual_seed(int(self.config.get("seed", 0)) * 1000 + task.index)
        was_training = self.model.training
        self.model.eval()
        try:
            x, _ = next(iter(task.train_batches(self.gpm_samples, generator=g)))
            self.model(x.to(self.config.get("device", "cpu")))
        finally:
            for h in hooks:
                h.remove()
            self.model.train(was_training)
        return [torch.cat(r).T.cpu() for r in rows]

    def after_task(self, task):
        for i, A in enumerate(self.representations(task)):
            eps = self.threshold_first if i == 0 else self.threshold
            U = self.bases[i]
            U = extend_basis(None if U is None else U.cpu(), A, eps)
            self.bases[i] = None if U is None else U.to(self.linears[i].weight.device)

    def state_dict(self):
        return {**super().state_dict(), "bases": list(self.bases)}

    def load_state_dict(self, d):
        super().load_state_dict(d)
        self.bases = list(d["bases"])
