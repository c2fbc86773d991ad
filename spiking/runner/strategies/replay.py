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

The buffer lives on the model's device; every random choice (which sample is kept, which task and
slot a replayed sample comes from) is drawn on the host (``random.Random`` seeded from the run's
seed), so a step neither reads the device nor issues one op per sample.

Unlearning (``unlearn({"task": j} | {"classes": [...]})``): the target's samples leave the buffer,
then ``unlearn_steps`` steps of L = CE(retained) − α·CE(forgotten) (NegGrad+, with α =
``unlearn_alpha``) on buffer batches push the model away from the target.
"""
from __future__ import annotations

import random

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
        self.rng = random.Random(int(config.get("seed", 0)) + 7919)  # host draws: no device op or sync
        self.slot_task: list[int] = []  # host copy of bt
        self._task_ids = None

    # ----------------------------------------------------------------- buffer
    def sample(self, phase: int):
        """``self.k`` old-task samples drawn with the schedule's task shares (None if none).

        Drawn on the host (``self.rng``: the task of each sample with the shares p_j, then a
        buffer slot of that task uniformly) and gathered with one index op per buffer tensor.
        """
        pools: dict[int, list[int]] = {}
        for slot, t in enumerate(self.slot_task):
            if t < phase:
                pools.setdefault(t, []).append(slot)
        if not pools:
            return None
        old = sorted(pools)
        shares = self.rehearsal.shares(phase, old)
        tasks = self.rng.choices(old, weights=shares, k=self.k)
        idx = [pools[t][self.rng.randrange(len(pools[t]))] for t in tasks]
        idx = torch.tensor(idx, dtype=torch.int64, device=self.by.device)
        return self.bx[idx], self.by[idx], self.bt[idx]

    def _reservoir(self, x, y, task):
        """Vitter's algorithm R over the batch: sample n is kept with probability size / n.

        The slot decisions are host draws; the kept rows are written with one op per buffer tensor.
        """
        x, y = x.detach(), y.detach()
        if self.bx.device != x.device or self.bx.dtype != x.dtype:
            self.bx, self.by, self.bt = self.bx.to(x), self.by.to(y.device), self.bt.to(y.device)
        slots: dict[int, int] = {}  # slot -> row (a later row of the batch overwrites an earlier one)
        fill = len(self.slot_task)
        for i in range(x.shape[0]):
            self.seen += 1
            if fill < self.buffer_size:
                slots[fill] = i
                fill += 1
            else:
                j = self.rng.randrange(self.seen)
                if j < self.buffer_size:
                    slots[j] = i
        if not slots:
            return
        grow = fill - len(self.slot_task)
        if grow:
            self.slot_task += [task.index] * grow
            self.bx = torch.cat([self.bx, x.new_empty((grow, *x.shape[1:]))])
            self.by = torch.cat([self.by, y.new_empty(grow)])
            self.bt = torch.cat([self.bt, self.bt.new_empty(grow)])
        for j in slots:
            self.slot_task[j] = task.index
        dst = torch.tensor(list(slots), dtype=torch.int64, device=x.device)
        src = torch.tensor(list(slots.values()), dtype=torch.int64, device=x.device)
        self.bx[dst] = x[src]
        self.by[dst] = y[src]
        self.bt[dst] = task.index

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
        self.slot_task = self.bt.tolist()

    # --------------------------------------------------------------- training
    def loss(self, logits, y, task):
        return mixed_task_loss(logits, y, self._task_ids, self.stream)

    def train_step(self, x, y, task):
        task_il = getattr(self.stream, "task_labels_at_test", False)
        xs, ys, self._task_ids = x, y, None
        batch = self.sample(task.index)
        if batch is not None:
            rx, ry, rt = batch
            xs = torch.cat([x, rx.to(x.device)])
            ys = torch.cat([y, ry.to(y.device)])
        if task_il:  # the per-row task masks of mixed_task_loss
            own = torch.full((x.shape[0],), task.index, dtype=torch.int64, device=y.device)
            self._task_ids = own if batch is None else torch.cat([own, rt.to(y.device)])
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
        self.slot_task = self.bt.tolist()
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
                "seen": self.seen, "gen": self.gen.get_state(), "rng": _rng_state(self.rng)}

    def load_state_dict(self, d):
        super().load_state_dict(d)
        self.bx, self.by, self.bt, self.seen = d["bx"], d["by"], d["bt"], int(d["seen"])
        self.slot_task = self.bt.tolist()
        self.gen.set_state(d["gen"])
        if "rng" in d:
            self.rng.setstate(_rng_from(d["rng"]))


def _rng_state(rng: random.Random) -> dict:
    """``random.Random`` state as plain ints (checkpoints load with ``weights_only=True``)."""
    version, internal, gauss = rng.getstate()
    return {"version": version, "internal": list(internal), "gauss": gauss}


def _rng_from(d: dict) -> tuple:
    return d["version"], tuple(d["internal"]), d["gauss"]
