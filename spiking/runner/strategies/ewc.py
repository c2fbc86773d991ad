"""Online EWC (Schwarz et al. 2018): a running diagonal Fisher anchors the weights of past tasks.

After task k, with F_k the empirical diagonal Fisher on the task's training data (mean over
mini-batches of size ``fisher_batch`` of the squared loss gradient, true labels) and θ*_k the
current weights:

    F ← γ F + F_k,    θ* ← θ*_k
    objective  L(θ) = CE(z, y) + (λ/2) Σ_p F_p (θ_p − θ*_p)²

The quadratic term is applied as a proximal (implicit) step after each optimizer step on the CE
loss:  θ ← θ* + (θ − θ*) / (1 + η λ F)   (η = learning rate). For plain SGD this is the exact
minimiser of the penalty's linearised step and, unlike the explicit gradient step
θ ← θ − η λ F (θ − θ*), it cannot diverge when η λ F > 2 (which happens on the PMNIST SNN for the
λ EWC needs: max F ≈ 0.1 at η = 0.1 caps the explicit form at λ < 200).

Default λ = 30, measured on the runner's default network (SpikingMLP 784-800-800-10, T = 6, SGD lr
0.1, batch 64) over 10 permuted-MNIST tasks of 10k training images (``bench/ewc_lambda.py``,
``bench/results/ewc_lambda.json``), ACC / BWT in %: λ = 10 84.6 ± 1.3 / −4.7 ± 1.2, 30 84.8 ± 0.3 /
−2.5 ± 0.7 and 100 81.6 ± 0.8 / −1.6 ± 0.3 (seeds 1, 2), 300 72.5 / −0.2 and 1000 63.0 / −0.9
(seed 1): λ = 30 has the best ACC and half of λ = 10's forgetting; above it the anchor costs more
plasticity than it saves in forgetting.
"""
from __future__ import annotations

import torch

from ..strategy import Strategy


class EWC(Strategy):
    name = "ewc"
    options = {
        "ewc_lambda": (float, 30.0, "EWC penalty strength λ"),
        "ewc_gamma": (float, 1.0, "online decay γ of the accumulated Fisher"),
        "fisher_samples": (int, 1000, "training samples per task for the Fisher estimate"),
        "fisher_batch": (int, 1, "mini-batch size of the Fisher estimate (1 = per-sample)"),
    }

    def setup(self, model, stream, config):
        super().setup(model, stream, config)
        if self.fisher_samples < 1 or self.fisher_batch < 1:
            raise ValueError("fisher_samples and fisher_batch must be >= 1")
        if self.ewc_lambda < 0 or not 0 <= self.ewc_gamma <= 1:
            raise ValueError("ewc_lambda must be >= 0 and ewc_gamma in [0, 1]")
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def _params(self):
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def penalty(self) -> torch.Tensor:
        """(λ/2) Σ_p F_p (θ_p − θ*_p)² (0 before the first task ends)."""
        params = self._params()
        total = torch.zeros(())
        for n, f in self.fisher.items():
            total = total + (f * (params[n].detach() - self.anchor[n]).pow(2)).sum().cpu()
        return 0.5 * self.ewc_lambda * total

    @torch.no_grad()
    def proximal(self, lr: float) -> None:
        """θ ← θ* + (θ − θ*) / (1 + lr λ F) for every anchored parameter.

        Four multi-tensor ops for all parameters; the denominators are built once per task and lr.
        """
        if getattr(self, "_prox", None) is None or self._prox[0] != lr:
            params = self._params()
            names = list(self.fisher)
            self._prox = (lr, [params[n] for n in names], [self.anchor[n] for n in names],
                          [1 + lr * self.ewc_lambda * self.fisher[n] for n in names])
        _, params, anchors, denominators = self._prox
        d = torch._foreach_sub(params, anchors)
        torch._foreach_div_(d, denominators)
        torch._foreach_add_(d, anchors)
        torch._foreach_copy_(params, d)

    def train_step(self, x, y, task):
        loss = super().train_step(x, y, task)
        if self.fisher:
            self.proximal(self.optimizer.param_groups[0]["lr"])
        return loss

    def estimate_fisher(self, task) -> dict[str, torch.Tensor]:
        params = self._params()
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        g = torch.Generator().manual_seed(int(self.config.get("seed", 0)) * 1000 + task.index)
        device = self.config.get("device", "cpu")
        n_batches = 0
        was_training = self.model.training
        self.model.train()
        for x, y in task.train_batches(self.fisher_batch, generator=g):
            if n_batches * self.fisher_batch >= self.fisher_samples:
                break
            self.model.zero_grad(set_to_none=True)
            self.loss(self.model(x.to(device)), y.to(device), task).backward()
            for n, p in params.items():
                if p.grad is not None:
                    fisher[n] += p.grad.detach().pow(2)
            n_batches += 1
        self.model.zero_grad(set_to_none=True)
        self.model.train(was_training)
        return {n: f / max(n_batches, 1) for n, f in fisher.items()}

    def after_task(self, task):
        new = self.estimate_fisher(task)
        for n, f in new.items():
            self.fisher[n] = self.ewc_gamma * self.fisher[n] + f if n in self.fisher else f
        self.anchor = {n: p.detach().clone() for n, p in self._params().items()}
        self._prox = None  # denominators of the new Fisher

    def state_dict(self):
        return {**super().state_dict(), "fisher": self.fisher, "anchor": self.anchor}

    def load_state_dict(self, d):
        super().load_state_dict(d)
        self.fisher, self.anchor = dict(d["fisher"]), dict(d["anchor"])
        self._prox = None
