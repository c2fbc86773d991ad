"""EWC's default λ, chosen by measurement on the runner's default network.

    python bench/ewc_lambda.py                  # λ ∈ {10, 30, 100, 300, 1000}, seeds 1, 2 → bench/results/ewc_lambda.json
    python bench/ewc_lambda.py --lambdas 10,100 --seeds 1 --tasks 2 --train-subset 256 --json /tmp/e.json  # smoke
    python bench/ewc_lambda.py --merge a.json b.json --json c.json   # one summary over sweeps run separately

Every run is ``spiking.runner.run`` with the runner's defaults (SpikingMLP 784-800-800-10, T = 6,
SGD lr 0.1, batch 64, 1 epoch per task, online EWC with γ = 1 and 1000 per-sample Fisher samples)
on permuted MNIST with 10 tasks, reduced to ``--train-subset`` training images per task and a fixed
``--test-subset`` test images per task (seen tasks only; ACC and BWT need no more). Runs are
interleaved (seed → λ) in one process with ``--threads`` torch threads; the JSON is rewritten after
every run, so an interrupted sweep keeps what it measured. The best λ is the one with the highest
mean ACC over seeds.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spiking.runner import run  # noqa: E402
from spiking.runner.outputs import versions, write_json  # noqa: E402


def summarize(rows: list[dict], lambdas: list[float]) -> dict:
    table = {}
    for lam in lambdas:
        mine = [r for r in rows if r["ewc_lambda"] == lam]
        if not mine:
            continue
        acc, bwt = [r["ACC"] for r in mine], [r["BWT"] for r in mine]
        table[str(lam)] = {"seeds": [r["seed"] for r in mine], "ACC_mean": statistics.mean(acc),
                           "ACC_std": statistics.stdev(acc) if len(acc) > 1 else None,
                           "BWT_mean": statistics.mean(bwt),
                           "BWT_std": statistics.stdev(bwt) if len(bwt) > 1 else None}
    return table


def finish(out: dict, lambdas: list[float]) -> None:
    out["summary"] = summarize(out["rows"], lambdas)
    out["best_lambda"] = float(max(out["summary"], key=lambda k: out["summary"][k]["ACC_mean"]))


def merge(paths: list[str], dest: str) -> int:
    parts = [json.loads(Path(p).read_text()) for p in paths]
    if any(p["settings"] != parts[0]["settings"] for p in parts):
        raise SystemExit(f"--merge: the sweeps' settings differ: {[p['settings'] for p in parts]}")
    lambdas = sorted({lam for p in parts for lam in p["lambdas"]})
    out = {**parts[0], "merged_from": [{"path": path, "command": p["command"], "loadavg_start": p["loadavg_start"],
                                        "loadavg_end": p.get("loadavg_end")} for path, p in zip(paths, parts)],
           "lambdas": lambdas, "rows": [r for p in parts for r in p["rows"]]}
    finish(out, lambdas)
    write_json(dest, out)
    print("best λ (mean ACC):", out["best_lambda"], "→", dest)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lambdas", default="10,30,100,300,1000")
    p.add_argument("--seeds", default="1,2")
    p.add_argument("--tasks", type=int, default=10)
    p.add_argument("--train-subset", type=int, default=10000)
    p.add_argument("--test-subset", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=str(ROOT / "bench" / "results" / "ewc_lambda.json"))
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="combine the rows of sweeps run separately (same settings) into --json; runs nothing")
    args = p.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.json)
    lambdas = [float(v) for v in args.lambdas.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = {"tasks": args.tasks, "train_subset": args.train_subset, "test_subset": args.test_subset,
                "eval_unseen": False, "threads": args.threads}
    out = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]),
           "network": "runner defaults: spiking-mlp 784-800-800-10, T=6, SGD lr 0.1, batch 64, 1 epoch/task",
           "settings": settings, "lambdas": lambdas, "versions": versions(),
           "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
           "loadavg_start": os.getloadavg(), "rows": []}
    for seed in seeds:
        for lam in lambdas:
            t0 = time.perf_counter()
            res = run({"method": "ewc", "dataset": "pmnist", "seed": seed, **settings,
                       "options": {"ewc_lambda": lam}})
            row = {"ewc_lambda": lam, "seed": seed, "ACC": 100 * res["ACC"], "BWT": 100 * res["BWT"],
                   "last_row": [100 * a for a in res["acc_matrix"][-1]],
                   "wall_s": time.perf_counter() - t0, "loadavg": os.getloadavg()}
            out["rows"].append(row)
            finish(out, lambdas)
            out["loadavg_end"] = os.getloadavg()
            write_json(args.json, out)
            print(f"seed {seed} λ {lam:g}: ACC {row['ACC']:.2f} BWT {row['BWT']:.2f} ({row['wall_s']:.0f} s)",
                  flush=True)
    for lam, s in out["summary"].items():
        print(f"λ {float(lam):>7g}: ACC {s['ACC_mean']:.2f} ± {s['ACC_std'] or 0:.2f}, "
              f"BWT {s['BWT_mean']:.2f} ± {s['BWT_std'] or 0:.2f}")
    print("best λ (mean ACC):", out["best_lambda"], "→", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
