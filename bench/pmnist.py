"""Permuted-MNIST benchmark of the runner's baselines on the HLOP paper's network.

Network: SpikingMLP 784-800-800-10, no biases, T = 6, the paper's BPTT LIF (τ = 2, V_th = 1, soft
reset, detached reset, sigmoid surrogate α = 4; docs/hlop.md), direct input, mean-current
readout. 1 epoch per task, batch 64, plain SGD lr 0.1, 10 tasks (defaults: the paper's).
Multitask = ``joint`` with ``budget = "task"`` by default (each phase k trains one task's worth of
steps on mixed batches of tasks 0..k; the same compute as fine-tuning); ``--joint-budget union``
trains one epoch over the union at every phase (Σ_k (k+1) epochs).

Runner overhead per step, measured two ways on the same model and data (same seed):
  * A/B: the runner's training time per step (``train_time_s / steps`` of a 1-task finetune run,
    evaluation excluded) against a bare loop ``zero_grad; CE(model(x), y).backward(); step`` over
    the same batches; ``--reps`` interleaved repetitions, medians.
  * loop only: both loops again with a no-op train step, i.e. what the runner adds per step
    around the strategy (batch hand-off, counters, progress), divided by the bare step's median.
Writes JSON (command, machine, versions, settings, medians, rows) to ``--out``.

    python bench/pmnist.py --train-subset 5000 --methods finetune,ewc,gpm,multitask
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spiking.data import permuted_mnist  # noqa: E402
from spiking.models import SpikingMLP  # noqa: E402
from spiking.runner import STRATEGIES, Strategy, register, run  # noqa: E402
from spiking.runner.outputs import versions, write_json  # noqa: E402

PAPER = {"multitask": {"ACC": 96.15}, "finetune": {"ACC": 70.61, "BWT": -28.88},
         "ewc": {"ACC": 91.45, "BWT": -3.20}, "gpm": {"ACC": 94.80, "BWT": -1.62},
         "note": "approximate, HLOP paper Table 2 (docs/hlop.md)"}
METHOD = {"multitask": "joint"}


class _NoOp(Strategy):
    """Takes the runner's batches and does nothing (measures the runner's own loop)."""
    name = "_bench_noop"

    def train_step(self, x, y, task):
        return 0.0


def bare_loop(model, task, batch_size, lr, seed, noop=False):
    """Seconds for one epoch of plain SGD on ``task`` (or of just iterating, ``noop``)."""
    from spiking.runner.run import _generator  # the runner's batch order for task 0, epoch 0
    opt = None if noop else torch.optim.SGD(model.parameters(), lr=lr)
    t0, steps = time.perf_counter(), 0
    for x, y in task.train_batches(batch_size, generator=_generator(seed, 0, 0)):
        if not noop:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        steps += 1
    return time.perf_counter() - t0, steps


def model_fn(args):
    return lambda stream: SpikingMLP([784, 800, 800, 10], T=args.T)


def measure_overhead(args) -> dict:
    register(_NoOp)
    subset = args.overhead_steps * args.batch_size
    stream = permuted_mnist(n_tasks=1, seed=args.seed, train_subset=subset)
    cfg = dict(method="finetune", tasks=1, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
               eval_batch_size=2000)
    ab_runner, ab_bare, noop_runner, noop_bare = [], [], [], []
    for _ in range(args.reps):
        torch.manual_seed(args.seed)
        t, n = bare_loop(SpikingMLP([784, 800, 800, 10], T=args.T), stream[0], args.batch_size,
                         args.lr, args.seed)
        ab_bare.append(t / n)
        res = run(cfg, stream=stream, model_fn=model_fn(args))
        ab_runner.append(res["train_time_s"][0] / res["steps"])
        t, n = bare_loop(None, stream[0], args.batch_size, args.lr, args.seed, noop=True)
        noop_bare.append(t / n)
        res = run({**cfg, "method": "_bench_noop"}, stream=stream, model_fn=model_fn(args))
        noop_runner.append(res["train_time_s"][0] / res["steps"])
    med = statistics.median
    bare_step = med(ab_bare)
    return {
        "steps_per_rep": n, "reps": args.reps,
        "bare_step_s_median": bare_step, "runner_step_s_median": med(ab_runner),
        "ab_overhead_pct": 100 * (med(ab_runner) - bare_step) / bare_step,
        "bare_step_s_all": ab_bare, "runner_step_s_all": ab_runner,
        "loop_only_bare_s_median": med(noop_bare), "loop_only_runner_s_median": med(noop_runner),
        "loop_only_overhead_pct": 100 * (med(noop_runner) - med(noop_bare)) / bare_step,
    }


def run_methods(args, report: dict | None = None) -> list[dict]:
    """One row per method; with ``report``, the JSON is rewritten after every row (partial runs
    keep what finished, ``complete: false`` until the last)."""
    rows = []
    for name in args.methods:
        method = METHOD.get(name, name)
        opts = {"budget": args.joint_budget} if method == "joint" else {}
        if method == "ewc" and args.ewc_lambda is not None:
            opts = {"ewc_lambda": args.ewc_lambda}
        cfg = dict(method=method, dataset="pmnist", tasks=args.tasks, epochs=1,
                   train_subset=args.train_subset, batch_size=args.batch_size, lr=args.lr,
                   seed=args.seed, T=args.T, eval_every=args.eval_every, options=opts,
                   eval_batch_size=2000, progress=args.progress, test_subset=args.test_subset)
        t0 = time.perf_counter()
        res = run(cfg)
        wall = time.perf_counter() - t0
        row = {"method": name, "strategy": method, "options": res["config"]["options"], "wall_s": wall,
               "train_time_s_total": sum(res["train_time_s"]), "eval_time_s": res["eval_time_s"],
               "steps": res["steps"], "acc_matrix": res["acc_matrix"], "peak_rss_mb": res["peak_rss_mb"],
               "spikes_per_sample": res["spikes_per_sample"]}
        for k in ("ACC", "BWT", "FWT", "forgetting", "avg_incremental_acc", "min_ACC", "WC_ACC",
                  "WF10", "WF100"):
            row[k] = None if res[k] is None else 100 * res[k]
        rows.append(row)
        if report is not None:
            write_json(args.out, {**report, "rows": rows, "complete": len(rows) == len(args.methods)})
        print(f"{name:<10} ACC {row['ACC']:6.2f}  BWT {row['BWT']:7.2f}  forgetting "
              f"{row['forgetting']:6.2f}  wall {wall:7.1f}s", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="finetune,ewc,gpm,multitask",
                   help="comma-separated: finetune, ewc, gpm, multitask, replay (empty: none)")
    p.add_argument("--tasks", type=int, default=10)
    p.add_argument("--train-subset", type=int, default=None, help="training samples per task (None: 60000)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--T", type=int, default=6)
    p.add_argument("--seed", type=int, default=2022)
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--test-subset", type=int, default=None,
                   help="evaluate the matrix on n test samples per task (None: full 10k)")
    p.add_argument("--joint-budget", default="task", choices=("task", "union"))
    p.add_argument("--ewc-lambda", type=float, default=None, help="EWC λ (default: the strategy's)")
    p.add_argument("--overhead-steps", type=int, default=60, help="steps per overhead repetition (0: skip)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads (1: far faster on a loaded 2-core machine)")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "pmnist.json"))
    args = p.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    for m in args.methods:
        if METHOD.get(m, m) not in STRATEGIES:
            p.error(f"--methods: unknown method {m!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    report = {
        "command": " ".join([sys.executable, *sys.argv]) if argv is None else "main(" + repr(argv) + ")",
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_avg_start": os.getloadavg()},
        "versions": versions(), "paper": PAPER,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "network": "SpikingMLP 784-800-800-10, no bias, T=6, LIF tau=2 Vth=1 soft reset, detached "
                   "reset, sigmoid surrogate alpha=4 (paper BPTT neuron, not DSR), direct input",
    }
    if args.overhead_steps:
        report["overhead"] = measure_overhead(args)
        o = report["overhead"]
        print(f"overhead: bare {1e3 * o['bare_step_s_median']:.2f} ms/step, runner "
              f"{1e3 * o['runner_step_s_median']:.2f} ms/step (A/B {o['ab_overhead_pct']:+.2f} %), "
              f"loop-only {o['loop_only_overhead_pct']:+.3f} %", flush=True)
    report["rows"] = run_methods(args, report)
    report["complete"] = True
    report["total_wall_s"] = time.perf_counter() - t0
    report["machine"]["load_avg_end"] = os.getloadavg()
    write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
