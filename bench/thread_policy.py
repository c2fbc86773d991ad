"""Thread policy of the main job on a shared machine: which torch/OpenMP setting survives a busy core?

    python bench/thread_policy.py                       # 3 reps, writes bench/results/thread_policy.json
    python bench/thread_policy.py --reps 1 --tasks 2 --train-subset 1000 --json /tmp/tp.json   # smoke
    python bench/thread_policy.py --reps 1 --tasks 10 --train-subset 10000 --policies example-default \
        --json bench/results/main_job_time.json      # the full main job as users run it, idle and busy

Each trial runs ``examples/permuted_mnist.py`` (HLOP then finetune, the default preset cut to
``--tasks`` tasks of ``--train-subset`` images) in a fresh process under one policy:

    torch-default       torch's default thread count (= cores), OpenMP's default wait policy
    threads-1           --threads 1 (one intra-op thread)
    threads-N-passive   torch's default thread count with OMP_WAIT_POLICY=PASSIVE (idle threads sleep;
                        the example's default since this measurement)
    example-default     no setting at all: the example as a user runs it

and one condition: ``idle`` (nothing started by this script) or ``busy`` (a separate Python process
spinning ``while True: pass``, i.e. one core kept busy, started before the trial and killed after).
Policies and conditions are interleaved (rep → condition → policies in a rotated order) so that
background load from other users falls on all of them alike; the 1-minute load average is recorded
before every trial and at start and end. Reported per (policy, condition): median and every value of
the job's wall time (the sum of the example's per-method ``example_wall_s``, startup excluded) and
of the process wall time. An untimed warm-up run first builds the native kernels (set
``TORCH_EXTENSIONS_DIR`` to a private folder on a machine where other checkouts rebuild them).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "permuted_mnist.py"


def policies(cores: int) -> dict:
    """name → (extra environment, --threads value or None for torch's default)."""
    defaults = {"SPIKING_OMP_DEFAULTS": "1"}  # the example then leaves OpenMP's wait policy alone
    return {
        "torch-default": (defaults, None),
        "threads-1": (defaults, 1),
        f"threads-{cores}-passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, None),
        # OpenMP's default (spin, then sleep) with a short spin: idle threads sleep after about 1k,
        # 10k or 100k spins instead of libgomp's default 300k
        f"threads-{cores}-spin1k": ({**defaults, "GOMP_SPINCOUNT": "1000"}, None),
        f"threads-{cores}-spin10k": ({**defaults, "GOMP_SPINCOUNT": "10000"}, None),
        f"threads-{cores}-spin100k": ({**defaults, "GOMP_SPINCOUNT": "100000"}, None),
        "example-default": ({}, None),  # no setting: what `python examples/permuted_mnist.py` does
    }


def start_busy() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def one_trial(env_extra: dict, threads, args, folder: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "SPIKING_OMP_DEFAULTS", "GOMP_SPINCOUNT")}
    env.update(env_extra)
    cmd = [sys.executable, str(EXAMPLE), "--tasks", str(args.tasks), "--train-subset", str(args.train_subset),
           "--out", str(folder)]
    cmd += ["--threads", str(threads)] if threads else ["--threads", "0"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    summary = json.loads((folder / "summary.json").read_text())
    per_method = {m: r["example_wall_s"] for m, r in summary["results"].items()}
    return {"job_s": sum(per_method.values()), "process_s": wall, "per_method_s": per_method,
            "threads_used": summary.get("threads")}


def write_report(out: dict, names: list[str], conditions: list[str], path) -> dict:
    """Median per (policy, condition) over the trials so far, the fastest policy per condition; JSON."""
    table = {}
    for name in names:
        for cond in conditions:
            rows = [t for t in out["trials"] if t["policy"] == name and t["condition"] == cond]
            if rows:
                table[f"{name}/{cond}"] = {
                    "job_s_median": statistics.median(t["job_s"] for t in rows),
                    "job_s": [round(t["job_s"], 2) for t in rows],
                    "process_s_median": statistics.median(t["process_s"] for t in rows),
                    "load1_before": [t["load1_before"] for t in rows]}
    out["summary"] = table
    out["fastest"] = {c: min((n for n in names if f"{n}/{c}" in table), key=lambda n: table[f"{n}/{c}"]["job_s_median"])
                      for c in conditions if any(f"{n}/{c}" in table for n in names)}
    out["loadavg_end"] = os.getloadavg()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=1) + "\n")
    return table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--tasks", type=int, default=3)
    p.add_argument("--train-subset", type=int, default=3000)
    p.add_argument("--conditions", default="idle,busy")
    p.add_argument("--policies", default="torch-default,threads-1,threads-{cores}-passive",
                   help="comma-separated policy names; example-default = the example as a user runs it")
    p.add_argument("--json", default=str(ROOT / "bench" / "results" / "thread_policy.json"))
    args = p.parse_args(argv)
    cores = os.cpu_count() or 1
    names = [n.strip() for n in args.policies.format(cores=cores).split(",") if n.strip()]
    unknown = sorted(set(names) - set(policies(cores)))
    if unknown:
        p.error(f"--policies: unknown {unknown}; known: {sorted(policies(cores))}")
    pols = {n: policies(cores)[n] for n in names}
    conditions = [c for c in args.conditions.split(",") if c]
    import torch  # noqa: PLC0415
    out = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]),
           "workload": f"examples/permuted_mnist.py --tasks {args.tasks} --train-subset {args.train_subset} "
                       "(hlop then finetune, default preset otherwise)",
           "machine": {"cores": cores, "platform": platform.platform(), "processor": platform.processor() or None},
           "versions": {"python": platform.python_version(), "torch": torch.__version__,
                        "parallel": torch.__config__.parallel_info().splitlines()[-1].strip()},
           "policies": {n: {"env": e, "threads": t if t else "torch default"} for n, (e, t) in pols.items()},
           "loadavg_start": os.getloadavg(), "reps": args.reps, "trials": []}
    trials = out["trials"]
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up, not timed: builds (or loads) the native kernels so that no trial pays for a compile
        one_trial({}, 1, argparse.Namespace(tasks=2, train_subset=64), Path(tmp) / "warmup")
        for rep in range(args.reps):
            for cond in conditions:
                order = names[rep % len(names):] + names[:rep % len(names)]
                busy = start_busy() if cond == "busy" else None
                try:
                    time.sleep(1.0 if busy else 0.0)
                    for name in order:
                        env_extra, threads = pols[name]
                        load = os.getloadavg()[0]
                        r = one_trial(env_extra, threads, args, Path(tmp) / f"{rep}-{cond}-{name}")
                        trials.append({"rep": rep, "condition": cond, "policy": name, "load1_before": load, **r})
                        print(f"rep {rep} {cond:<5} {name:<20} job {r['job_s']:6.1f} s  process "
                              f"{r['process_s']:6.1f} s  load {load:.2f}", flush=True)
                        write_report(out, names, conditions, args.json)  # an interrupted run keeps its trials
                finally:
                    if busy is not None:
                        busy.kill()
                        busy.wait()
    table = write_report(out, names, conditions, args.json)
    for key, v in table.items():
        print(f"{key:<28} median job {v['job_s_median']:6.1f} s   {v['job_s']}")
    print("fastest:", out["fastest"], "→", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
