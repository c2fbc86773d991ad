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
* Seeds: ``seed`` (or every entry of ``seeds``) seeds torch/numpy/random, the stream (e.g. the
  permutations), the model init and every batch order (a generator per task and epoch), so the
  same seed on CPU gives the same ``acc_matrix``. ``seeds=[1, 2, 3]`` runs each into
  ``out/seed_<s>/`` and ``out/results.json`` reports mean and ``<metric>_std`` (sample std, ddof=1).
* Output folder: ``config.json`` marks whose run it is. A folder holding another config's run,
  or the same run without ``resume``, is refused before anything is written. A checkpoint is
  written atomically after every task; ``resume=True`` continues from it.
* Timings: ``train_time_s`` per task (learn + rehearse + after_task, without evaluation),
  ``eval_time_s``, ``wall_time_s`` (summed over resumed segments). Peak memory: ``peak_rss_mb`` is
  ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (process-lifetime peak resident set, so it includes
  everything the process did before), plus ``torch.cuda.max_memory_allocated`` on CUDA.
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
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .cuda_graph import GraphedStep, check_cuda_graph
from .device_mean import DeviceMean
from .evaluation import Evaluator, SpikeCounter
from .rehearsal import RehearsalSchedule
from .strategies import STRATEGIES
from .timeline import Schedule, build_timeline

DATASETS = ("pmnist", "fashion-pmnist", "split-mnist", "split-fashion")
MODELS = ("spiking-mlp", "mlp")
#: settings that do not change the results: a different value does not make a different run
RUNTIME_KEYS = ("out", "resume", "device", "progress", "data_path", "seeds", "threads", "cuda_graph")


def default_config() -> dict:
    return dict(
        method="finetune", dataset="pmnist", scenario=None, tasks=None, epochs=1, train_subset=None,
        batch_size=64, lr=0.1, momentum=0.0, weight_decay=0.0, optimizer="sgd",
        seed=0, seeds=None, device="cpu", eval_every=0, eval_subset=1000, eval_batch_size=1000,
        test_subset=None, eval_unseen=True, threads=None, cuda_graph=False,
        model="spiking-mlp", hidden=[800, 800], T=6, options={},
        rehearse_steps=0, rehearsal="uniform", rehearsal_rate=1.0, unlearn=[],
        out=None, resume=False, progress=False, data_path=None, deterministic=True,
    )


def _int(cfg, key, low, allow_none=False):
    v = cfg[key]
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"{key} must be an int >= {low}{' or None' if allow_none else ''}, got {v!r}")


def normalize_config(config: dict | None = None, custom_stream: bool = False,
                     custom_model: bool = False) -> dict:
    """Defaults filled in and every value checked (errors name the setting)."""
    config = dict(config or {})
    cfg = default_config()
    unknown = set(config) - set(cfg)
    if unknown:
        raise ValueError(f"unknown config key(s) {sorted(unknown)}; known: {sorted(cfg)}")
    cfg.update(config)
    if cfg["method"] not in STRATEGIES:
        raise ValueError(f"method must be one of {sorted(STRATEGIES)}, got {cfg['method']!r}")
    if custom_stream:
        cfg["dataset"] = "custom" if cfg["dataset"] in (None, "pmnist") else cfg["dataset"]
    elif cfg["dataset"] not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {cfg['dataset']!r}")
    if custom_model:
        cfg["model"] = "custom" if cfg["model"] in (None, "spiking-mlp") else cfg["model"]
    elif cfg["model"] not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {cfg['model']!r}")
    for key, low in (("epochs", 1), ("batch_size", 1), ("eval_every", 0), ("eval_subset", 1),
                     ("eval_batch_size", 1), ("T", 1), ("rehearse_steps", 0), ("seed", 0)):
        _int(cfg, key, low)
    _int(cfg, "tasks", 1, allow_none=True)
    _int(cfg, "train_subset", 1, allow_none=True)
    _int(cfg, "test_subset", 1, allow_none=True)
    _int(cfg, "threads", 1, allow_none=True)
    for key in ("eval_unseen", "cuda_graph"):
        if not isinstance(cfg[key], bool):
            raise ValueError(f"{key} must be True or False, got {cfg[key]!r}")
    for key in ("lr", "momentum", "weight_decay", "rehearsal_rate"):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{key} must be a finite number >= 0, got {v!r}")
        cfg[key] = float(v)
    if cfg["scenario"] not in (None, "task", "domain", "class"):
        raise ValueError(f"scenario must be task, domain or class, got {cfg['scenario']!r}")
    if cfg["dataset"] in ("pmnist", "fashion-pmnist") and cfg["scenario"] not in (None, "domain"):
        raise ValueError(f"scenario of {cfg['dataset']} is 'domain', got {cfg['scenario']!r}")
    if not (isinstance(cfg["hidden"], (list, tuple)) and all(
            isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in cfg["hidden"])):
        raise ValueError(f"hidden must be a list of positive ints, got {cfg['hidden']!r}")
    cfg["hidden"] = list(cfg["hidden"])
    seeds = cfg["seeds"]
    if seeds is None:
        seeds = [cfg["seed"]]
    if not (isinstance(seeds, (list, tuple)) and seeds and all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise ValueError(f"seeds must be a non-empty list of ints >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds!r}")
    cfg["seeds"] = list(seeds)
    if not isinstance(cfg["options"], dict):
        raise ValueError(f"options must be a dict of strategy options, got {cfg['options']!r}")
    strategy = STRATEGIES[cfg["method"]](**cfg["options"])  # unknown / ill-typed options fail here
    cfg["options"] = {k: getattr(strategy, k) for k in type(strategy).options}  # defaults filled in
    RehearsalSchedule(cfg["rehearsal"], cfg["rehearsal_rate"])
    check_cuda_graph(cfg, STRATEGIES[cfg["method"]])
    cfg["unlearn"] = [list(u) for u in cfg["unlearn"]]
    if cfg["optimizer"] not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {cfg['optimizer']!r}")
    return cfg


def identity(cfg: dict) -> dict:
    """The part of a config that determines the results (JSON-normalised)."""
    return json.loads(json.dumps(outputs.clean({k: v for k, v in cfg.items() if k not in RUNTIME_KEYS})))


def make_stream(cfg: dict, seed: int):
    """The task stream named by ``cfg['dataset']``, cut to ``cfg['tasks']`` tasks."""
    from ..data import permuted_mnist, split_mnist  # noqa: PLC0415
    from ..data.streams import TaskStream  # noqa: PLC0415
    ds = cfg["dataset"]
    kind = "fashion" if "fashion" in ds else "mnist"
    if ds.endswith("pmnist"):
        stream = permuted_mnist(n_tasks=cfg["tasks"] or 10, seed=seed, train_subset=cfg["train_subset"],
                                dataset=kind, data_path=cfg["data_path"])
    else:
        stream = split_mnist(scenario=cfg["scenario"] or "class", seed=seed,
                             train_subset=cfg["train_subset"], dataset=kind, data_path=cfg["data_path"])
    return cut_stream(stream, cfg["tasks"], TaskStream)


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
    from ..models import MLP, SpikingMLP  # noqa: PLC0415
    sizes = [int(np.prod(stream.input_shape)), *cfg["hidden"], stream.n_outputs]
    if cfg["model"] == "spiking-mlp":
        return SpikingMLP(sizes, T=cfg["T"])
    return MLP(sizes)


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
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


# --------------------------------------------------------------------------- output folder


def prepare_out(out: Path, cfg: dict) -> None:
    """Refuse a folder holding another run (or this run without resume); claim it otherwise."""
    marker = out / "config.json"
    if marker.exists():
        try:
            stored = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"out: {marker} is unreadable ({exc}); choose another out") from exc
        mine = identity(cfg)
        theirs = {k: v for k, v in stored.items() if k not in RUNTIME_KEYS}
        if theirs != mine:
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise ValueError(f"out: {out} holds another run's results (config differs in {diff}); "
                             f"choose another out — nothing was overwritten")
        if stored.get("seeds") != cfg["seeds"]:
            raise ValueError(f"out: {out} holds a run with seeds {stored.get('seeds')}, "
                             f"not {cfg['seeds']}; choose another out")
        if not cfg["resume"]:
            raise ValueError(f"out: {out} already holds this run; pass resume=True (--resume) to "
                             f"continue it, or choose another out")
        return
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"out: {out} is not empty and holds no spiking run; choose another out")
    out.mkdir(parents=True, exist_ok=True)
    outputs.write_json(marker, {**identity(cfg), "seeds": cfg["seeds"]})


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
        self.cfg, self.seed, self.folder = cfg, seed, folder
        seed_all(seed)
        self.stream = make_stream(cfg, seed) if stream is None else cut_stream(stream, cfg["tasks"])
        self.device = torch.device(cfg["device"])
        cls = STRATEGIES[cfg["method"]]
        if model_fn is not None:
            model = model_fn(self.stream)
        elif hasattr(cls, "build_model"):  # a strategy that needs its own network (e.g. hlop)
            model = cls.build_model(cfg, self.stream)
        else:
            model = build_model(cfg, self.stream)
        self.model = model.to(self.device)
        self.strategy = cls(**cfg["options"])
        self.strategy.setup(self.model, self.stream, {**cfg, "seed": seed})
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

    # -- checkpoint
    @property
    def ckpt(self) -> Path | None:
        return self.folder / "checkpoint.pt" if self.folder else None

    def save(self):
        if self.folder is None:
            return
        save_checkpoint(self.ckpt, {
            "config": identity(self.cfg), "seed": self.seed, "position": self.position,
            "model": self.model.state_dict(), "strategy": self.strategy.state_dict(),
            "rng": rng_state(), "log": self.log.state()})
        outputs.write_events(self.folder / "events.jsonl", self.log.records)

    def restore(self) -> None:
        d = load_checkpoint(self.ckpt)
        if d.get("config") != identity(self.cfg) or d.get("seed") != self.seed:
            raise ValueError(f"checkpoint {self.ckpt} belongs to another run (config or seed differ)")
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
        self.strategy.after_task(task)
        log.train_time.append(time.perf_counter() - t0 - in_eval)
        log.train_loss.append(self.task_loss.value())  # the one host read of the task's losses
        log.task_end.append(log.step)
        if every and log.step % every != 0:
            self.continual_eval(ev.task)

    def _step_fn(self):
        """``strategy.train_step`` or, with ``cuda_graph``, its graphed form (captured afresh)."""
        if self.graphed is None:
            return self.strategy.train_step
        self.graphed.reset()
        return self.graphed

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

    def evaluate_row(self, ev) -> None:
        t0 = time.perf_counter()
        row = []
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
                if ev.kind == "learn":
                    self.learn(ev)
                elif ev.kind == "rehearse":
                    self.rehearse(ev)
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
        outputs.write_json(folder / "results.json", res)
        return
    title = f"{res['config']['method']} on {res['config']['dataset']}, seed {res['seed']}"
    outputs.plot_matrix(folder / "acc_matrix.png", res["acc_matrix"], title)
    if not curves:  # task-boundary curves from the matrix
        R = res["acc_matrix"]
        curves = {j: [(res["task_end_steps"][i], R[i][j]) for i in range(j, len(R))] for j in range(len(R))}
    outputs.plot_curves(folder / "curves.png", curves, res["task_end_steps"], title)
    outputs.write_json(folder / "results.json", res)


def aggregate(per_seed: list[dict]) -> dict:
    """Mean and sample std (ddof=1) over seeds of every scalar metric and of the matrix."""
    first = per_seed[0]
    out = {"seeds": [r["seed"] for r in per_seed], "seed": [r["seed"] for r in per_seed]}
    R = np.array([r["acc_matrix"] for r in per_seed])
    out["acc_matrix"] = R.mean(0).tolist()
    out["acc_matrix_std"] = R.std(0, ddof=1).tolist()
    out["acc_before"] = np.array([r["acc_before"] for r in per_seed]).mean(0).tolist()
    for key, v in first.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and key not in ("seed",):
            vals = [r[key] for r in per_seed]
            if any(x is None for x in vals):
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
    """
    cfg = normalize_config(config, custom_stream=stream is not None, custom_model=model_fn is not None)
    out = Path(cfg["out"]) if cfg["out"] else None
    if out is not None:
        prepare_out(out, cfg)
    multi = len(cfg["seeds"]) > 1
    threads = torch.get_num_threads()
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    deterministic = torch.are_deterministic_algorithms_enabled()
    per_seed = []
    try:
        if cfg["deterministic"] and str(cfg["device"]).startswith("cuda"):
            # CPU kernels used here are deterministic already (and the switch imports inductor)
            torch.use_deterministic_algorithms(True, warn_only=True)
        for seed in cfg["seeds"]:
            folder = None if out is None else (out / f"seed_{seed}" if multi else out)
            if folder is not None:
                folder.mkdir(exist_ok=True)
                done = folder / "results.json"
                if cfg["resume"] and done.exists():
                    per_seed.append(json.loads(done.read_text()))
                    continue
            r = _SeedRun({**cfg, "seed": seed}, seed, folder, stream, model_fn)
            res = r.execute()
            if folder is not None:
                write_seed_outputs(folder, res, r.log.records, r.curves())
            per_seed.append(res)
    finally:
        if torch.are_deterministic_algorithms_enabled() != deterministic:
            torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)
    if not multi:
        return per_seed[0]
    res = aggregate(per_seed)
    if out is not None:
        outputs.write_json(out / "results.json", res)
    return res
