"""``run(config) -> results``: the one-call API behind ``spiking run``.

A run executes the event timeline (``timeline.py``) for each seed:

    evaluate(before) → [learn(k) → rehearse(k)? → evaluate(k) → checkpoint → unlearn…]_k

* Every learn event iterates ``strategy.batches`` and calls ``strategy.train_step``; with
  ``eval_every = N > 0`` every N iterations (and at the end of each task) all seen tasks are
  evaluated on a fixed seeded subset of ``eval_subset`` test samples (the continual-evaluation
  curves behind min-ACC, WC-ACC, WF^w, WP^w). Without it those metrics use the task boundaries.
* ``evaluate(k)`` gives row k of the accuracy matrix: every task's full test set (unseen tasks too,
  for FWT; ``eval_unseen = False`` evaluates only tasks 0..k and skips the before-training row, so
  unseen entries are NaN and FWT is None — ACC, BWT and forgetting are unchanged, evaluation costs
  about half; ``test_subset = n`` evaluates a fixed seeded n-sample subset instead, a speed knob for
  reduced runs); spikes per sample of every spiking layer are counted with forward hooks.
* ``threads`` calls ``torch.set_num_threads`` (on a loaded 2-core machine 1 thread is far faster).
  The thread count changes float reductions, hence results: ``threads=None`` is recorded as the
  count actually used, and it is part of the run's identity.
* Seeds: ``seed`` (or every entry of ``seeds``) seeds torch/numpy/random, the stream (e.g. the
  permutations), the model init and every batch order (a generator per task and epoch), so the
  same seed on CPU gives the same ``acc_matrix``. ``seeds=[1, 2, 3]`` runs each into
  ``out/seed_<s>/`` and ``out/results.json`` reports mean and ``<metric>_std`` (sample std, ddof=1).
* Validate, then claim: :func:`validate` checks every setting (device, options, NaN/inf), and the
  first seed's stream, model and strategy are built, before the output folder is touched
  (``outfolder.py``: one lock-holding writer per folder, ``config.json`` marks whose run it is,
  another config's folder or this run without ``resume`` is refused with nothing written).
* Integrity: a checkpoint (``checkpoint.py``) is written atomically after every task;
  checkpoints, ``results.json`` and ``config.json`` carry a checksum verified before use;
  ``resume=True`` continues from the checkpoint, or returns the stored results of a finished run
  (its config and seed checked). A task whose mean training loss is non-finite or above
  :data:`LOSS_LIMIT` stops the run (:class:`TrainingDiverged`), the last checkpoint kept.
* Timings: ``train_time_s`` per task (learn + rehearse + after_task, without evaluation),
  ``eval_time_s``, ``wall_time_s`` (the event loop, checkpoints included, summed over resumed
  segments), ``setup_time_s`` (building the stream, model and strategy, device work included;
  ``setup_parts_s`` splits it into stream, model, strategy and the rest) and
  ``checkpoint_time_s`` (both of this process's segment); ``eval_batch_size_used``: the
  evaluation batch (``Evaluator.batch_size_for``; on a GPU sized by memory). Peak memory: ``peak_rss_mb`` is
  ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (process-lifetime peak resident set, so it includes
  everything the process did before), plus the peak CUDA memory allocated
  (:func:`.batch_memory.peak_allocated`) on CUDA.
"""
from __future__ import annotations

import json
import math
import random
import resource
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import metrics, outputs
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state, verify_checkpoint
from .config import RUNTIME_KEYS, check, check_all, default_config  # noqa: F401 (default_config re-exported)
from .cuda_graph import GraphedStep, check_cuda_graph
from .device_mean import DeviceMean
from .batch_memory import peak_allocated
from .evaluation import Evaluator, SpikeCounter
from .outfolder import check_out_path, claim, environment
from .registry import DATASETS, MODELS
from .rehearsal import RehearsalSchedule
from .strategies import STRATEGIES
from .timeline import Schedule, build_timeline

#: a task whose mean training loss exceeds this (or is NaN/inf) has diverged: cross-entropy at
#: chance is ln(classes) ≈ 2.3, so 1e6 means logits of order 1e6
LOSS_LIMIT = 1e6


class TrainingDiverged(RuntimeError):
    """The training loss became non-finite (or exceeded ``LOSS_LIMIT``); names steps and options."""


def normalize_config(config: dict | None = None, custom_stream: bool = False,
                     custom_model: bool = False) -> dict:
    """Defaults filled in and every value checked (``config.SETTINGS``; errors name the setting)."""
    config = dict(config or {})
    labels = {}  # the caller's own stream / model: their names are only recorded
    if custom_stream:
        given = config.pop("dataset", None)
        labels["dataset"] = "custom" if given in (None, "pmnist") else str(given)
    if custom_model:
        given = config.pop("model", None)
        labels["model"] = "custom" if given in (None, "spiking-mlp") else str(given)
    cfg = {**check_all(config), **labels}
    for key, registry in (("dataset", DATASETS), ("model", MODELS)):
        if key not in labels:
            registry.resolve(cfg[key])  # a module:factory that cannot be imported fails here
    if cfg["dataset"] in ("pmnist", "fashion-pmnist") and cfg["scenario"] not in (None, "domain"):
        raise ValueError(f"scenario of {cfg['dataset']} is 'domain', got {cfg['scenario']!r}")
    cfg["seeds"] = check("seeds", [cfg["seed"]] if cfg["seeds"] is None else cfg["seeds"])
    strategy = STRATEGIES[cfg["method"]](**cfg["options"])  # unknown / ill-typed options fail here
    cfg["options"] = {k: getattr(strategy, k) for k in type(strategy).options}  # defaults filled in
    RehearsalSchedule(cfg["rehearsal"], cfg["rehearsal_rate"])
    check_cuda_graph(cfg, STRATEGIES[cfg["method"]])
    return cfg


def check_device(name) -> None:
    """``ValueError`` naming the device unless torch can use it here (cpu, cuda[:i], mps)."""
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda', got {name!r}") from None
    if dev.type == "cuda":
        if torch.version.cuda is None:
            raise ValueError(f"device {name!r}: this torch {torch.__version__} is built without CUDA; "
                             f"use device 'cpu' or install a CUDA build of torch")
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: no CUDA GPU is visible to torch; use device 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {name!r}: MPS is not available here; use device 'cpu'")
    elif dev.type != "cpu":
        raise ValueError(f"device must be 'cpu', 'cuda[:i]' or 'mps', got {name!r}")


def validate(config: dict | None = None, custom_stream: bool = False, custom_model: bool = False) -> dict:
    """Every check that needs neither the output folder nor the data: the normalised config, with
    ``threads`` resolved to the count that will be used, or a ``ValueError`` naming the setting."""
    cfg = normalize_config(config, custom_stream=custom_stream, custom_model=custom_model)
    check_device(cfg["device"])
    for key, v in cfg["options"].items():
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{key} must be a finite number, got {v!r}")
    if cfg["threads"] is None:
        cfg["threads"] = torch.get_num_threads()
    return cfg


def identity(cfg: dict) -> dict:
    """The part of a config that determines the results (JSON-normalised; device → its type)."""
    ident = {k: v for k, v in cfg.items() if k not in RUNTIME_KEYS}
    ident["device"] = torch.device(cfg["device"]).type
    return json.loads(json.dumps(outputs.clean(ident)))


def make_stream(cfg: dict, seed: int):
    """The task stream named by ``cfg['dataset']`` (registry or module:factory), cut to ``cfg['tasks']``."""
    return cut_stream(DATASETS.resolve(cfg["dataset"])(cfg, seed), cfg["tasks"])


def cut_stream(stream, tasks, TaskStream=None):
    if tasks is None or tasks == len(stream):
        return stream
    if tasks > len(stream):
        raise ValueError(f"tasks must be <= {len(stream)} for {stream.name}, got {tasks}")
    if TaskStream is None:
        from ..data.streams import TaskStream  # noqa: PLC0415
    return TaskStream([stream[i] for i in range(tasks)], stream.name, stream.scenario,
                      stream.n_outputs, stream.input_shape)


def build_model(cfg: dict, stream) -> torch.nn.Module:
    """The network named by ``cfg['model']`` (registry or module:factory)."""
    return MODELS.resolve(cfg["model"])(cfg, stream)


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _generator(seed: int, *parts: int) -> torch.Generator:
    value = seed
    for p in parts:
        value = (value * 1_000_003 + p + 1) % (2**62)
    return torch.Generator().manual_seed(value)


def peak_memory_mb(device) -> dict:
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if str(device).startswith("cuda") and torch.cuda.is_available():
        out["peak_cuda_mb"] = peak_allocated(device) / 2**20  # with peaks from before a probe reset it
    return out


# --------------------------------------------------------------------------- one seed


class _Log:
    """Everything the metrics need, plus what a checkpoint restores."""

    def __init__(self):
        self.rows: list[list[float]] = []
        self.before: list[float] | None = None
        self.records: list[dict] = []          # events.jsonl
        self.task_end: list[int] = []
        self.train_time: list[float] = []
        self.train_loss: list[float] = []
        self.unlearning: list[dict] = []
        self.spikes: list[dict] = []
        self.step = 0
        self.eval_time = 0.0
        self.wall = 0.0

    def state(self) -> dict:
        return dict(vars(self))

    def load(self, d: dict) -> None:
        for k in vars(self):
            setattr(self, k, d[k])


class _SeedRun:
    def __init__(self, cfg, seed, folder, stream, model_fn):
        start = time.perf_counter()
        self.cfg, self.seed, self.folder = cfg, seed, folder
        seed_all(seed)
        self.stream = make_stream(cfg, seed) if stream is None else cut_stream(stream, cfg["tasks"])
        self.device = torch.device(cfg["device"])
        t_stream = time.perf_counter()
        cls = STRATEGIES[cfg["method"]]
        if model_fn is not None:
            model = model_fn(self.stream)
        elif hasattr(cls, "build_model") and ":" not in cfg["model"]:  # a strategy's own network (hlop)
            model = cls.build_model(cfg, self.stream)
        else:
            model = build_model(cfg, self.stream)
        self.model = model.to(self.device)
        t_model = time.perf_counter()
        self.strategy = cls(**cfg["options"])
        self.strategy.setup(self.model, self.stream, {**cfg, "seed": seed})
        t_strategy = time.perf_counter()
        self.rehearsal = RehearsalSchedule(cfg["rehearsal"], cfg["rehearsal_rate"])
        schedule = Schedule(cfg["epochs"], cfg["rehearse_steps"], self.rehearsal,
                            tuple(tuple(u) for u in cfg["unlearn"]))
        self.events = build_timeline(len(self.stream), schedule)
        self.evaluator = Evaluator(self.stream, cfg["eval_batch_size"], self.device,
                                   cfg["eval_subset"], subset_seed=seed, test_subset=cfg["test_subset"])
        self.log = _Log()
        self.task_loss = DeviceMean()  # this learn event's training loss, summed on the device
        # cuda_graph: a learn event's full batches replay a captured step (recaptured per event)
        self.graphed = GraphedStep(self.strategy, cfg["batch_size"]) if cfg["cuda_graph"] else None
        self.position = 0
        self.pbar = None
        self.checkpoint_time = 0.0  # this process's checkpoint writes (part of the wall time)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the set-up's device work (context, copies) counts as set-up
        end = time.perf_counter()
        self.setup_time = end - start
        # where it went: the task stream (data), the model (built, moved to the device), the strategy
        # (its set-up and optimizer), the rest (schedule, evaluator, device sync)
        self.setup_parts = {"stream": t_stream - start, "model": t_model - t_stream, "strategy": t_strategy - t_model,
                            "rest": end - t_strategy}

    # -- checkpoint
    @property
    def ckpt(self) -> Path | None:
        return self.folder / "checkpoint.pt" if self.folder else None

    def save(self):
        if self.folder is None:
            return
        t0 = time.perf_counter()
        save_checkpoint(self.ckpt, {
            "config": identity(self.cfg), "seed": self.seed, "position": self.position,
            "model": self.model.state_dict(), "strategy": self.strategy.state_dict(),
            "rng": rng_state(), "log": self.log.state()})
        outputs.write_events(self.folder / "events.jsonl", self.log.records)
        self.checkpoint_time += time.perf_counter() - t0

    def restore(self) -> None:
        d = load_checkpoint(self.ckpt)
        check_owner(self.ckpt, d.get("config"), d.get("seed"), self.cfg, self.seed)
        self.model.load_state_dict(d["model"])
        self.strategy.load_state_dict(d["strategy"])
        set_rng_state(d["rng"])
        self.log.load(d["log"])
        self.position = d["position"]

    # -- events
    def _record(self, kind, trained, task, acc, loss, **extra):
        self.log.records.append({"step": self.log.step, "trained": trained, "task": task,
                                 "acc": acc, "loss": loss, "kind": kind, **extra})

    def continual_eval(self, k: int) -> float:
        t0 = time.perf_counter()
        for j in range(k + 1):
            a, l = self.evaluator.on_subset(self.model, self.stream[j])
            self._record("subset", k, j, a, l)
        dt = time.perf_counter() - t0
        self.log.eval_time += dt
        return dt

    def learn(self, ev) -> None:
        cfg, log, task = self.cfg, self.log, self.stream[ev.task]
        self.strategy.before_task(task)
        t0, in_eval = time.perf_counter(), 0.0
        self.task_loss.reset()
        step = self._step_fn()
        every = cfg["eval_every"]
        for epoch in range(ev.epochs):
            g = _generator(self.seed, ev.task, epoch)
            for x, y in self.strategy.batches(task, cfg["batch_size"], g):
                self.task_loss.add(step(x.to(self.device), y.to(self.device), task))
                log.step += 1
                if every and log.step % every == 0:
                    in_eval += self.continual_eval(ev.task)
                if self.pbar is not None:
                    self.pbar.update(1)
        mean_loss = self.task_loss.value()  # the one host read of the task's losses
        if self.graphed is not None:  # the graph and its memory pool go before the Hebbian phase and
            self.graphed.reset()       # the evaluation (the next learn event captures afresh)
        if self.task_loss.count:
            self.check_loss(mean_loss, log.step - self.task_loss.count + 1, log.step, ev.task)
        self.strategy.after_task(task)
        log.train_time.append(time.perf_counter() - t0 - in_eval)
        log.train_loss.append(mean_loss)
        log.task_end.append(log.step)
        if every and log.step % every != 0:
            self.continual_eval(ev.task)

    def _step_fn(self):
        """``strategy.train_step`` or, with ``cuda_graph``, its graphed form (captured afresh)."""
        if self.graphed is None:
            return self.strategy.train_step
        self.graphed.reset()
        return self.graphed

    def check_loss(self, loss: float, first: int, last: int, task: int) -> None:
        """Stop (:class:`TrainingDiverged`) when the mean loss of steps ``first..last`` diverged.

        Called where the accumulated loss is read (once per task), not per step; the checkpoint of
        the previous task is kept as it is."""
        if not (math.isfinite(loss) and loss <= LOSS_LIMIT):
            self.diverged(f"the mean loss over steps {first}-{last} (task {task + 1}, seed {self.seed}) "
                          f"is {loss:g}")

    def diverged(self, what: str) -> None:
        """Raise :class:`TrainingDiverged`: ``what`` happened; the likely options; what is kept."""
        cfg = self.cfg
        suspects = [f"lr={cfg['lr']:g}"] + [
            f"{k}={v:g}" for k, v in cfg["options"].items()
            if isinstance(v, float) and any(w in k for w in ("lr", "lambda", "rate"))]
        kept = (f"{self.ckpt} keeps the state before this task; rerun with a smaller value into "
                f"another out" if self.ckpt and self.ckpt.exists()
                else "nothing was computed yet; rerun with a smaller value")
        raise TrainingDiverged(f"training diverged: {what}; the likely cause is a too large "
                               f"{' or '.join(suspects)}; the run stopped, {kept}")

    def _train_event(self, ev) -> None:
        """A learn or rehearse event. A step that fails (e.g. a layer refusing NaN input) while the
        parameters hold NaN/inf is divergence, named by its step (checked only on failure)."""
        try:
            (self.learn if ev.kind == "learn" else self.rehearse)(ev)
        except ValueError as exc:
            if all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
                raise
            self.diverged(f"the parameters became NaN/inf by step {self.log.step + 1} (task "
                          f"{ev.task + 1}, seed {self.seed}; {exc})")

    def rehearse(self, ev) -> None:
        """``ev.steps`` steps on old tasks' training data, tasks drawn by the rehearsal schedule."""
        t0, k = time.perf_counter(), ev.task
        g = _generator(self.seed, k, 10_000)
        iters: dict[int, object] = {}
        picks = self.rehearsal.sample_tasks(k, range(k), ev.steps, g)
        step = self.strategy.train_step  # eager: consecutive steps change task (no static graph)
        for j in picks.tolist():
            batch = next(iters.get(j, iter(())), None)
            if batch is None:
                iters[j] = iter(self.stream[j].train_batches(self.cfg["batch_size"], generator=g))
                batch = next(iters[j])
            x, y = batch
            step(x.to(self.device), y.to(self.device), self.stream[j])
            self.log.step += 1
        self.log.train_time[-1] += time.perf_counter() - t0
        self.log.task_end[-1] = self.log.step
        if self.cfg["eval_every"]:
            self.continual_eval(k)

    def _eval_bar(self, ev):
        """A progress bar over the tasks one ``evaluate_row`` will evaluate (``progress`` only)."""
        if not self.cfg["progress"]:
            return None
        from tqdm.auto import tqdm  # noqa: PLC0415
        n = len(self.stream) if self.cfg["eval_unseen"] else ev.task + 1
        when = "before training" if ev.task < 0 else f"after task {ev.task + 1}"
        return tqdm(total=n, unit="task", desc=f"{self.cfg['method']} seed {self.seed}: evaluate {when}",
                    leave=False)

    def evaluate_row(self, ev) -> None:
        t0 = time.perf_counter()
        row = []
        bar = self._eval_bar(ev)
        with SpikeCounter(self.model) as counter:
            n = 0
            for task in self.stream:
                if not self.cfg["eval_unseen"] and task.index > ev.task:
                    row.append(float("nan"))  # not evaluated (unseen task)
                    continue
                a, l = self.evaluator.full(self.model, task)
                row.append(a)
                n += self.evaluator.n_full(task)
                self._record("before" if ev.task < 0 else "full", ev.task, task.index, a, l)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        spikes = {name: c / n for name, c in counter.counts.items()} if n else {}
        if ev.task < 0:
            self.log.before = row
        else:
            self.log.rows.append(row)
            self.log.spikes.append(spikes)
        self.log.eval_time += time.perf_counter() - t0

    def _target_split(self, target):
        """(forgotten, retained) test sets over the seen tasks for an unlearning target."""
        seen = range(len(self.log.rows))
        forget, keep = [], []
        for j in seen:
            task = self.stream[j]
            x, y = task.test_data()
            if "task" in target:
                (forget if j == target["task"] else keep).append((task, x, y))
            else:
                m = torch.isin(y, torch.as_tensor(target["classes"]))
                forget.append((task, x[m], y[m]))
                keep.append((task, x[~m], y[~m]))
        return forget, keep

    def _acc_on(self, parts) -> float | None:
        from .evaluation import evaluate  # noqa: PLC0415
        correct = n = 0
        for task, x, y in parts:
            if len(y):
                classes = task.classes if self.stream.task_labels_at_test else None
                a, _ = evaluate(self.model, x, y, classes, self.cfg["eval_batch_size"], self.device)
                correct += a * len(y)
                n += len(y)
        return correct / n if n else None

    def unlearn(self, ev) -> None:
        forget, keep = self._target_split(ev.target)
        before = (self._acc_on(forget), self._acc_on(keep))
        t0 = time.perf_counter()
        self.strategy.unlearn(ev.target)
        dt = time.perf_counter() - t0
        self.log.unlearning.append({"after_task": ev.task, "target": ev.target, "time_s": dt,
                                    "forgotten_acc_before": before[0], "retained_acc_before": before[1]})

    def evaluate_unlearn(self, ev) -> None:
        forget, keep = self._target_split(ev.target)
        rec = self.log.unlearning[-1]
        rec["forgotten_acc"], rec["retained_acc"] = self._acc_on(forget), self._acc_on(keep)
        self._record("unlearn", ev.task, None, rec["forgotten_acc"], None, target=ev.target)

    # -- main loop
    def total_steps(self) -> int:
        bs = self.cfg["batch_size"]
        return sum(math.ceil(t.n_train / bs) * self.cfg["epochs"] for t in self.stream) + \
            self.cfg["rehearse_steps"] * max(0, len(self.stream) - 1)

    def execute(self) -> dict:
        if self.folder is not None and self.cfg["resume"] and self.ckpt.exists():
            self.restore()
        start = time.perf_counter()
        wall_before = self.log.wall
        if self.cfg["progress"]:
            from tqdm.auto import tqdm  # noqa: PLC0415
            self.pbar = tqdm(total=self.total_steps(), initial=self.log.step, unit="it",
                             desc=f"{self.cfg['method']} seed {self.seed}", leave=False)
        try:
            for i in range(self.position, len(self.events)):
                ev = self.events[i]
                if ev.kind in ("learn", "rehearse"):
                    self._train_event(ev)
                elif ev.kind == "unlearn":
                    self.unlearn(ev)
                elif ev.target is not None:
                    self.evaluate_unlearn(ev)
                else:
                    self.evaluate_row(ev)
                self.position = i + 1
                self.log.wall = wall_before + time.perf_counter() - start
                if ev.checkpoint:
                    self.save()
        finally:
            if self.pbar is not None:
                self.pbar.close()
        return self.results()

    def curves(self) -> dict:
        curves: dict[int, list] = {}
        for r in self.log.records:
            if r["kind"] == "subset":
                curves.setdefault(r["task"], []).append((r["step"], r["acc"]))
        return curves

    def results(self) -> dict:
        log = self.log
        curves = self.curves()
        summary = metrics.summarize(log.rows, log.before, curves or None, log.task_end)
        return {
            "acc_matrix": log.rows, "acc_before": log.before, **summary,
            "task_names": [t.name for t in self.stream],
            "train_time_s": log.train_time, "train_loss": log.train_loss,
            "eval_time_s": log.eval_time, "wall_time_s": log.wall, "steps": log.step,
            "setup_time_s": self.setup_time, "setup_parts_s": self.setup_parts,
            "checkpoint_time_s": self.checkpoint_time,
            "eval_batch_size_used": self.evaluator.last_batch_size or self.evaluator.batch_size_for(
                self.model, self.stream[0]),
            "task_end_steps": log.task_end,
            **peak_memory_mb(self.device),
            "peak_memory_note": "peak_rss_mb: resource.getrusage ru_maxrss (process-lifetime peak RSS)",
            "spikes_per_sample": log.spikes[-1] if log.spikes else {},
            "spikes_per_sample_by_task": log.spikes,
            "unlearning": log.unlearning,
            "strategy_report": self.strategy.report() if hasattr(self.strategy, "report") else None,
            "config": identity(self.cfg), "seed": self.seed, "versions": outputs.versions(),
        }


def write_seed_outputs(folder: Path, res: dict, records: list[dict], curves: dict) -> None:
    outputs.write_events(folder / "events.jsonl", records)
    outputs.write_matrix_csv(folder / "acc_matrix.csv", res["acc_matrix"], res["task_names"])
    try:
        import matplotlib  # noqa: F401, PLC0415
    except ImportError:
        res["plots"] = "skipped: matplotlib is not installed (pip install spiking[plot])"
        outputs.write_checked_json(folder / "results.json", res)
        return
    title = f"{res['config']['method']} on {res['config']['dataset']}, seed {res['seed']}"
    outputs.plot_matrix(folder / "acc_matrix.png", res["acc_matrix"], title)
    if not curves:  # task-boundary curves from the matrix
        curves = outputs.boundary_curves(res["acc_matrix"], res["task_end_steps"])
    outputs.plot_curves(folder / "curves.png", curves, res["task_end_steps"], title)
    outputs.write_checked_json(folder / "results.json", res)


def check_owner(path: Path, config, seed, cfg: dict, want_seed) -> None:
    """``ValueError`` unless a stored file's config and seed are this run's."""
    if config != identity(cfg) or seed != want_seed:
        mine = identity(cfg)
        diff = sorted(k for k in set(mine) | set(config or {}) if mine.get(k) != (config or {}).get(k))
        what = f"config differs in {diff}" if diff else f"seed {seed!r}, not {want_seed!r}"
        raise ValueError(f"{path} belongs to another run ({what}); choose another out — "
                         f"nothing was overwritten")


def read_results(path: Path, cfg: dict, seed) -> dict:
    """Stored results of a finished run (or seed): checksum, config and seed verified."""
    res = outputs.read_checked_json(path)
    check_owner(path, res.get("config"), res.get("seed"), cfg, seed)
    return res


def check_stored(out: Path, cfg: dict) -> None:
    """Before a resume writes anything: every seed's results.json and checkpoint.pt verified."""
    multi = len(cfg["seeds"]) > 1
    for seed in cfg["seeds"]:
        folder = out / f"seed_{seed}" if multi else out
        if (folder / "results.json").exists():
            read_results(folder / "results.json", {**cfg, "seed": seed}, seed)
        elif (folder / "checkpoint.pt").exists():
            verify_checkpoint(folder / "checkpoint.pt")


def aggregate(per_seed: list[dict]) -> dict:
    """Mean and sample std (ddof=1) over seeds of every scalar metric and of the matrix.

    Results fresh from memory (NaN for an unevaluated entry) and read back from JSON (null) are
    treated alike: matrices become float arrays (null → NaN), a scalar that any seed lacks is None.
    """
    per_seed = [outputs.clean(r) for r in per_seed]
    first = per_seed[0]
    out = {"seeds": [r["seed"] for r in per_seed], "seed": [r["seed"] for r in per_seed]}
    R = np.array([r["acc_matrix"] for r in per_seed], dtype=np.float64)
    out["acc_matrix"] = R.mean(0).tolist()
    out["acc_matrix_std"] = R.std(0, ddof=1).tolist()
    before = [r["acc_before"] for r in per_seed]
    out["acc_before"] = (None if any(b is None for b in before)
                         else np.array(before, dtype=np.float64).mean(0).tolist())

    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    keys = [k for k in first if k != "seed" and any(number(r.get(k)) for r in per_seed)]
    for key in keys:
        vals = [r.get(key) for r in per_seed]
        if not all(number(v) for v in vals):
            out[key], out[key + "_std"] = None, None
            continue
        out[key] = float(np.mean(vals))
        out[key + "_std"] = float(np.std(vals, ddof=1))
    out["wall_time_s"] = float(sum(r["wall_time_s"] for r in per_seed))
    for key in ("min_ACC", "WC_ACC", "WF10", "WF100", "WP10", "WP100", "BWT", "FWT", "forgetting"):
        out.setdefault(key, None)
    out.update(task_names=first["task_names"], config=first["config"], versions=first["versions"],
               per_seed=[{k: r[k] for k in ("seed", "ACC", "BWT", "forgetting", "wall_time_s")}
                         for r in per_seed])
    return out


def run(config: dict | None = None, *, stream=None,
        model_fn: Callable[[object], torch.nn.Module] | None = None) -> dict:
    """Run the configured continual-learning experiment and return its results dict.

    ``stream`` (a TaskStream) and ``model_fn(stream) -> nn.Module`` replace the named dataset and
    model (their config entries then read "custom"). See ``default_config()`` for the settings.
    Order: validate → build the first seed's run → lock and claim ``out`` → verify stored files
    (resume) → run the seeds → results.
    """
    cfg = validate(config, custom_stream=stream is not None, custom_model=model_fn is not None)
    out = Path(cfg["out"]) if cfg["out"] else None
    if out is not None:
        check_out_path(out)
    multi = len(cfg["seeds"]) > 1
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    lock = None
    try:
        torch.set_num_threads(cfg["threads"])
        if cfg["deterministic"] and str(cfg["device"]).startswith("cuda"):
            # CPU kernels used here are deterministic already (and the switch imports inductor)
            torch.use_deterministic_algorithms(True, warn_only=True)
        s0 = cfg["seeds"][0]
        folder0 = None if out is None else (out / f"seed_{s0}" if multi else out)
        first = _SeedRun({**cfg, "seed": s0}, s0, folder0, stream, model_fn)  # config errors: here
        if out is not None:
            lock = claim(out, identity(cfg), cfg["seeds"], cfg["resume"], environment(cfg["device"]))
            if cfg["resume"]:
                if multi and (out / "results.json").exists():
                    return read_results(out / "results.json", {**cfg, "seed": s0}, cfg["seeds"])
                check_stored(out, cfg)
        return _run_seeds(cfg, out, first, stream, model_fn)
    finally:
        if lock is not None:
            lock.release()
        if torch.are_deterministic_algorithms_enabled() != deterministic:
            torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)


def _run_seeds(cfg: dict, out: Path | None, first: _SeedRun, stream, model_fn) -> dict:
    multi = len(cfg["seeds"]) > 1
    per_seed = []
    for seed in cfg["seeds"]:
        folder = None if out is None else (out / f"seed_{seed}" if multi else out)
        if folder is not None:
            folder.mkdir(exist_ok=True)
            done = folder / "results.json"
            if cfg["resume"] and done.exists():
                per_seed.append(read_results(done, {**cfg, "seed": seed}, seed))
                continue
        r = first if seed == first.seed else _SeedRun({**cfg, "seed": seed}, seed, folder, stream, model_fn)
        res = r.execute()
        if folder is not None:
            write_seed_outputs(folder, res, r.log.records, r.curves())
        per_seed.append(res)
    if not multi:
        return per_seed[0]
    res = aggregate(per_seed)
    if out is not None:
        outputs.write_seed_aggregate(out, res, per_seed[0]["task_end_steps"])
        outputs.write_checked_json(out / "results.json", res)
    return res
