"""A/B throughput of the default LIF between two checkouts of spiking (e.g. main vs a branch).

A code change to the fused LIF must not make it slower. This script times ``LIF(tau=2.0,
v_threshold=1.0, v_reset=0.0)`` with every other argument at its default (what a user calls) in
checkout A and in checkout B, alternating: each repetition runs one fresh subprocess per checkout
(order A, B on even repetitions and B, A on odd ones, so drift of a shared machine hits both
alike), each subprocess imports ``spiking`` from its checkout, warms up, and reports the median of
``--inner`` timed calls per workload. Reported: per checkout and workload the median over
repetitions (and min-max), and the ratio B/A of neuron-updates/s (> 1: B faster) together with
the per-repetition ratios; the same for the CPU time of the process (``time.process_time``: all
threads' time on a core, which a busy shared machine disturbs less than the wall time; at one
thread it is the kernel's own time). JSON (command, machine, versions, load average at start and
end) goes to ``--out``.

Workloads (float32, hard reset, sigmoid surrogate, NaN/inf check on):
  lif_fwd        x [100, 64, 4096] under no_grad (as in bench/lif_throughput.py)
  lif_fwd_bwd    the same x, forward + backward with an upstream gradient
  lif_fwd_small  x [25, 128, 1000] under no_grad (the LIF of bench/lif_throughput.py's net; in cache)
  lif_fwd_bwd_small  the same, forward + backward

Usage: python bench/lif_ab.py --a /path/to/main --b . [--reps 7] [--threads 1,2] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = {"lif_fwd": ((100, 64, 4096), False), "lif_fwd_bwd": ((100, 64, 4096), True),
             "lif_fwd_small": ((25, 128, 1000), False), "lif_fwd_bwd_small": ((25, 128, 1000), True)}

CHILD = r"""
import json, statistics, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
from spiking import LIF
import spiking
res = {"spiking_file": spiking.__file__}
for name, (shape, bwd, inner) in json.loads(sys.argv[2]).items():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g) * 0.8 + 0.6
    lif = LIF(tau=2.0, v_threshold=1.0, v_reset=0.0)
    if bwd:
        x.requires_grad_(True)
        up = torch.randn(*shape, generator=g)
        def call():
            x.grad = None
            lif(x).backward(up)
    else:
        def call():
            with torch.no_grad():
                lif(x)
    for _ in range(2):
        call()
    ts, cs = [], []
    for _ in range(inner):
        c0 = time.process_time(); t0 = time.perf_counter(); call()
        ts.append(time.perf_counter() - t0); cs.append(time.process_time() - c0)
    res[name] = statistics.median(ts)
    res[name + ":cpu"] = statistics.median(cs)
print("RESULT " + json.dumps(res))
"""


def run_child(checkout: Path, threads: int, workloads: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    out = subprocess.run([sys.executable, "-c", CHILD, str(threads), json.dumps(workloads)], env=env, cwd=checkout,
                         capture_output=True, text=True, check=True).stdout
    line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="checkout A (baseline, e.g. the main branch)")
    ap.add_argument("--b", default=str(ROOT), help="checkout B (default: this one)")
    ap.add_argument("--reps", type=int, default=7, help="alternating subprocess repetitions per checkout")
    ap.add_argument("--inner", type=int, default=7, help="timed calls per workload inside one subprocess")
    ap.add_argument("--threads", default="1,2", help="comma list of torch thread counts")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list: " + ",".join(WORKLOADS))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "lif_ab_cpu.json"))
    args = ap.parse_args()
    a, b = Path(args.a).resolve(), Path(args.b).resolve()
    names = [w for w in args.workloads.split(",") if w]
    for w in names:
        if w not in WORKLOADS:
            raise SystemExit(f"--workloads: unknown workload {w!r} (known: {', '.join(WORKLOADS)})")
    workloads = {w: (*WORKLOADS[w], args.inner) for w in names}
    load_start = os.getloadavg()
    t_start = time.time()
    results = {}
    for threads in [int(t) for t in args.threads.split(",")]:
        runs = {"A": [], "B": []}
        for rep in range(args.reps):
            order = ("A", "B") if rep % 2 == 0 else ("B", "A")
            for which in order:
                runs[which].append(run_child(a if which == "A" else b, threads, workloads))
            print(f"threads {threads} rep {rep + 1}/{args.reps}: "
                  + ", ".join(f"{w} A {runs['A'][-1][w] * 1e3:.1f} ms B {runs['B'][-1][w] * 1e3:.1f} ms" for w in names),
                  flush=True)
        per = {}
        for w in names:
            ta, tb = [r[w] for r in runs["A"]], [r[w] for r in runs["B"]]
            ratios = [x / y for x, y in zip(ta, tb)]
            shape = WORKLOADS[w][0]
            updates = shape[0] * shape[1] * shape[2]
            ca, cb = [r[w + ":cpu"] for r in runs["A"]], [r[w + ":cpu"] for r in runs["B"]]
            per[w] = {"shape": list(shape), "backward": WORKLOADS[w][1],
                      "A_cpu_median_s": statistics.median(ca), "B_cpu_median_s": statistics.median(cb),
                      "cpu_ratio_B_over_A": statistics.median(ca) / statistics.median(cb),
                      "per_rep_cpu_ratio_B_over_A": [x / y for x, y in zip(ca, cb)],
                      "A_median_s": statistics.median(ta), "A_min_max_s": [min(ta), max(ta)],
                      "B_median_s": statistics.median(tb), "B_min_max_s": [min(tb), max(tb)],
                      "A_updates_per_s": updates / statistics.median(ta),
                      "B_updates_per_s": updates / statistics.median(tb),
                      "speed_ratio_B_over_A": statistics.median(ta) / statistics.median(tb),
                      "per_rep_ratio_B_over_A": ratios}
            print(f"threads {threads} {w}: A {per[w]['A_median_s'] * 1e3:.2f} ms, B {per[w]['B_median_s'] * 1e3:.2f} ms, "
                  f"B/A speed {per[w]['speed_ratio_B_over_A']:.3f} (per rep {min(ratios):.3f}-{max(ratios):.3f}); "
                  f"CPU time B/A speed {per[w]['cpu_ratio_B_over_A']:.3f}",
                  flush=True)
        results[f"threads_{threads}"] = per
    import torch

    doc = {"command": " ".join([sys.executable] + sys.argv), "checkout_A": str(a), "checkout_B": str(b),
           "git_A": _git(a), "git_B": _git(b), "machine": platform.processor() or platform.machine(),
           "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
           "reps": args.reps, "inner": args.inner, "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
           "wall_s": time.time() - t_start, "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


def _git(path: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:  # not a git checkout
        return ""


if __name__ == "__main__":
    main()
