"""Counting what a training step costs the host: dispatched aten ops and host syncs.

:class:`OpCounter` is a ``TorchDispatchMode``: every aten op that reaches the dispatcher from
Python or from the autograd engine (forward, backward, optimizer) is counted once, by name; ops
an op's kernel calls internally are not (the mode is off while an op runs), so the count is the
number of *top-level* kernel launches a step asks for (on a GPU, each is at least one launch).

Host syncs: points where the host must wait for the device's result.

* ``aten._local_scalar_dense`` (``.item()``, ``float(t)``, ``int(t)``, ``bool(t)``, ``if t:``),
  ``aten.nonzero`` / ``masked_select`` / ``unique`` and friends (output size depends on values),
  ``aten.equal``, and a copy from a non-CPU device to the CPU;
* ``Tensor.tolist()``, ``Tensor.numpy()`` and ``Tensor.cpu()`` calls (patched while counting,
  since they do not dispatch an op on CPU tensors but sync on a GPU).

On the CPU nothing waits, but each counted point would stall a CUDA stream, so a count of 0
measured on the CPU is the property the GPU needs.
"""
from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["OpCounter", "SYNC_OPS"]

#: aten ops whose result the host must read back (value-dependent output or a scalar read)
SYNC_OPS = frozenset({"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique", "_unique2",
                      "unique_consecutive", "unique_dim", "equal", "is_nonzero", "repeat_interleave",
                      "_assert_async", "bincount", "histc"})
_PATCHED = ("tolist", "numpy", "cpu")


class OpCounter(TorchDispatchMode):
    """``with OpCounter() as c: ...`` → ``c.ops`` (Counter of aten op names), ``c.syncs`` (Counter
    of sync kinds), ``c.n_ops`` and ``c.n_syncs`` (their totals)."""

    def __init__(self):
        super().__init__()
        self.ops: Counter = Counter()
        self.syncs: Counter = Counter()
        self._saved: dict = {}

    @property
    def n_ops(self) -> int:
        return sum(self.ops.values())

    @property
    def n_syncs(self) -> int:
        return sum(self.syncs.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        self.ops[name] += 1
        if name in SYNC_OPS:
            self.syncs[name] += 1
        elif name in ("_to_copy", "copy_") and args and isinstance(args[0], torch.Tensor):
            src = args[1] if name == "copy_" else args[0]
            dst = args[0].device if name == "copy_" else kwargs.get("device", src.device)
            if src.device.type != "cpu" and torch.device(dst).type == "cpu":
                self.syncs["device_to_host_copy"] += 1
        return func(*args, **kwargs)

    def _patch(self, method: str):
        original = getattr(torch.Tensor, method)
        counter = self

        def counted(tensor, *a, **k):
            counter.syncs[method] += 1
            return original(tensor, *a, **k)

        self._saved[method] = original
        setattr(torch.Tensor, method, counted)

    def __enter__(self):
        for method in _PATCHED:
            self._patch(method)
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            for method, original in self._saved.items():
                setattr(torch.Tensor, method, original)
            self._saved.clear()

    def per_step(self, steps: int) -> dict:
        """``{"ops": n, "syncs": n, "top_ops": {...}, "sync_kinds": {...}}`` divided by ``steps``."""
        return {"ops": self.n_ops / steps, "syncs": self.n_syncs / steps,
                "top_ops": {k: v / steps for k, v in self.ops.most_common(12)},
                "sync_kinds": {k: v / steps for k, v in self.syncs.items()}}


# --------------------------------------------------------------------------- one method's step

#: the methods of the HLOP paper's table, as (label, runner method, strategy options)
METHODS = (
    ("finetune", "finetune", {}),
    ("ewc", "ewc", {"fisher_samples": 64}),
    ("replay", "replay", {}),
    ("gpm", "gpm", {}),
    ("joint", "joint", {}),
    ("hlop-dsr", "hlop", {"train_method": "dsr", "energy_samples": 64}),
    ("hlop-bptt", "hlop", {"train_method": "bptt", "energy_samples": 64}),
    ("hlop-ottt", "hlop", {"train_method": "ottt", "energy_samples": 64}),
)
#: per-step budgets (issue #13): top-level ops and host syncs of one training step
BUDGETS = {"hlop-dsr": (80, 0)}
DEFAULT_BUDGET = (50, 0)


def budget(label: str) -> tuple[int, int]:
    """``(max ops, max syncs)`` per training step of ``label`` (see :data:`METHODS`)."""
    return BUDGETS.get(label, DEFAULT_BUDGET)


def synthetic_stream(n_train, n_test: int = 128, tasks: int = 2, inputs: int = 784, classes: int = 10,
                     seed: int = 0):
    """A permuted-MNIST-shaped domain-incremental stream of random data (shapes are what counts);
    ``n_train``: training samples per task (an int, or one int per task)."""
    from ..data import from_datasets  # noqa: PLC0415

    sizes = [n_train] * tasks if isinstance(n_train, int) else list(n_train)
    g = torch.Generator().manual_seed(seed)
    parts = []
    for n_task in sizes:
        split = [(torch.rand(n, inputs, generator=g), torch.arange(n) % classes) for n in (n_task, n_test)]
        parts.append(tuple(split))
    return from_datasets(parts, scenario="domain", name="synthetic")


#: batches of every task but the last in :func:`measure_step`'s runs
FIRST_TASKS_STEPS = 3
#: (label, hidden) already run once in this process (see :func:`measure_step`)
_WARMED: set = set()


def _one_run(method: str, options: dict, hidden: int, steps: int, tasks: int, batch: int, count: bool,
             extra: dict | None = None):
    from .run import run  # noqa: PLC0415

    # the first tasks have a fixed length; only the last one's steps vary between the two runs
    stream = synthetic_stream([FIRST_TASKS_STEPS * batch] * (tasks - 1) + [steps * batch], tasks=tasks)
    cfg = dict(method=method, options=options, hidden=[hidden, hidden], batch_size=batch, lr=0.05,
               eval_batch_size=128, **(extra or {}))
    counter = OpCounter()
    if count:
        with counter:
            res = run(cfg, stream=stream)
    else:
        res = run(cfg, stream=stream)
    return res, counter


def measure_step(label: str, hidden: int = 8, steps: tuple[int, int] = (3, 8), tasks: int = 2,
                 batch: int = 64, count: bool = True, timing: bool = False, repeats: int = 3,
                 extra: dict | None = None) -> dict:
    """Ops, host syncs and (``timing``) seconds per training step of ``label`` (a :data:`METHODS` label).

    Two runner runs on a synthetic stream whose last task has ``steps[0]`` or ``steps[1]`` batches
    (the earlier tasks :data:`FIRST_TASKS_STEPS` each) differ only in training steps of the last
    task, where every method's old-task machinery is active (projections, penalties, bases, replay);
    set-up, per-task hooks and evaluation cost the same, so ``(count₂ − count₁) / (steps₂ − steps₁)``
    is the cost of one such step as the runner drives it (batching, train_step, loss bookkeeping); the
    first count of a label in a process follows one uncounted run, so that work done once per process
    (building or loading an extension, filling a cache) is not counted. Time: the median over ``repeats`` of the
    same difference of the runs' training time (``train_time_s``, evaluation excluded).
    """
    method, options = next((m, o) for lab, m, o in METHODS if lab == label)
    if method == "hlop" and hidden < 200:  # the paper's banks would fill a narrow layer in task 0:
        options = {**options, "lateral": "2,2,2"}  # keep frozen and learning rows in every layer
    out: dict = {"method": label, "hidden": hidden, "steps_per_task": list(steps), "tasks": tasks, "batch": batch,
                 "options": options}
    if count:
        if (label, hidden) not in _WARMED:  # process-wide one-time work (extension loads, caches) would
            _one_run(method, options, hidden, steps[0], tasks, batch, False, extra)  # enter the first count
            _WARMED.add((label, hidden))
        (r1, c1), (r2, c2) = (_one_run(method, options, hidden, s, tasks, batch, True, extra) for s in steps)
        n = r2["steps"] - r1["steps"]
        ops, syncs = c2.ops - c1.ops, c2.syncs - c1.syncs
        out.update(ops=sum(ops.values()) / n, syncs=sum(syncs.values()) / n,
                   top_ops={k: v / n for k, v in ops.most_common(10)},
                   sync_kinds={k: v / n for k, v in syncs.items() if v})
    if timing:
        per = []
        for _ in range(repeats):
            r1, _ = _one_run(method, options, hidden, steps[0], tasks, batch, False, extra)
            r2, _ = _one_run(method, options, hidden, steps[1], tasks, batch, False, extra)
            per.append((sum(r2["train_time_s"]) - sum(r1["train_time_s"])) / (r2["steps"] - r1["steps"]))
        per.sort()
        out.update(step_s=per[len(per) // 2], step_s_all=per)
    return out
