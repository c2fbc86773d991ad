"""Trials on Ray: one task per trial with declared resources, retried when its worker dies.

A trial is one ``spiking.runner.run`` call writing into its own folder. A trial whose folder already
holds its finished run (``results.json`` with the same config) is not re-run and its files are not
touched; one whose folder holds a checkpoint resumes from it (the runner's resume). An exception in
a trial is returned as its ``error`` (the other trials go on); a worker that dies mid-trial (killed,
out of memory) makes Ray re-run the task (``max_retries``), which resumes from the checkpoint.
"""
from __future__ import annotations

import json
import os
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from .spec import SpecError, SweepSpec, Trial, same_run

INSTALL_HINT = 'spiking sweep needs Ray: pip install "spiking[sweep]"'


def import_ray():
    try:
        import ray  # noqa: PLC0415
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return ray


def attempts_path(out: Path) -> Path:
    return out.with_name(out.name + ".attempts.jsonl")


def execute_trial(config: dict, out: str) -> dict:
    """Run one trial (in a Ray worker): ``{status, ACC, BWT, wall_time_s, error}``."""
    from ..runner.run import run  # noqa: PLC0415
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    resume = (out / "config.json").exists()  # an earlier attempt claimed the folder: continue it
    with attempts_path(out).open("a") as f:  # who ran it: the pid lets a test kill the worker
        f.write(json.dumps({"pid": os.getpid(), "start": time.time(), "resume": resume}) + "\n")
    cfg = {**config, "out": str(out), "resume": resume, "progress": False}
    t0 = time.perf_counter()
    try:
        res = run(cfg)
    except Exception as exc:  # noqa: BLE001 — recorded as the trial's error
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(), "wall_time_s": time.perf_counter() - t0}
    return {"status": "done", "ACC": res["ACC"], "BWT": res["BWT"], "wall_time_s": time.perf_counter() - t0,
            "run_wall_time_s": res["wall_time_s"], "error": None}


def record(trial: Trial, folder: Path, outcome: dict) -> dict:
    """A trial's line in sweep.json."""
    attempts = attempts_path(folder / "trials" / trial.key)
    n = len(attempts.read_text().splitlines()) if attempts.exists() else 0
    return {"method": trial.method, "dataset": trial.dataset, "point": trial.point, "seed": trial.seed,
            "config": trial.config, "status": outcome["status"], "ACC": outcome.get("ACC"),
            "BWT": outcome.get("BWT"), "wall_time_s": outcome.get("wall_time_s"),
            "out": f"trials/{trial.key}", "error": outcome.get("error"), "attempts": n,
            **({"reused": True} if outcome.get("reused") else {}),
            **({"traceback": outcome["traceback"]} if outcome.get("traceback") else {})}


def finished(trial: Trial, out: Path) -> dict | None:
    """The outcome of a trial already finished in ``out`` (read only), else None."""
    done = out / "results.json"
    if not done.exists():
        return None
    res = json.loads(done.read_text())
    if not same_run(trial, res.get("config")):
        return None  # the runner will refuse the folder: recorded as the trial's error
    return {"status": "done", "ACC": res["ACC"], "BWT": res["BWT"], "wall_time_s": res["wall_time_s"],
            "reused": True}


@contextmanager
def ray_session(spec: SweepSpec):
    """Ray for the sweep: the running one, the cluster at ``spec.address``, or a local one (shut down)."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if spec.address:
        try:
            ray.init(address=spec.address, log_to_driver=False)
        except (ConnectionError, RuntimeError) as exc:
            raise ConnectionError(
                f"address: cannot join the Ray cluster at {spec.address} ({str(exc).splitlines()[0]}); "
                f"is `ray start --head` running there? With token authentication (Ray's default for "
                f"`ray start`) set RAY_AUTH_MODE=token and give this machine the head's "
                f"~/.ray/auth_token") from None
    else:
        ray.init(address="local", num_cpus=spec.cpus, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def check_resources(ray, spec: SweepSpec) -> None:
    """A trial that asks for more than the cluster has would wait forever: refuse it, naming it."""
    have = ray.cluster_resources()
    for name, key, need in (("threads", "CPU", spec.threads), ("gpus_per_trial", "GPU", spec.gpus_per_trial)):
        if need and have.get(key, 0) < need:
            raise SpecError(f"{name}: a trial needs {need:g} {key}(s), the Ray cluster has {have.get(key, 0):g}")


def run_trials(ray, spec: SweepSpec, trials: list[Trial], folder: Path,
               on_record: Callable[[dict], None]) -> list[dict]:
    """Run ``trials`` (finished ones reused) and return their records; ``on_record`` after each."""
    check_resources(ray, spec)
    records: dict[str, dict] = {}
    todo = []
    for t in trials:
        prev = finished(t, folder / "trials" / t.key)
        if prev is not None:
            records[t.key] = record(t, folder, prev)
            on_record(records[t.key])
        else:
            todo.append(t)
    task = ray.remote(num_cpus=spec.threads, num_gpus=spec.gpus_per_trial, max_retries=spec.max_retries,
                      **({"max_calls": 1} if spec.isolate else {}))(execute_trial)
    pending = {task.remote(t.config, str(folder / "trials" / t.key)): t for t in todo}
    bar = _progress(spec, len(trials), len(records))
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            t = pending.pop(ready[0])
            try:
                outcome = ray.get(ready[0])
            except ray.exceptions.RayError as exc:  # worker died more often than max_retries
                outcome = {"status": "failed", "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
            records[t.key] = record(t, folder, outcome)
            on_record(records[t.key])
            if bar is not None:
                bar.set_postfix_str(_label(records[t.key]))
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return [records[t.key] for t in trials]


def _label(rec: dict) -> str:
    if rec["status"] != "done":
        return f"{rec['method']} seed {rec['seed']}: failed"
    return f"{rec['method']} seed {rec['seed']}: ACC {100 * rec['ACC']:.2f}"


def _progress(spec: SweepSpec, total: int, done: int):
    if not spec.progress or total == done:
        return None
    from tqdm.auto import tqdm  # noqa: PLC0415
    return tqdm(total=total, initial=done, unit="trial", desc="sweep")
