"""Experience replay with a fixed-size buffer and a rehearsal schedule over old tasks.

Every training step concatenates the current batch with ``replay_batch`` buffer samples of old
tasks; the old task of each replayed sample is drawn with the schedule's shares p_j (uniform,
exponential or power-law decay with age k − j, see ``spiking.runner.rehearsal``), then a sample
uniformly within that task. Loss: CE over the joint batch (task-IL: each row masked to its task).

Buffer policies:
    reservoir        every seen training sample n is kept with probability size / n
                     (uniform over the stream; Vitter's algorithm R)
    class_balanced   after each task the buffer is split equally over the seen (task, label)
                     pairs; each pair keeps a seeded random subset of its samples

Unlearning (``unlearn({"task": j} | {"classes": [...]})``): the target's samples leave the buffer,
then ``unlearn_steps`` steps of L = CE(retained) − α·CE(forgotten) (NegGrad+, with α =
``unlearn_alpha``) on buffer batches push the model away from the target.
"""
from __future__ import annotations

import torch

from ..rehearsal import RehearsalSchedule
from ..strategy import Strategy, mixed_task_loss

POLICIES = ("reservoir", "class_balanced")


class Replay(Strategy):
    name = "replay"
    graph_safe = "the replay buffer grows and is sampled on the host every step (changing shapes)"
    options = {
        "buffer_size": (int, 1000, "samples kept in the replay buffer"),
        "policy": (str, "reservoir", "buffer policy: reservoir | class_balanced"),
        "replay_batch": (int, 0, "replayed samples per step (0 = the training batch size)"),
        "schedule": (str, "uniform", "rehearsal schedule over old tasks: uniform | exponential | power"),
        "schedule_rate": (float, 1.0, "decay rate of the exponential / power-law schedule"),
        "unlearn_steps": (int, 50, "NegGrad+ steps per unlearning request"),
        "unlearn_alpha": (float, 0.5, "weight α of the ascent term on the forgotten samples"),
    }

    def setup(self, model, stream, config):
        super().setup(model, stream, config)
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        if self.buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {self.buffer_size}")
        self.rehearsal = RehearsalSchedule(self.schedule, self.schedule_rate)
        self.k = self.replay_batch or int(config.get("batch_size", 64))
        shape = tuple(stream.input_shape)
        self.bx = torch.empty((0, *shape))
        self.by = torch.empty(0, dtype=torch.int64)
        self.bt = torch.empty(0, dtype=torch.int64)
        self.seen = 0
        self.gen = torch.Generator().manual_seed(int(config.get("seed", 0)) + 7919)
        self._task_ids = None

    # ----------------------------------------------------------------- buffer
    def sample(self, phase: int):
        """``self.k`` old-task samples drawn with the schedule's task shares (None if none)."""
        old = sorted({int(t) for t in self.bt.tolist() if t < phase})
        if not old:
            return None
        tasks = self.rehearsal.sample_tasks(phase, old, self.k, self.gen)
        idx = torch.empty(self.k, dtype=torch.int64)
        for t in old:
            where = (tasks == t).nonzero().squeeze(1)
            pool = (self.bt == t).nonzero().squeeze(1)
            idx[where] = pool[torch.randint(len(pool), (len(where),), generator=self.gen)]
        return self.bx[idx], self.by[idx], self.bt[idx]

    def _reservoir(self, x, y, task):
        x, y = x.detach().cpu(), y.cpu()
        t = torch.full_like(y, task.index)
        for i in range(x.shape[0]):
            self.seen += 1
            if len(self.by) < self.buffer_size:
                self.bx = torch.cat([self.bx, x[i:i + 1]])
                self.by = torch.cat([self.by, y[i:i + 1]])
                self.bt = torch.cat([self.bt, t[i:i + 1]])
            else:
                j = int(torch.randint(self.seen, (1,), generator=self.gen))
                if j < self.buffer_size:
                    self.bx[j], self.by[j], self.bt[j] = x[i], y[i], t[i]

    def _class_balanced(self, task):
        x, y = task.train_data()
        keys = sorted({(int(t), int(c)) for t, c in zip(self.bt.tolist(), self.by.tolist())}
                      | {(task.index, int(c)) for c in y.unique().tolist()})
        quota = max(1, self.buffer_size // len(keys))
        parts = []
        for t, c in keys:
            if t == task.index:
                pool = (y == c).nonzero().squeeze(1)
                pick = pool[torch.randperm(len(pool), generator=self.gen)[:quota]]
                parts.append((x[pick], y[pick], torch.full((len(pick),), t, dtype=torch.int64)))
            else:
                keep = ((self.bt == t) & (self.by == c)).nonzero().squeeze(1)[:quota]
                parts.append((self.bx[keep], self.by[keep], self.bt[keep]))
        self.bx, self.by, self.bt = (torch.cat(p)[: self.buffer_size] for p in zip(*parts))

    # --------------------------------------------------------------- training
    def loss(self, logits, y, task):
        return mixed_task_loss(logits, y, self._task_ids, self.stream)

    def train_step(self, x, y, task):
        self._task_ids = torch.full((x.shape[0],), task.index, dtype=torch.int64)
        xs, ys = x, y
        batch = self.sample(task.index)
        if batch is not None:
            rx, ry, rt = batch
            xs = torch.cat([x, rx.to(x.device)])
            ys = torch.cat([y, ry.to(y.device)])
            self._task_ids = torch.cat([self._task_ids, rt])
        loss = super().train_step(xs, ys, task)
        if self.policy == "reservoir":
            self._reservoir(x, y, task)
        return loss

    def after_task(self, task):
        if self.policy == "class_balanced":
            self._class_balanced(task)

    def unlearn(self, target):
        if "task" in target:
            forget = self.bt == target["task"]
        else:
            forget = torch.isin(self.by, torch.as_tensor(target["classes"]))
        fx, fy, ft = self.bx[forget], self.by[forget], self.bt[forget]
        self.bx, self.by, self.bt = self.bx[~forget], self.by[~forget], self.bt[~forget]
        if len(fy) == 0 or len(self.by) == 0:
            return
        device = self.config.get("device", "cpu")
        for _ in range(self.unlearn_steps):
            ri = torch.randint(len(self.by), (self.k,), generator=self.gen)
            fi = torch.randint(len(fy), (self.k,), generator=self.gen)
            self.model.train()
            self.optimizer.zero_grad(set_to_none=True)
            keep = mixed_task_loss(self.model(self.bx[ri].to(device)), self.by[ri].to(device),
                                   self.bt[ri], self.stream)
            drop = mixed_task_loss(self.model(fx[fi].to(device)), fy[fi].to(device), ft[fi], self.stream)
            (keep - self.unlearn_alpha * drop).backward()
            self.optimizer.step()

    def state_dict(self):
        return {**super().state_dict(), "bx": self.bx, "by": self.by, "bt": self.bt,
                "seen": self.seen, "gen": self.gen.get_state()}

    def load_state_dict(self, d):
        super().load_state_dict(d)
        self.bx, self.by, self.bt, self.seen = d["bx"], d["by"], d["bt"], int(d["seen"])
        self.gen.set_state(d["gen"])
