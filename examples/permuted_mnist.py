"""Main job: HLOP vs fine-tuning on permuted MNIST, through the task-sequence runner.

    python examples/permuted_mnist.py                      # default preset (10 tasks, 784-400-400-10, ≤ 5 min)
    python examples/permuted_mnist.py --preset paper       # the paper: 10 tasks, 784-800-800-10, full data
    python examples/permuted_mnist.py --train-method bptt --methods hlop,finetune,ewc --seeds 1,2,3

Prints each method's accuracy matrix R (R[i][j]: accuracy on task j after training task i; tasks
not yet trained are not evaluated and print as "-"),
ACC = mean_j R[T, j] and BWT = mean_{j<T} (R[T, j] − R[j, j]) next to the paper's table, the HLOP
lateral-bank sizes and subspace energy per layer, and saves plots and a summary JSON in --out.
Every method trains the same network (``HLOPMLP`` with the chosen neuron model). The other
runner strategies train it through ``model(x)``: the DSR rate gradient and BPTT are the same as
under HLOP; with ``--train-method ottt`` they use BPTT (only HLOP runs OTTT's online per-step loss).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# Thread policy (bench/thread_policy.py): idle OpenMP threads sleep instead of spinning, so torch's
# threads do not collapse when another process keeps a core busy. Read by OpenMP when torch loads;
# an OMP_WAIT_POLICY you set wins, and SPIKING_OMP_DEFAULTS=1 leaves OpenMP's own default.
if "torch" not in sys.modules and os.environ.get("SPIKING_OMP_DEFAULTS") != "1":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from spiking.runner.outputs import clean, fitted_range, is_missing  # noqa: E402
from spiking.runner.run import run  # noqa: E402
from spiking.runner.strategies.hlop import HLOPStrategy  # noqa: E402

# the paper's permuted-MNIST table (Xiao et al. ICLR 2024, Table 2, ≈ as recorded in the notes)
PAPER = {"multitask": (96.15, None), "finetune": (70.61, -28.88), "ewc": (91.45, -3.20),
         "gpm": (94.80, -1.62), "hlop": (95.15, -1.30)}

# the paper's lateral schedule with the hidden-layer banks halved for 400-unit hidden layers
HALF_PAPER_LATERAL = "/".join(["80,100,50"] + ["70,35,35"] * 2 + ["50,25,25"] * 3 + ["30,15,15"] * 3 + ["10,5,5"])

PRESETS = {
    # a few minutes on 2 CPU cores: the paper's 10 tasks, SGD lr 0.1 and batch 64, on a 784-400-400-10
    # network with 10k training images per task seen for 2 epochs (313 steps per task, a third of the
    # paper's 938) and 2k test images per task: enough steps for fine-tuning to forget clearly
    "default": dict(tasks=10, train_subset=10000, hidden=[400, 400], epochs=2, batch_size=64, lr=0.1,
                    lateral=HALF_PAPER_LATERAL, seeds=[2022], test_subset=2000),
    "paper": dict(tasks=10, train_subset=None, hidden=[800, 800], epochs=1, batch_size=64, lr=0.1,
                  lateral="paper", seeds=[2022], test_subset=None),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="default")
    p.add_argument("--methods", default="hlop,finetune", help="comma-separated runner methods")
    p.add_argument("--train-method", default="dsr", choices=("dsr", "bptt", "ottt"))
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the preset's)")
    p.add_argument("--tasks", type=int, default=None, help="override the preset's number of tasks")
    p.add_argument("--train-subset", type=int, default=None, help="override the training samples per task")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (0: torch's default, one per core)")
    p.add_argument("--out", default=None, help="output folder (default runs/pmnist-<preset>-<time>)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars for training and evaluation")
    return p.parse_args(argv)


def run_method(method: str, args, preset: dict, out: Path) -> dict:
    """One runner call; returns its results plus the HLOP log of each seed's model."""
    options = {"train_method": args.train_method}
    if method == "hlop":
        options["lateral"] = preset["lateral"]
    cfg = dict(method=method, dataset="pmnist", tasks=preset["tasks"], train_subset=preset["train_subset"],
               hidden=preset["hidden"], epochs=preset["epochs"], batch_size=preset["batch_size"],
               lr=preset["lr"], seeds=preset["seeds"], test_subset=preset["test_subset"],
               eval_unseen=False,  # after task i only tasks 1..i, as the paper's code: ACC/BWT need no more
               options=options if method == "hlop" else {},
               out=str(out / method), progress=args.progress)
    models = []

    def model_fn(stream):
        models.append(HLOPStrategy.build_model({"options": options, "hidden": preset["hidden"]}, stream))
        return models[-1]

    t0 = time.perf_counter()
    res = run(cfg, model_fn=model_fn)
    res["example_wall_s"] = time.perf_counter() - t0
    res["hlop_log"] = [getattr(m, "hlop_log", None) for m in models]
    return res


def format_matrix(R) -> str:
    head = "      " + " ".join(f"  T{j + 1:<4d}" for j in range(len(R[0])))
    rows = [f"T{i + 1:<4d} " + " ".join("      -" if is_missing(a) else f"{100 * a:7.2f}" for a in row)
            for i, row in enumerate(R)]
    return "\n".join([head, *rows])


def _percent(value, std) -> str:
    """``value`` (a fraction) in percent with ``± std`` when given; "-" when undefined (BWT of one task)."""
    if value is None:
        return "-"
    return f"{100 * value:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def format_table(results: dict, preset_name: str) -> str:
    lines = [f"{'method':<10} {'ACC':>14} {'BWT':>14}   {'paper ACC':>9} {'paper BWT':>9}"]
    for m, r in results.items():
        acc, bwt = (_percent(r.get(k), r.get(k + "_std")) for k in ("ACC", "BWT"))
        pa, pb = PAPER.get(m, (None, None))
        lines.append(f"{m:<10} {acc:>14} {bwt:>14}   {pa if pa is not None else '-':>9} "
                     f"{pb if pb is not None else '-':>9}")
    if preset_name != "paper":
        lines.append("(paper numbers are for the full 10-task, 784-800-800-10 setting: --preset paper)")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    """Accuracy on each task after every task (one panel per method, y-range fitted to the method's
    accuracies so that small differences show) and ACC/BWT bars."""
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    methods = list(results)
    fig, axes = plt.subplots(1, len(methods) + 1, figsize=(4.2 * (len(methods) + 1), 3.6))
    for ax, m in zip(axes, methods):
        R = results[m]["acc_matrix"]
        T = len(R)
        values = [100 * R[i][j] for j in range(T) for i in range(j, T)]
        for j in range(T):
            ax.plot(range(j + 1, T + 1), [100 * R[i][j] for i in range(j, T)], marker="o", ms=4,
                    label=f"task {j + 1}")
        ax.set(title=f"{m}: ACC {100 * results[m]['ACC']:.2f} %", xlabel="after training task",
               ylabel="test accuracy (%)", ylim=fitted_range(values))
        ax.set_xticks(range(1, T + 1))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    ax = axes[-1]
    x = range(len(methods))
    for offset, key in ((-0.2, "ACC"), (0.2, "BWT")):
        vals = [100 * results[m][key] if results[m].get(key) is not None else 0.0 for m in methods]
        bars = ax.bar([i + offset for i in x], vals, 0.4, label=key)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(list(x), methods)
    ax.axhline(0, color="k", lw=0.5)
    ax.legend()
    ax.set_title("ACC / BWT (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = dict(PRESETS[args.preset])
    if args.seeds:
        preset["seeds"] = [int(s) for s in args.seeds.split(",")]
    if args.tasks:
        preset["tasks"] = args.tasks
    if args.train_subset:
        preset["train_subset"] = args.train_subset
    out = Path(args.out or f"runs/pmnist-{args.preset}-{args.train_method}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    print(f"preset {args.preset}: {preset}, train method {args.train_method}, methods {methods}, "
          f"threads {torch.get_num_threads()}", flush=True)
    results = {}
    for m in methods:
        results[m] = run_method(m, args, preset, out)
        r = results[m]
        print(f"\n== {m} ({args.train_method}) — {r['example_wall_s']:.0f} s, peak RSS {r['peak_rss_mb']:.0f} MB")
        print(format_matrix(r["acc_matrix"]))
        for log in r["hlop_log"]:
            if log:
                print("lateral sizes per task:", [list(s.values()) for s in log["lateral_sizes"]], "layers", log["layers"])
                print("subspace energy per task:",
                      [[round(e, 3) for e in s.values()] for s in log["subspace_energy"]])
                print(f"Hebbian updates {log['hebbian_s']:.1f} s, projection {log['projection_s']:.1f} s")
    print()
    print(format_table(results, args.preset))
    plot(results, out / "permuted_mnist.png")
    summary = {"preset": args.preset, "config": preset, "threads": torch.get_num_threads(), "train_method": args.train_method, "paper": PAPER,
               "command": " ".join([os.path.basename(sys.argv[0]), *(argv or sys.argv[1:])]),
               "results": {m: {k: r.get(k) for k in ("ACC", "BWT", "ACC_std", "BWT_std", "acc_matrix", "forgetting",
                                                    "wall_time_s", "example_wall_s", "peak_rss_mb", "train_time_s",
                                                    "eval_time_s", "hlop_log")} for m, r in results.items()}}
    (out / "summary.json").write_text(json.dumps(clean(summary), indent=1))
    print(f"\nplots and results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
