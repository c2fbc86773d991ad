"""``run_sweep(spec)``: a grid sweep, or the reality-check protocol, with its outputs.

Plain sweep: every method × grid point × seed on ``settings['dataset']``.

Reality check (Cha & Cho 2024, ``docs/sweeps.md``), when ``tune_on`` / ``evaluate_on`` are given:

1. phase 1: the grid on ``tune_on`` with ``seeds``; per method the point with the best mean of
   ``select`` (ACC, BWT or ACC+BWT) is picked;
2. phase 2: each pick, unchanged, on ``evaluate_on`` with fresh ``eval_seeds``: the reported result;
3. contrast (``contrast=True``): the grid on ``evaluate_on`` with the same fresh seeds, and the point
   that tuning directly on the evaluation scenario would have picked, with its score. Phase 2's
   trials are among these, so they are run once.

Outputs in ``out``: ``spec.json``, ``sweep.json`` (``trials``, ``summary``; for the reality check also
``phase1``, ``selected``, ``phase2``, ``contrast``), ``summary.csv``, ``sweep.png``, and the runs in
``trials/<dataset>/<method>/<point>/seed_<s>/``. ``sweep.json`` is rewritten after every trial.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from ..runner import outputs
from ..runner.lock import LOCK_NAME, FolderLock
from . import report
from .engine import ray_session, record, run_trials
from .spec import SpecError, SweepSpec, expand, from_dict, validate


def prepare(spec: SweepSpec) -> tuple[Path, FolderLock]:
    """Refuse a folder holding another sweep unless resuming; lock it (one sweep per folder) and
    claim it with spec.json."""
    folder = Path(spec.out)
    marker = folder / "spec.json"
    if folder.exists() and any(p.name != LOCK_NAME for p in folder.iterdir()):
        if not marker.exists():
            raise SpecError(f"out: {folder} is not empty and holds no sweep; choose another out")
        if not spec.resume:
            raise SpecError(f"out: {folder} already holds a sweep; pass --resume (resume=True) to "
                            f"continue it, or choose another out")
    folder.mkdir(parents=True, exist_ok=True)
    lock = FolderLock(folder).acquire()  # a second sweep in this folder fails here, naming the holder
    outputs.write_json(marker, dataclasses.asdict(spec))
    return folder, lock


class _Writer:
    """Keeps sweep.json current while trials finish."""

    def __init__(self, folder: Path, spec: SweepSpec):
        self.path, self.spec, self.records = folder / "sweep.json", spec, {}
        self.started = time.perf_counter()

    def plan(self, trials: list, folder: Path) -> list:
        """List ``trials`` as pending (sweep.json keeps this order); returns them."""
        for t in trials:
            self.records.setdefault(f"trials/{t.key}", record(t, folder, {"status": "pending"}))
        return trials

    def add(self, rec: dict) -> None:
        self.records[rec["out"]] = rec
        self.write()

    def write(self, **extra) -> dict:
        trials = list(self.records.values())
        result = {"spec": dataclasses.asdict(self.spec), "trials": trials, "summary": report.summary(trials),
                  "wall_time_s": time.perf_counter() - self.started, "loadavg": os.getloadavg(), **extra}
        outputs.write_json(self.path, result)
        return result


def _best(entries: list[dict], select: str) -> dict[str, dict]:
    best: dict[str, dict] = {}
    for e in entries:
        if e["ACC"]["n"] and (e["method"] not in best or
                              report.score(e, select) > report.score(best[e["method"]], select)):
            best[e["method"]] = e
    return best


def run_sweep(spec: SweepSpec | dict) -> dict:
    """Run the sweep described by ``spec`` (a SweepSpec or its dict) and return sweep.json's content."""
    spec = validate(from_dict(spec) if isinstance(spec, dict) else spec)
    folder, lock = prepare(spec)
    try:
        writer = _Writer(folder, spec)
        with ray_session(spec) as ray:
            if spec.tune_on is None:
                dataset, seeds = spec.settings.get("dataset", "pmnist"), spec.seeds
                run_trials(ray, spec, writer.plan(expand(spec, dataset, seeds), folder), folder, writer.add)
                result = writer.write()
            else:
                result = _reality_check(ray, spec, folder, writer)
        report.write_csv(folder / "summary.csv", result["summary"])
        report.plot(folder / "sweep.png", result["summary"], "reality check" if spec.tune_on else "")
    finally:
        lock.release()
    return result


def _reality_check(ray, spec: SweepSpec, folder: Path, writer: _Writer) -> dict:
    seeds2 = spec.phase2_seeds()
    tune = expand(spec, spec.tune_on, spec.seeds)
    grid2 = expand(spec, spec.evaluate_on, seeds2) if spec.contrast else []
    rec1 = run_trials(ray, spec, writer.plan(tune + grid2, folder), folder, writer.add)[:len(tune)]
    summary1 = report.summary(rec1)
    picks = _best(summary1, spec.select)
    missing = [m for m in spec.methods if m not in picks]
    if missing:
        raise RuntimeError(f"phase 1: every trial of {missing} failed; see {folder / 'sweep.json'}")
    selected = {m: {"point": e["point"], "point_name": e["point_name"], "score": report.score(e, spec.select),
                    "ACC": e["ACC"], "BWT": e["BWT"]} for m, e in picks.items()}
    phase2_trials = expand(spec, spec.evaluate_on, seeds2, only={m: e["point"] for m, e in picks.items()})
    rec2 = run_trials(ray, spec, writer.plan(phase2_trials, folder), folder, writer.add)
    extra = {"select": spec.select, "selected": selected,
             "phase1": {"dataset": spec.tune_on, "seeds": spec.seeds, "summary": summary1},
             "phase2": {"dataset": spec.evaluate_on, "seeds": seeds2, "summary": report.summary(rec2)}}
    if spec.contrast:
        summary2 = [e for e in writer.write()["summary"] if e["dataset"] == spec.evaluate_on]
        picked = _best(summary2, spec.select)
        extra["contrast"] = {"dataset": spec.evaluate_on, "seeds": seeds2, "summary": summary2,
                             "picked": [picked[m] for m in spec.methods if m in picked]}
    return writer.write(**extra)
