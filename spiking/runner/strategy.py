"""Strategy: the small object the runner drives for every learn event.

Contract (docs/design.md, "Runner contracts")::

    setup(model, stream, config)     once, before the first task (stores them, builds the optimizer)
    before_task(task)                hook
    train_step(x, y, task) -> Tensor forward, loss, backward, adjust_gradients, step; returns the loss
                                     as a 0-dim tensor on the model's device (a float is accepted
                                     too): the runner sums it there under no_grad and reads it once
                                     per task
    after_task(task)                 hook
    unlearn(target)                  optional; the base raises NotImplementedError naming the strategy
    state_dict() / load_state_dict(d)  everything needed to resume (the model is saved by the runner);
                                     tensors and plain containers only: checkpoints are read back
                                     with torch.load(weights_only=True)

Two further overridable pieces keep subclasses short instead of re-writing ``train_step``:
``loss(logits, y, task)`` (e.g. EWC adds its penalty) and ``adjust_gradients(task)`` (e.g. GPM
projects gradients between backward and step). ``batches(task, batch_size, generator)`` is what the
runner iterates for a learn event (default: the task's own shuffled batches; joint training mixes
tasks).

The base loss is cross-entropy (``spiking.runner.cross_entropy``, ``F.cross_entropy``'s kernels); in task-incremental streams (``stream.task_labels_at_test``) the
logits of classes outside ``task.classes`` are masked to -inf, so softmax runs over the task's
classes only:  L = CE(mask(z, task.classes), y).

Optional class/instance extras the runner uses when present: ``build_model(cfg, stream)``
(classmethod: the network this strategy needs when the caller gives none) and ``report() -> dict``
(stored as ``strategy_report`` in results.json).

``config`` is the normalised run config (a dict, see ``spiking.runner.run.default_config``); the
base reads ``lr``, ``momentum``, ``weight_decay`` and ``optimizer`` ("sgd" | "adam") from it.
Per-strategy settings are declared in the class attribute ``options = {name: (type, default,
help)}``; they are passed to the constructor and become attributes (``Strategy(**opts)``).
"""
from __future__ import annotations

from typing import Any, Iterator

import torch

from .cross_entropy import cross_entropy


def mask_logits(logits: torch.Tensor, classes) -> torch.Tensor:
    """Return logits with every column not in ``classes`` set to -inf (task-IL masking)."""
    keep = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    keep[list(classes)] = True
    return logits.masked_fill(~keep, float("-inf"))


def class_table(stream) -> torch.Tensor:
    """bool [n_tasks, n_outputs]: row t marks the output units of task t."""
    table = torch.zeros(len(stream), stream.n_outputs, dtype=torch.bool)
    for t in stream:
        table[t.index, list(t.classes)] = True
    return table


def mixed_task_loss(logits: torch.Tensor, y: torch.Tensor, task_ids: torch.Tensor, stream) -> torch.Tensor:
    """Cross-entropy for a batch mixing tasks (replay, joint); task-IL masks each row to its task."""
    if getattr(stream, "task_labels_at_test", False):
        keep = class_table(stream).to(logits.device)[task_ids.to(logits.device)]
        logits = logits.masked_fill(~keep, float("-inf"))
    return cross_entropy(logits, y)


class Strategy:
    """Plain fine-tuning: SGD on the current task's cross-entropy. Base of every strategy."""

    name = "finetune"
    options: dict[str, tuple[type, Any, str]] = {}
    #: ``True`` if ``train_step`` is static (same shapes and tensors every step, no host reads)
    #: and can be captured in a CUDA graph (``cuda_graph``), else a string saying why not
    graph_safe: bool | str = True

    def __init__(self, **opts):
        unknown = set(opts) - set(self.options)
        if unknown:
            raise ValueError(
                f"unknown option(s) {sorted(unknown)} for strategy {self.name!r}; "
                f"known: {sorted(self.options)}")
        for key, (typ, default, _help) in self.options.items():
            value = opts.get(key, default)
            if value is not None and typ is not None and not isinstance(value, typ):
                try:
                    value = typ(value)
                except (TypeError, ValueError) as exc:
                    raise TypeError(f"option {key!r} of strategy {self.name!r} must be "
                                    f"{typ.__name__}, got {value!r}") from exc
            setattr(self, key, value)
        self.model: torch.nn.Module | None = None
        self.stream = None
        self.config: dict = {}
        self.optimizer: torch.optim.Optimizer | None = None

    # ----------------------------------------------------------------- set-up
    def setup(self, model: torch.nn.Module, stream, config: dict) -> None:
        self.model, self.stream, self.config = model, stream, dict(config)
        self.optimizer = self.make_optimizer()

    def make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        kind = cfg.get("optimizer", "sgd")
        # foreach: one multi-tensor op per update instead of one per parameter (same arithmetic)
        if kind == "sgd":
            return torch.optim.SGD(params, lr=cfg.get("lr", 0.1), momentum=cfg.get("momentum", 0.0),
                                   weight_decay=cfg.get("weight_decay", 0.0), foreach=True)
        if kind == "adam":
            return torch.optim.Adam(params, lr=cfg.get("lr", 1e-3),
                                    weight_decay=cfg.get("weight_decay", 0.0), foreach=True)
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {kind!r}")

    # ------------------------------------------------------------------ hooks
    def before_task(self, task) -> None:
        pass

    def after_task(self, task) -> None:
        pass

    def batches(self, task, batch_size: int, generator: torch.Generator | None = None) -> Iterator:
        """Mini-batches (x, y) of one learn event; default: the task's shuffled training set.

        The batches of ``task.train_batches(batch_size, generator)`` (the same order and values),
        cut from the task's training set transformed once, moved to the model's device once and
        put in the epoch's order once (``x[order]``, the old copy freed): the batches are views
        of it (one ``split`` per epoch), so a step issues no op for its data.
        """
        x, y = task.train_data()
        device = self.config.get("device", "cpu")
        order = torch.randperm(task.n_train, generator=generator).to(device)
        x, y = x.to(device)[order], y.to(device)[order]
        return zip(x.split(batch_size), y.split(batch_size))

    # --------------------------------------------------------------- training
    def loss(self, logits: torch.Tensor, y: torch.Tensor, task) -> torch.Tensor:
        if getattr(self.stream, "task_labels_at_test", False):
            logits = mask_logits(logits, task.classes)
        return cross_entropy(logits, y)

    def adjust_gradients(self, task) -> None:
        """Called between backward and the optimizer step (GPM projects here)."""

    def clear_grads(self) -> None:
        """``optimizer.zero_grad(set_to_none=True)`` without its profiler record (two ops per step)."""
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                p.grad = None

    def optimizer_step(self) -> None:
        """``optimizer.step()``; plain SGD (no momentum, weight decay or maximize) runs as its one
        update op ``θ ← θ − lr·g`` (``_foreach_add_``, SGD's own arithmetic) without the profiler
        records around ``step``; step hooks (global and the optimizer's) are called as ``step`` would."""
        opt = self.optimizer
        if type(opt) is not torch.optim.SGD or any(
                g["momentum"] or g["weight_decay"] or g["maximize"] or isinstance(g["lr"], torch.Tensor)
                for g in opt.param_groups):
            opt.step()
            return
        from torch.optim import optimizer as _optim  # noqa: PLC0415

        for hook in (*_optim._global_optimizer_pre_hooks.values(), *opt._optimizer_step_pre_hooks.values()):
            hook(opt, (), {})
        with torch.no_grad():
            for group in opt.param_groups:
                params = [p for p in group["params"] if p.grad is not None]
                if params:
                    torch._foreach_add_(params, [p.grad for p in params], alpha=-group["lr"])
        for hook in (*opt._optimizer_step_post_hooks.values(), *_optim._global_optimizer_post_hooks.values()):
            hook(opt, (), {})

    def train_step(self, x: torch.Tensor, y: torch.Tensor, task) -> torch.Tensor:
        """One optimisation step; returns the loss as a device tensor (no host sync)."""
        self.model.train()
        self.clear_grads()
        loss = self.loss(self.model(x), y, task)
        loss.backward(self._unit(loss))
        self.adjust_gradients(task)
        self.optimizer_step()
        return loss  # read by the runner under no_grad (a detach would be one more op)

    def _unit(self, loss: torch.Tensor) -> torch.Tensor:
        """A kept ``1`` like ``loss``: the seed gradient of ``backward`` without a ``ones_like`` op."""
        unit = getattr(self, "_unit_tensor", None)
        if unit is None or unit.dtype != loss.dtype or unit.device != loss.device:
            with torch.inference_mode(False):
                unit = self._unit_tensor = torch.ones((), dtype=loss.dtype, device=loss.device)
        return unit

    def unlearn(self, target) -> None:
        raise NotImplementedError(f"strategy {self.name!r} does not support unlearning")

    # ----------------------------------------------------------------- resume
    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict() if self.optimizer is not None else None}

    def load_state_dict(self, d: dict) -> None:
        if d.get("optimizer") is not None:
            self.optimizer.load_state_dict(d["optimizer"])
