"""Every run setting declared once: type, default, help, allowed values, whether it changes results.

``SETTINGS`` drives validation (:func:`check`), the ``spiking run`` flags (``spiking.cli``), the JSON
``config.json`` of a run, and the values a sweep grid accepts (:func:`parse_text`). ``RunConfig`` is
the same declaration as a dataclass::

    cfg = RunConfig(method="ewc", tasks=3)           # fields with their defaults
    run(cfg.to_dict())

A setting with ``results=False`` (``out``, ``resume``, ``seeds``...) does not change what a run
computes: two configs that differ only there are the same run (``identity`` ignores them).
Cross-setting rules (a dataset's scenario, a strategy's own options) are checked by
``spiking.runner.run.normalize_config``.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

#: kinds of value: int, float, str, bool, ints (list of ints), seeds (distinct ints or None),
#: options (dict of strategy options), unlearn (list of [after_task, target])
KINDS = ("int", "float", "str", "bool", "ints", "seeds", "options", "unlearn")


@dataclass(frozen=True)
class Setting:
    name: str
    kind: str
    default: Any
    help: str
    choices: tuple | Callable[[], tuple] | None = None  # a callable for registries read at check time
    low: float | None = None       # smallest allowed number (ints, floats, list entries)
    optional: bool = False         # None allowed (meaning: see help)
    results: bool = True           # False: the value does not change what the run computes
    open_choices: bool = False     # a "module:factory" string is accepted besides the choices

    def allowed(self) -> tuple | None:
        return self.choices() if callable(self.choices) else self.choices


def _strategies():
    from .strategies import STRATEGIES  # noqa: PLC0415
    return tuple(sorted(STRATEGIES))


def _datasets():
    from .registry import DATASETS  # noqa: PLC0415
    return DATASETS.names()


def _models():
    from .registry import MODELS  # noqa: PLC0415
    return MODELS.names()


SETTINGS: dict[str, Setting] = {s.name: s for s in (
    Setting("method", "str", "finetune", "continual-learning strategy", choices=_strategies),
    Setting("dataset", "str", "pmnist", "task stream: a registered dataset, or module:factory of "
            "your own (factory(cfg, seed) -> TaskStream)", choices=_datasets, open_choices=True),
    Setting("scenario", "str", None, "split datasets: task/domain/class-incremental (pmnist is domain); "
            "none: class for split datasets", choices=("task", "domain", "class"), optional=True),
    Setting("tasks", "int", None, "number of tasks; none: the dataset's (10 for pmnist)", low=1,
            optional=True),
    Setting("epochs", "int", 1, "epochs per task", low=1),
    Setting("train_subset", "int", None, "training samples per task; none: all", low=1, optional=True),
    Setting("batch_size", "int", 64, "mini-batch size", low=1),
    Setting("lr", "float", 0.1, "learning rate", low=0),
    Setting("momentum", "float", 0.0, "SGD momentum", low=0),
    Setting("weight_decay", "float", 0.0, "L2 weight decay", low=0),
    Setting("optimizer", "str", "sgd", "optimizer", choices=("sgd", "adam")),
    Setting("seed", "int", 0, "seed of data order, permutations and init", low=0),
    Setting("seeds", "seeds", None, "several seeds, e.g. 1,2,3: one run each in out/seed_<s>, "
            "mean ± std in out/results.json", optional=True, results=False),
    Setting("device", "str", "cpu", "torch device (cpu, cuda, cuda:1); its type is part of the results"),
    Setting("eval_every", "int", 0, "continual evaluation every N iterations (0: only after each task)",
            low=0),
    Setting("eval_subset", "int", 1000, "test samples per seen task for continual evaluation", low=1),
    Setting("eval_batch_size", "int", None, "batch size of evaluation; none: the model's own size where "
            "it sizes its batch by memory (HLOPMLP on its fused CPU DSR path), else 256 on the CPU (a batch's "
            "[T, B, N] activations stay in cache: fastest in bench/eval_batch.py) and on a GPU as many samples "
            "as fit half the device memory available (probed once per model)", low=1,
            optional=True),
    Setting("test_subset", "int", None, "evaluate the accuracy matrix on a fixed n-sample test subset per "
            "task; none: the full test sets", low=1, optional=True),
    Setting("eval_unseen", "bool", True, "after each task also evaluate the tasks not yet trained (FWT; "
            "--no-eval-unseen halves the evaluation)"),
    Setting("threads", "int", None, "torch threads; none: torch's (the count changes float summation "
            "order, so it is part of the results)", low=1, optional=True),
    Setting("cuda_graph", "bool", False, "replay each learn event's training step as a CUDA graph (device "
            "cuda; methods whose step is graph-safe: finetune, ewc, gpm, hlop with dsr/bptt)"),
    Setting("model", "str", "spiking-mlp", "network: a registered model, or module:factory of your own "
            "(factory(cfg, stream) -> nn.Module); strategies with their own network (hlop) ignore it",
            choices=_models, open_choices=True),
    Setting("hidden", "ints", [800, 800], "hidden layer sizes, e.g. 800,800", low=1),
    Setting("T", "int", 6, "time steps of the spiking model", low=1),
    Setting("options", "options", {}, "strategy options {name: value} (CLI: the method's own flags)"),
    Setting("rehearse_steps", "int", 0, "rehearsal steps on old tasks after each task >= 2", low=0),
    Setting("rehearsal", "str", "uniform", "rehearsal schedule over old tasks",
            choices=("uniform", "exponential", "power")),
    Setting("rehearsal_rate", "float", 1.0, "rate of the exponential/power rehearsal schedule", low=0),
    Setting("unlearn", "unlearn", [], "AFTER:TASK: after task AFTER, a request to forget task TASK "
            "(0-based; repeatable)"),
    Setting("out", "str", None, "output folder; none: runs/<method>-<dataset>-<time> (CLI)",
            optional=True, results=False),
    Setting("resume", "bool", False, "continue the run held in out", results=False),
    Setting("progress", "bool", False, "progress bar", results=False),
    Setting("data_path", "str", None, "folder holding the dataset files; none: the usual places",
            optional=True, results=False),
    Setting("deterministic", "bool", True, "deterministic algorithms on CUDA"),
)}

#: settings that do not change the results: a different value does not make a different run
RUNTIME_KEYS = tuple(name for name, s in SETTINGS.items() if not s.results)


def default_config() -> dict:
    """Every setting at its default (fresh copies of list/dict defaults)."""
    return {name: copy.deepcopy(s.default) for name, s in SETTINGS.items()}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check(name: str, value):
    """``value`` checked against setting ``name`` (normalised: floats as float, lists as list).

    Raises ValueError naming the setting and the allowed values.
    """
    if name not in SETTINGS:
        raise ValueError(f"unknown setting {name!r}; known: {sorted(SETTINGS)}")
    s = SETTINGS[name]
    if value is None and s.optional:
        return None
    low = "" if s.low is None else f" >= {s.low:g}"
    if s.kind == "int":
        if not _is_int(value) or (s.low is not None and value < s.low):
            raise ValueError(f"{name} must be an int{low}{' or None' if s.optional else ''}, got {value!r}")
        return value
    if s.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or (s.low is not None and value < s.low):
            raise ValueError(f"{name} must be a finite number{low}, got {value!r}")
        return float(value)
    if s.kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")
        return value
    if s.kind == "str":
        allowed = s.allowed()
        if not isinstance(value, str) or (allowed is not None and value not in allowed and not (
                s.open_choices and ":" in value)):
            extra = " or module:factory" if s.open_choices else ""
            raise ValueError(f"{name} must be one of {list(allowed) if allowed else 'str'}{extra}, "
                             f"got {value!r}")
        return value
    if s.kind == "ints":
        if not (isinstance(value, (list, tuple)) and value and all(_is_int(h) and h >= s.low for h in value)):
            raise ValueError(f"{name} must be a non-empty list of ints{low}, got {value!r}")
        return list(value)
    if s.kind == "seeds":
        if not (isinstance(value, (list, tuple)) and value and all(_is_int(v) and v >= 0 for v in value)):
            raise ValueError(f"{name} must be a non-empty list of ints >= 0, got {value!r}")
        if len(set(value)) != len(value):
            raise ValueError(f"{name} must be distinct, got {value!r}")
        return list(value)
    if s.kind == "options":
        if not isinstance(value, dict):
            raise ValueError(f"{name} must be a dict of strategy options, got {value!r}")
        return dict(value)
    if s.kind == "unlearn":
        if not isinstance(value, (list, tuple)) or not all(
                isinstance(u, (list, tuple)) and len(u) == 2 for u in value):
            raise ValueError(f"{name} must be a list of [after_task, target] pairs, got {value!r}")
        return [list(u) for u in value]
    raise AssertionError(f"setting {name} has unknown kind {s.kind!r}")


def check_all(config: dict) -> dict:
    """Defaults filled in and every setting checked; unknown keys are refused."""
    unknown = set(config) - set(SETTINGS)
    if unknown:
        raise ValueError(f"unknown config key(s) {sorted(unknown)}; known: {sorted(SETTINGS)}")
    cfg = default_config()
    cfg.update(config)
    return {name: check(name, value) for name, value in cfg.items()}


def _bool_text(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def parse_text(name: str, text: str):
    """The value of setting ``name`` written as command-line text (``none`` for an optional None)."""
    s = SETTINGS[name]
    if s.optional and text.strip().lower() == "none":
        return None
    try:
        if s.kind == "int":
            value = int(text)
        elif s.kind == "float":
            value = float(text)
        elif s.kind == "bool":
            value = _bool_text(text)
        elif s.kind in ("ints", "seeds"):
            value = [int(v) for v in text.split(",") if v.strip()]
        elif s.kind == "unlearn":
            after, target = (int(v) for v in text.split(":"))
            value = [[after, {"task": target}]]
        elif s.kind == "str":
            value = text
        else:
            raise ValueError(f"{name} cannot be given as text")
    except ValueError as exc:
        raise ValueError(f"{name}: cannot read {text!r} as {s.kind} ({exc})") from None
    return check(name, value)


def _field(s: Setting):
    return dataclasses.field(default_factory=lambda: copy.deepcopy(s.default), metadata={"setting": s})


_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "ints": list, "seeds": list,
          "options": dict, "unlearn": list}


def _to_dict(self) -> dict:
    return check_all(dataclasses.asdict(self))


#: the settings as a dataclass: ``RunConfig(**overrides).to_dict()`` is a checked config
RunConfig = dataclasses.make_dataclass(
    "RunConfig",
    [(s.name, _TYPES[s.kind] | None if s.optional else _TYPES[s.kind], _field(s)) for s in SETTINGS.values()],
    namespace={"to_dict": _to_dict, "__doc__": "One run's settings (see ``SETTINGS`` for help)."})
RunConfig.__module__ = __name__
