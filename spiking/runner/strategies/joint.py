"""Joint (multitask) training, the upper bound: learning task k trains on tasks 0..k together.

Each step's batch holds ⌈B/(k+1)⌉ samples of every task 0..k (each task's own shuffled order);
L = CE over the mixed batch (task-IL: each row masked to its own task's classes).
``budget = "union"`` runs until every task's data is used once (one epoch over the union:
cumulative cost Σ_k (k+1) epochs); ``budget = "task"`` stops after as many steps as one epoch of
task k alone (the same compute as fine-tuning).
"""
from __future__ import annotations

import math

import torch

from ..strategy import Strategy, mixed_task_loss

BUDGETS = ("union", "task")


class Joint(Strategy):
    name = "joint"
    graph_safe = "its batches mix a varying number of samples per task (changing shapes and task ids)"
    options = {"budget": (str, "union", "union: one epoch over tasks 0..k; task: one task's steps")}

    def setup(self, model, stream, config):
        super().setup(model, stream, config)
        if self.budget not in BUDGETS:
            raise ValueError(f"budget must be one of {BUDGETS}, got {self.budget!r}")
        self._task_ids = None

    def batches(self, task, batch_size, generator=None):
        tasks = [self.stream[j] for j in range(task.index + 1)]
        per = max(1, math.ceil(batch_size / len(tasks)))
        iters = [t.train_batches(per, generator=generator) for t in tasks]
        limit = math.ceil(task.n_train / batch_size) if self.budget == "task" else None
        step = 0
        while limit is None or step < limit:
            parts = []
            for t, it in zip(tasks, iters):
                b = next(it, None)
                if b is not None:
                    parts.append((b[0], b[1], torch.full((len(b[1]),), t.index, dtype=torch.int64)))
            if not parts:
                return
            x, y, self._task_ids = (torch.cat(p) for p in zip(*parts))
            step += 1
            yield x, y

    def loss(self, logits, y, task):
        return mixed_task_loss(logits, y, self._task_ids, self.stream)
