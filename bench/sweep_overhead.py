"""Benchmark: a sweep of N one-thread trials on Ray vs the same trials one after another.

    python bench/sweep_overhead.py                                  # 4 trials, 2 CPUs, 3 repeats
    python bench/sweep_overhead.py --trials 4 --cpus 2 --tasks 2 --train-subset 500 --repeats 1   # smoke

Each repeat runs the N trials (finetune on permuted MNIST, seeds 1..N, ``threads=1``) first one
after another in this process (``spiking.runner.run``), then as a sweep (``spiking.sweep.run_sweep``)
on a local Ray with ``--cpus`` CPUs, started before the timer (its start time is reported apart).

* speedup = sequential wall / sweep wall (goal ≥ 1.8 for 4 trials on 2 CPUs);
* Ray overhead per trial = (sweep wall × concurrency − Σ in-worker trial time) / N, concurrency =
  min(cpus, N): what the sweep costs beyond the trials' own run() calls (scheduling, worker start,
  imports, result transfer), goal ≤ 1 s;
* slowdown of a trial while another runs next to it = mean in-worker time / mean sequential time.

Writes JSON (command, machine, versions, load average at start and end, per-repeat figures, medians)
to ``--out`` (default bench/results/sweep_overhead.json).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--tasks", type=int, default=3)
    p.add_argument("--train-subset", type=int, default=15000)
    p.add_argument("--hidden", default="400,400")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "sweep_overhead.json"))
    return p.parse_args(argv)


def settings(args) -> dict:
    return {"dataset": "pmnist", "tasks": args.tasks, "train_subset": args.train_subset,
            "hidden": [int(h) for h in args.hidden.split(",")], "test_subset": 1000, "eval_unseen": False,
            "threads": 1}


def sequential(args) -> tuple[float, list[float]]:
    from spiking.runner import run  # noqa: PLC0415
    times = []
    t0 = time.perf_counter()
    for seed in range(1, args.trials + 1):
        t = time.perf_counter()
        run({**settings(args), "seed": seed})
        times.append(time.perf_counter() - t)
    return time.perf_counter() - t0, times


def swept(args, folder: Path) -> tuple[float, list[float]]:
    from spiking.sweep import run_sweep  # noqa: PLC0415
    t0 = time.perf_counter()
    res = run_sweep({"out": str(folder), "methods": ["finetune"], "seeds": list(range(1, args.trials + 1)),
                     "settings": settings(args), "progress": False})
    wall = time.perf_counter() - t0
    bad = [t["error"] for t in res["trials"] if t["status"] != "done"]
    if bad:
        raise RuntimeError(f"trials failed: {bad}")
    return wall, [t["wall_time_s"] for t in res["trials"]]


def main(argv=None) -> int:
    args = parse_args(argv)
    import ray  # noqa: PLC0415
    import torch  # noqa: PLC0415

    import spiking  # noqa: PLC0415
    load_start = os.getloadavg()
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    t = time.perf_counter()
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t
    runs = []
    try:
        for r in range(args.repeats):
            seq_wall, seq_times = sequential(args)
            with tempfile.TemporaryDirectory() as tmp:
                sweep_wall, trial_times = swept(args, Path(tmp) / "sweep")
            conc = min(args.cpus, args.trials)
            runs.append({"sequential_wall_s": seq_wall, "sequential_trial_s": seq_times,
                         "sweep_wall_s": sweep_wall, "sweep_trial_s": trial_times,
                         "speedup": seq_wall / sweep_wall,
                         "overhead_per_trial_s": (sweep_wall * conc - sum(trial_times)) / args.trials,
                         "trial_slowdown_in_sweep": statistics.fmean(trial_times) / statistics.fmean(seq_times)})
            print(f"repeat {r + 1}: sequential {seq_wall:.1f} s, sweep {sweep_wall:.1f} s, "
                  f"speedup {runs[-1]['speedup']:.2f}x, overhead/trial {runs[-1]['overhead_per_trial_s']:.2f} s",
                  flush=True)
    finally:
        ray.shutdown()
    med = {k: statistics.median(r[k] for r in runs) for k in
           ("sequential_wall_s", "sweep_wall_s", "speedup", "overhead_per_trial_s", "trial_slowdown_in_sweep")}
    out = {"command": " ".join([sys.executable, *sys.argv]), "config": {**vars(args), **settings(args)},
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
           "versions": {"spiking": spiking.__version__, "torch": torch.__version__, "ray": ray.__version__},
           "loadavg_start": load_start, "loadavg_end": os.getloadavg(), "ray_start_s": ray_start,
           "median": med, "goals": {"speedup": ">= 1.8", "overhead_per_trial_s": "<= 1.0"}, "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"median speedup {med['speedup']:.2f}x, overhead per trial {med['overhead_per_trial_s']:.2f} s, "
          f"Ray start {ray_start:.1f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
