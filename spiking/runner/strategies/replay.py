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

The buffer lives on the model's device in storage of ``buffer_size + 1`` rows allocated once (the
last row takes the batch rows the reservoir does not keep, so every row of a batch is written
with one ``index_copy_`` per buffer tensor); ``bx``, ``by``, ``bt`` are its filled rows. Every
random choice (which sample is kept, which task and slot a replayed sample comes from) is drawn
on the host (``random.Random`` seeded from the run's seed) and the task of every slot is kept
there, so a step neither reads the device nor issues one op per sample.

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
    graph_safe = ("the replay buffer's samples and reservoir slots are drawn on the host every step (fresh "
                  "index tensors, a batch that changes size while the buffer has no old task)")
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
        self._put(torch.empty((0, *stream.input_shape)), torch.empty(0, dtype=torch.int64), [])
        self.seen = 0
        self.gen = torch.Generator().manual_seed(int(config.get("seed", 0)) + 7919)
        self.rng = random.Random(int(config.get("seed", 0)) + 7919)  # host draws: no device op or sync
        self._task_ids = None

    # ----------------------------------------------------------------- buffer
    def _put(self, x: torch.Tensor, y: torch.Tensor, tasks: list[int]) -> None:
        """Make ``(x, y)`` with tasks ``tasks`` the buffer's contents (fresh storage, see module doc)."""
        n = len(tasks)
        self._x = x.new_empty((self.buffer_size + 1, *x.shape[1:]))
        self._y = y.new_empty(self.buffer_size + 1)
        self._x[:n], self._y[:n] = x[:n], y[:n]
        self.slot_task = list(tasks)  # the task of every filled slot (host)

    @property
    def bx(self) -> torch.Tensor:
        """Inputs of the filled slots [n, *input_shape]."""
        return self._x[: len(self.slot_task)]

    @property
    def by(self) -> torch.Tensor:
        """Labels of the filled slots [n]."""
        return self._y[: len(self.slot_task)]

    @property
    def bt(self) -> torch.Tensor:
        """Task index of the filled slots [n] (from the host's list)."""
        return torch.tensor(self.slot_task, dtype=torch.int64, device=self._y.device)

    def sample(self, phase: int):
        """``self.k`` old-task samples ``(x, y, tasks)`` drawn with the schedule's task shares
        (``tasks``: the host list of their task indices), or None if there are none.

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
        idx = torch.tensor(idx, dtype=torch.int64, device=self._y.device)
        return self._x[idx], self._y[idx], tasks

    @torch.no_grad()
    def _reservoir(self, x, y, task):
        """Vitter's algorithm R over the batch: sample n is kept with probability size / n.

        The slot decisions are host draws (a later row of the batch overwrites an earlier one in
        the same slot); every row is written with one ``index_copy_`` per buffer tensor, the rows
        not kept into the spare last row.
        """
        if self._x.device != x.device or self._x.dtype != x.dtype:
            self._put(self.bx.to(x), self.by.to(y.device), self.slot_task)
        slots: dict[int, int] = {}  # slot -> row
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
        self.slot_task += [task.index] * (fill - len(self.slot_task))
        dst = [self.buffer_size] * x.shape[0]
        for j, i in slots.items():
            self.slot_task[j] = task.index
            dst[i] = j
        dst = torch.tensor(dst, dtype=torch.int64, device=x.device)
        self._x.index_copy_(0, dst, x)
        self._y.index_copy_(0, dst, y)

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
        bx, by, bt = (torch.cat(p)[: self.buffer_size] for p in zip(*parts))
        self._put(bx, by, bt.tolist())

    # --------------------------------------------------------------- training
    def loss(self, logits, y, task):
        return mixed_task_loss(logits, y, self._task_ids, self.stream)

    def train_step(self, x, y, task):
        task_il = getattr(self.stream, "task_labels_at_test", False)
        xs, ys, self._task_ids = x, y, None
        batch = self.sample(task.index)
        if batch is not None:
            rx, ry, replayed = batch
            xs = torch.cat([x, rx.to(x.device)])
            ys = torch.cat([y, ry.to(y.device)])
        if task_il:  # the per-row task masks of mixed_task_loss (from the host: one op)
            self._task_ids = torch.tensor([task.index] * x.shape[0] + (replayed if batch else []), dtype=torch.int64,
                                          device=y.device)
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
        bt = self.bt
        fx, fy, ft = self.bx[forget], self.by[forget], bt[forget]
        self._put(self.bx[~forget], self.by[~forget], bt[~forget].tolist())
        bt = self.bt
        if len(fy) == 0 or len(self.by) == 0:
            return
        device = self.config.get("device", "cpu")
        for _ in range(self.unlearn_steps):
            ri = torch.randint(len(self.by), (self.k,), generator=self.gen)
            fi = torch.randint(len(fy), (self.k,), generator=self.gen)
            self.model.train()
            self.optimizer.zero_grad(set_to_none=True)
            keep = mixed_task_loss(self.model(self.bx[ri].to(device)), self.by[ri].to(device),
                                   bt[ri], self.stream)
            drop = mixed_task_loss(self.model(fx[fi].to(device)), fy[fi].to(device), ft[fi], self.stream)
            (keep - self.unlearn_alpha * drop).backward()
            self.optimizer.step()

    def state_dict(self):
        return {**super().state_dict(), "bx": self.bx.clone(), "by": self.by.clone(), "bt": self.bt,
                "seen": self.seen, "gen": self.gen.get_state(), "rng": _rng_state(self.rng)}

    def load_state_dict(self, d):
        super().load_state_dict(d)
        self._put(d["bx"], d["by"], d["bt"].tolist())
        self.seen = int(d["seen"])
        self.gen.set_state(d["gen"])
        if "rng" in d:
            self.rng.setstate(_rng_from(d["rng"]))


def _rng_state(rng: random.Random) -> dict:
    """``random.Random`` state as plain ints (checkpoints load with ``weights_only=True``)."""
    version, internal, gauss = rng.getstate()
    return {"version": version, "internal": list(internal), "gauss": gauss}


def _rng_from(d: dict) -> tuple:
    return d["version"], tuple(d["internal"]), d["gauss"]
