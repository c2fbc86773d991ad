"""Sweeps on a local Ray (one module-scoped session): outputs, failing trials, resume, a worker killed
mid-trial, the reality check. Trials are tiny synthetic streams (tests/sweep_streams.py)."""
import csv
import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from spiking.runner import run  # noqa: E402
from spiking.sweep import run_sweep  # noqa: E402
from spiking.sweep.report import table  # noqa: E402

TINY = {"model": "mlp", "hidden": [16], "batch_size": 16, "eval_subset": 64}


@pytest.fixture(scope="module")
def local_ray():
    tests = str(Path(__file__).resolve().parent)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (tests, old) if p)  # workers import sweep_streams
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = old


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_sweep_outputs_failures_and_resume(local_ray, tmp_path):
    spec = {"out": str(tmp_path / "s"), "methods": ["finetune", "ewc"], "seeds": [1, 13],
            "grid": {"lr": [0.05, 0.2]}, "settings": {**TINY, "dataset": "sweep_streams:flaky"},
            "progress": False}
    res = run_sweep(spec)
    trials = res["trials"]
    assert len(trials) == 8
    for t in trials:
        assert set(t) >= {"method", "config", "seed", "status", "ACC", "BWT", "wall_time_s", "out", "error"}
        if t["seed"] == 13:  # the failing trials are recorded with their error; the others went on
            assert t["status"] == "failed" and "no data for seed 13" in t["error"] and t["ACC"] is None
            assert "sweep_streams.py" in t["traceback"]  # where it failed, for debugging
        else:
            assert t["status"] == "done" and t["error"] is None and t["wall_time_s"] > 0
    # each trial is exactly the runner call its config describes
    one = next(t for t in trials if t["method"] == "ewc" and t["seed"] == 1 and t["config"]["lr"] == 0.2)
    direct = run(one["config"])
    assert one["ACC"] == direct["ACC"] and one["BWT"] == direct["BWT"]
    saved = json.loads((tmp_path / "s" / one["out"] / "results.json").read_text())
    assert saved["acc_matrix"] == direct["acc_matrix"]
    assert json.loads((tmp_path / "s" / "sweep.json").read_text())["trials"] == json.loads(json.dumps(trials))
    summary = {(e["method"], e["point"]["lr"]): e for e in res["summary"]}
    assert len(summary) == 4 and all(e["ACC"]["n"] == 1 and e["failed"] == 1 for e in summary.values())
    assert summary[("ewc", 0.2)]["ACC"]["mean"] == one["ACC"]
    rows = list(csv.DictReader((tmp_path / "s" / "summary.csv").open()))
    assert len(rows) == 4 and float(rows[0]["ACC_mean"]) == pytest.approx(res["summary"][0]["ACC"]["mean"])
    assert (tmp_path / "s" / "sweep.png").stat().st_size > 0
    assert "ewc" in table(res) and "lr=0.2" in table(res)

    # the same folder again: refused without resume, nothing touched
    before = _digest(tmp_path / "s" / "trials")
    with pytest.raises(ValueError, match="resume"):
        run_sweep(spec)
    # resume: finished trials are reused with their files untouched, failed ones run again
    again = run_sweep({**spec, "resume": True})
    after = _digest(tmp_path / "s" / "trials")
    finished = [k for k in before if "seed_1/" in k]
    assert finished and all(after[k] == before[k] for k in finished)
    assert [t["ACC"] for t in again["trials"]] == [t["ACC"] for t in trials]
    assert all(t.get("reused") for t in again["trials"] if t["seed"] == 1)
    assert all(t["attempts"] == 2 for t in again["trials"] if t["seed"] == 13)


def test_worker_killed_mid_trial_is_retried_and_equals_uninterrupted(local_ray, tmp_path):
    settings = {**TINY, "dataset": "sweep_streams:synthetic", "train_subset": 3000, "batch_size": 4}
    spec = {"out": str(tmp_path / "s"), "methods": ["finetune"], "seeds": [5], "settings": settings,
            "progress": False}
    result = {}
    sweep = threading.Thread(target=lambda: result.update(run_sweep(spec)))
    sweep.start()
    trial = tmp_path / "s" / "trials" / "sweep_streams:synthetic" / "finetune" / "default" / "seed_5"
    attempts = trial.with_name("seed_5.attempts.jsonl")
    deadline = time.time() + 120
    while not (trial / "checkpoint.pt").exists():  # written after the first task
        assert sweep.is_alive() and time.time() < deadline, "no checkpoint within 120 s"
        time.sleep(0.01)
    pid = json.loads(attempts.read_text().splitlines()[0])["pid"]
    os.kill(pid, signal.SIGKILL)  # the Ray worker process running the trial
    sweep.join(timeout=300)
    assert not sweep.is_alive()
    t, = result["trials"]
    assert t["status"] == "done" and t["attempts"] == 2
    first, second = (json.loads(line) for line in attempts.read_text().splitlines())
    assert first["pid"] != second["pid"] and second["resume"]  # the retry continued the checkpoint
    clean = run({**settings, "seed": 5, "threads": 1})
    saved = json.loads((trial / "results.json").read_text())
    assert saved["acc_matrix"] == clean["acc_matrix"] and t["ACC"] == clean["ACC"]


def test_reality_check_phases(local_ray, tmp_path):
    spec = {"out": str(tmp_path / "rc"), "methods": ["finetune"], "seeds": [1],
            "grid": {"lr": [0.005, 0.3]}, "settings": TINY, "tune_on": "sweep_streams:synthetic",
            "evaluate_on": "sweep_streams:synthetic_b", "progress": False}
    res = run_sweep(spec)
    p1 = {e["point"]["lr"]: e["ACC"]["mean"] for e in res["phase1"]["summary"]}
    best = max(p1, key=p1.get)
    assert res["selected"]["finetune"]["point"] == {"lr": best}
    assert res["phase2"]["dataset"] == "sweep_streams:synthetic_b" and res["phase2"]["seeds"] == [2]
    p2, = res["phase2"]["summary"]
    assert p2["point"] == {"lr": best} and p2["seeds"] == [2]
    on_eval = {e["point"]["lr"]: e["ACC"]["mean"] for e in res["contrast"]["summary"]}
    assert p2["ACC"]["mean"] == on_eval[best]  # the same trial, run once
    assert res["contrast"]["picked"][0]["ACC"]["mean"] == max(on_eval.values())
    assert len(res["trials"]) == 4  # 2 points x (tuning, evaluation); phase 2 reused
    assert table(res).startswith("phase 2 (reported)")


def test_cli_sweep_prints_the_table_and_exits_1_when_a_trial_failed(local_ray, tmp_path, capsys):
    from spiking.cli import main
    argv = ["sweep", "--methods", "finetune", "--seeds", "1,13", "--stream", "sweep_streams:flaky",
            "--model", "mlp", "--hidden", "16", "--batch-size", "16", "--no-progress", "--out", str(tmp_path / "c")]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "ACC % (mean ± std)" in out and "2 trials (1 failed)" in out
    saved = json.loads((tmp_path / "c" / "sweep.json").read_text())
    assert [t["config"]["hidden"] for t in saved["trials"]] == [[16], [16]]


@pytest.mark.parametrize("change, needle", [({"settings": {**TINY, "threads": 3}}, "threads: a trial needs 3 CPU"),
                                            ({"gpus_per_trial": 1}, "gpus_per_trial: a trial needs 1 GPU")])
def test_a_trial_larger_than_the_cluster_is_refused(local_ray, tmp_path, change, needle):
    spec = {"out": str(tmp_path / "s"), "methods": ["finetune"], "seeds": [1], "progress": False,
            "settings": {**TINY, "dataset": "sweep_streams:synthetic"}, **change}
    spec["settings"]["dataset"] = "sweep_streams:synthetic"
    with pytest.raises(ValueError, match=needle):
        run_sweep(spec)
    assert not list((tmp_path / "s").glob("trials/*"))
