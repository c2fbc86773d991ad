"""A sweep specification: methods × grid points × seeds (× datasets for the reality check).

    spec = SweepSpec(out="sweeps/demo", methods=["finetune", "hlop"], seeds=[1, 2, 3],
                     grid={"lr": [0.05, 0.1], "hlop.hebb_lr": [0.01, 0.02]},
                     settings={"dataset": "pmnist", "tasks": 10})

``settings`` and ``grid`` keys are run settings (``spiking.runner.config.SETTINGS``) or
``METHOD.OPTION`` (a strategy option, applied to that method only). A grid with one value is a fixed
setting. Grid points are the product of the entries that apply to a method. The same spec reads
from TOML, YAML or JSON (:func:`load_spec`) with these field names. Everything is checked, and every
trial's run config built and checked as the runner checks it, by :func:`validate` before any trial starts.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..runner.config import SETTINGS, check, parse_text
from ..runner.run import identity
from ..runner.run import validate as validate_run
from ..runner.strategies import STRATEGIES

#: run settings a sweep sets itself (per trial), so a spec may not
SWEEP_OWNED = ("method", "seed", "seeds", "out", "resume", "progress", "options")
SELECT = ("ACC", "BWT", "ACC+BWT")


class SpecError(ValueError):
    """A bad sweep spec; the message names the entry."""


@dataclass
class SweepSpec:
    out: str
    methods: list[str] = field(default_factory=lambda: ["finetune"])
    seeds: list[int] = field(default_factory=lambda: [0])
    grid: dict[str, list] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    cpus: int | None = None          # local Ray: CPUs it may use (default: all)
    gpus_per_trial: float = 0.0
    address: str | None = None       # join this Ray cluster instead of starting a local one
    resume: bool = False
    max_retries: int = 3             # re-runs of a trial whose worker died (not of a failing trial)
    tune_on: str | None = None       # reality check: phase 1 dataset ...
    evaluate_on: str | None = None   # ... phase 2 dataset
    select: str = "ACC"
    eval_seeds: list[int] | None = None  # phase 2 seeds (default: after the largest tuning seed)
    contrast: bool = True            # also run the grid on evaluate_on (what tuning on test would pick)
    isolate: bool = False            # each trial in a fresh worker process (own peak RSS; slower start)
    progress: bool = True

    @property
    def threads(self) -> int:
        """torch threads (= CPUs reserved) per trial: the ``threads`` setting, default 1."""
        return self.settings.get("threads") or 1

    def phase2_seeds(self) -> list[int]:
        if self.eval_seeds is not None:
            return list(self.eval_seeds)
        first = max(self.seeds) + 1
        return list(range(first, first + len(self.seeds)))


@dataclass(frozen=True)
class Trial:
    """One runner call: ``config`` is normalised; ``key`` its folder under ``out/trials``."""
    method: str
    dataset: str
    point: dict
    seed: int
    config: dict

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.method}/{point_name(self.point)}/seed_{self.seed}"


def _fmt(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def point_name(point: dict) -> str:
    """``lr=0.05_hlop.hebb_lr=0.01`` (``default`` for no grid entry)."""
    return "_".join(f"{k}={_fmt(v)}" for k, v in point.items()) or "default"


# --------------------------------------------------------------------------- reading


def load_spec(path) -> dict:
    """The spec mapping in a .toml, .yaml/.yml or .json file."""
    path = Path(path)
    text = path.read_text()
    if path.suffix == ".toml":
        import tomllib  # noqa: PLC0415
        return tomllib.loads(text)
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml  # noqa: PLC0415
        except ImportError:
            raise SpecError(f"{path}: reading YAML needs PyYAML (pip install pyyaml)") from None
        return yaml.safe_load(text) or {}
    if path.suffix == ".json":
        return json.loads(text)
    raise SpecError(f"spec {path}: unknown format {path.suffix!r} (use .toml, .yaml or .json)")


def from_dict(d: dict) -> SweepSpec:
    names = {f.name for f in dataclasses.fields(SweepSpec)}
    unknown = set(d) - names
    if unknown:
        raise SpecError(f"spec: unknown field(s) {sorted(unknown)}; known: {sorted(names)}")
    if "out" not in d or not d["out"]:
        raise SpecError("spec: out (the sweep's folder) is required")
    return SweepSpec(**d)


def grid_values(name: str, text: str) -> list:
    """``--grid NAME=V1,V2`` values as typed values (list-valued settings: points split by ``;``)."""
    sep = ";" if name in SETTINGS and SETTINGS[name].kind in ("ints", "seeds") else ","
    parts = [t for t in text.split(sep) if t.strip()]
    if name in SETTINGS:
        try:
            return [parse_text(name, t) for t in parts]
        except ValueError as exc:
            raise SpecError(f"grid {name}: {exc}") from None
    return parts  # METHOD.OPTION: typed by the strategy when checked


# --------------------------------------------------------------------------- checking


def _check_value(where: str, key: str, value, methods) -> Any:
    """One settings/grid value checked against its declaration; errors name ``where key``."""
    method, dot, option = key.partition(".")
    try:
        if not dot:
            if key in SWEEP_OWNED:
                raise SpecError(f"{key!r} is set by the sweep itself (use methods / seeds / out / "
                                f"METHOD.OPTION)")
            if key not in SETTINGS:
                raise SpecError(f"unknown setting {key!r}")
            return check(key, value)
        if method not in methods:
            raise SpecError(f"method {method!r} is not among methods {list(methods)}")
        declared = STRATEGIES[method].options
        if option not in declared:
            raise SpecError(f"{method} has no option {option!r}; known: {sorted(declared)}")
        typ = declared[option][0]
        if isinstance(value, str) and typ is not str:
            value = parse_option_text(typ, value)
        return getattr(STRATEGIES[method](**{option: value}), option)
    except (ValueError, TypeError) as exc:
        raise SpecError(f"{where} {key}: {exc}") from None


def parse_option_text(typ, text: str):
    if typ is bool:
        return parse_text("eval_unseen", text)  # the same true/false reading as bool settings
    return typ(text)


def validate(spec: SweepSpec) -> SweepSpec:
    """Every entry checked (errors name it); values typed. Returns the same spec."""
    if not isinstance(spec.methods, (list, tuple)) or not spec.methods:
        raise SpecError("methods: give at least one method")
    for m in spec.methods:
        if m not in STRATEGIES:
            raise SpecError(f"methods: unknown method {m!r}; known: {sorted(STRATEGIES)}")
    for name in ("seeds", "eval_seeds"):
        value = getattr(spec, name)
        if value is not None or name == "seeds":
            try:
                setattr(spec, name, check("seeds", value))
            except ValueError as exc:
                raise SpecError(f"{name}: {exc}") from None
    spec.settings = {k: _check_value("settings", k, v, spec.methods) for k, v in spec.settings.items()}
    grid = {}
    for key, values in spec.grid.items():
        if isinstance(values, str):
            values = grid_values(key, values)
        if not isinstance(values, (list, tuple)) or not values:
            raise SpecError(f"grid {key}: empty grid (give at least one value)")
        if key in spec.settings:
            raise SpecError(f"grid {key}: also given as a fixed setting")
        values = [_check_value("grid", key, v, spec.methods) for v in values]
        if len(values) == 1:
            spec.settings[key] = values[0]  # one value: a fixed setting, not part of point names
        else:
            grid[key] = values
    spec.grid = grid
    if (spec.tune_on is None) != (spec.evaluate_on is None):
        raise SpecError("tune_on / evaluate_on: give both (the reality check) or neither")
    if spec.tune_on is not None:
        if "dataset" in spec.settings or "dataset" in spec.grid:
            raise SpecError("dataset: the reality check takes its datasets from tune_on / evaluate_on")
        for name in ("tune_on", "evaluate_on"):
            try:
                check("dataset", getattr(spec, name))
            except ValueError as exc:
                raise SpecError(f"{name}: {exc}") from None
        if spec.tune_on == spec.evaluate_on:
            raise SpecError("evaluate_on must differ from tune_on")
        if set(spec.phase2_seeds()) & set(spec.seeds):
            raise SpecError(f"eval_seeds must differ from seeds (fresh seeds in phase 2), got "
                            f"{spec.phase2_seeds()} and {spec.seeds}")
    if spec.select not in SELECT:
        raise SpecError(f"select must be one of {SELECT}, got {spec.select!r}")
    for name, low in (("cpus", 1), ("max_retries", 0)):
        v = getattr(spec, name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < low):
            raise SpecError(f"{name} must be an int >= {low}, got {v!r}")
    for dataset, seeds in datasets_and_seeds(spec):
        for trial in expand(spec, dataset, seeds):
            pass  # expand checks every config: a bad combination fails here, naming the trial
    return spec


def datasets_and_seeds(spec: SweepSpec) -> list[tuple[str, list[int]]]:
    if spec.tune_on is None:
        return [(spec.settings.get("dataset", SETTINGS["dataset"].default), spec.seeds)]
    return [(spec.tune_on, spec.seeds), (spec.evaluate_on, spec.phase2_seeds())]


# --------------------------------------------------------------------------- trials


def points(spec: SweepSpec, method: str) -> list[dict]:
    """The grid points of ``method``: the product of the entries that apply to it."""
    keys = [k for k in spec.grid if "." not in k or k.split(".", 1)[0] == method]
    return [dict(zip(keys, values)) for values in itertools.product(*(spec.grid[k] for k in keys))]


def trial_config(spec: SweepSpec, method: str, dataset: str, point: dict, seed: int) -> dict:
    plain = {**spec.settings, **point}
    options = {k.split(".", 1)[1]: v for k, v in plain.items() if k.startswith(method + ".")}
    cfg = {k: v for k, v in plain.items() if "." not in k}
    cfg.update(method=method, dataset=dataset, seed=seed, threads=spec.threads, options=options)
    return cfg


def expand(spec: SweepSpec, dataset: str, seeds, only: dict[str, dict] | None = None) -> list[Trial]:
    """Trials of every method × point × seed on ``dataset`` (``only``: one given point per method)."""
    trials = []
    for method in spec.methods:
        for point in ([only[method]] if only is not None else points(spec, method)):
            for seed in seeds:
                cfg = trial_config(spec, method, dataset, point, seed)
                trial = Trial(method, dataset, point, seed, cfg)
                try:
                    validate_run(cfg)  # everything the runner checks before claiming a folder
                except (ValueError, TypeError) as exc:
                    raise SpecError(f"trial {trial.key}: {exc}") from None
                trials.append(trial)
    return trials


def same_run(trial: Trial, stored_config: dict) -> bool:
    """Whether a finished run's recorded config is this trial's."""
    return identity(validate_run(trial.config)) == stored_config
