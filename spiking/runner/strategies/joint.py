"""Joint (multitask) training, the upper bound: learning task k trains on tasks 0..k together.

Each step's batch holds ⌈B/(k+1)⌉ samples of every task 0..k (each task's own shuffled order),
gathered from the union of their training sets held on the device during the learn event;
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
        """Step s holds rows s·per … (s+1)·per of every task's shuffled order (tasks in index order;
        a task whose rows ran out is left out), ``per = ⌈B/(k+1)⌉``: the batches of zipping each
        task's ``train_batches(per, generator)`` and concatenating them.

        Built once per learn event: the tasks' training sets concatenated on the device (memory:
        the union of tasks 0..k), the union's row of every sample of every step as one index
        tensor (host, sorted by (step, task)), and labels/task ids gathered and split once; a step
        then costs one index op (its inputs)."""
        tasks = [self.stream[j] for j in range(task.index + 1)]
        per = max(1, math.ceil(batch_size / len(tasks)))
        orders = [torch.randperm(t.n_train, generator=generator) for t in tasks]  # train_batches' draws
        offsets = [0]
        for t in tasks[:-1]:
            offsets.append(offsets[-1] + t.n_train)
        rows = torch.cat([o + off for o, off in zip(orders, offsets)])
        key = torch.cat([torch.arange(t.n_train) // per * len(tasks) + j for j, t in enumerate(tasks)])
        rows = rows[torch.sort(key, stable=True).indices]  # by step, then task, then rank in the task
        n_steps = max(math.ceil(t.n_train / per) for t in tasks)
        if self.budget == "task":
            n_steps = min(n_steps, math.ceil(task.n_train / batch_size))
        sizes = [sum(min(per, max(0, t.n_train - s * per)) for t in tasks) for s in range(n_steps)]
        rows = rows[: sum(sizes)]
        device = self.config.get("device", "cpu")
        data = [t.train_data() for t in tasks]
        x = torch.cat([d[0] for d in data]).to(device)
        y = torch.cat([d[1] for d in data])[rows].to(device)
        ids = torch.cat([torch.full((t.n_train,), t.index, dtype=torch.int64) for t in tasks])[rows].to(device)
        for idx, yb, tb in zip(rows.to(device).split(sizes), y.split(sizes), ids.split(sizes)):
            self._task_ids = tb
            yield x[idx], yb

    def loss(self, logits, y, task):
        return mixed_task_loss(logits, y, self._task_ids, self.stream)
