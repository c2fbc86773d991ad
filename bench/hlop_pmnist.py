"""Benchmark: HLOP on permuted MNIST in the paper's configuration, through the runner.

    python bench/hlop_pmnist.py                                   # HLOP-DSR, seeds 2022,1,2, paper config
    python bench/hlop_pmnist.py --train-method bptt --seeds 1,2,3
    python bench/hlop_pmnist.py --methods finetune,ewc,gpm,multitask   # the table's other rows, same network
    python bench/hlop_pmnist.py --tasks 3 --train-subset 10000      # reduced (recorded as such in the JSON)
    python bench/hlop_pmnist.py --merge a.json b.json --out c.json  # one summary over runs made separately
    python bench/hlop_pmnist.py --methods ewc --option ewc_lambda=100   # a strategy option for every run
    python bench/hlop_pmnist.py --methods finetune,gpm --device cuda --jobs 6  # runs in parallel on a GPU
    python bench/hlop_pmnist.py --seeds 1 --device cuda --cuda-graph --in-process  # one run, no Ray

Paper configuration: 10 tasks, 784-800-800-10, 1 epoch, batch 64, SGD lr 0.1, lateral neurons
[80, 200, 100] then +70, +70, +50×3, +30×3, +10 per layer. The (method, seed) runs are the trials of
a ``spiking sweep`` (``spiking.sweep.run_sweep``, in ``--sweep-dir``; ``--resume`` continues it), each
a Ray task in a fresh worker process, so its wall time and peak RSS (``ru_maxrss``) are its own.
``--in-process`` runs a single (method, seed) trial in this process instead, for a machine without
Ray; start one process per seed and combine their JSON files with ``--merge``.
Writes JSON with the command, machine, versions, per-seed numbers, mean ± std (ddof = 1) and
medians, and for HLOP the share of training time spent in Hebbian updates and projection.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAPER_LATERAL = "paper"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", default="hlop")
    p.add_argument("--train-method", default="dsr", choices=("dsr", "bptt", "ottt"))
    p.add_argument("--seeds", default="2022,1,2")
    p.add_argument("--tasks", type=int, default=10)
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--hidden", default="800,800")
    p.add_argument("--lateral", default=PAPER_LATERAL)
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="strategy option for every method that has it (e.g. ewc_lambda=100); repeatable")
    p.add_argument("--eval-unseen", action="store_true",
                   help="after each task also evaluate the tasks not yet trained (FWT; about twice the "
                        "evaluation time). Default: seen tasks only, as the paper's code evaluates")
    p.add_argument("--device", default="cpu", help="torch device of every run (cpu, cuda)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at a time, each a Ray task in a fresh process (timings are then not "
                        "comparable to --jobs 1)")
    p.add_argument("--out", default=None, help="JSON path (default bench/results/hlop_pmnist_<train-method>[_reduced].json)")
    p.add_argument("--merge", nargs="+", default=None, help="combine result JSONs of one configuration into --out")
    p.add_argument("--sweep-dir", default=None,
                   help="folder of the runs (a spiking sweep; default runs/bench-<json name>)")
    p.add_argument("--resume", action="store_true", help="continue the sweep in --sweep-dir")
    p.add_argument("--cuda-graph", action="store_true",
                   help="replay each training step as a CUDA graph (runner config cuda_graph; GPU only)")
    p.add_argument("--in-process", action="store_true",
                   help="run the one (method, seed) trial in this process, without Ray")
    return p.parse_args(argv)


def row(trial: dict, res: dict) -> dict:
    """One (method, seed) line of the JSON from a sweep trial and its run's results.json."""
    train_s = float(sum(res["train_time_s"]))
    out = {"method": trial["method"], "seed": trial["seed"], "ACC": 100 * res["ACC"], "BWT": 100 * res["BWT"],
           "acc_matrix": res["acc_matrix"], "wall_s": trial["wall_time_s"], "train_s": train_s,
           "eval_s": res["eval_time_s"], "peak_rss_mb": res["peak_rss_mb"],  # a fresh worker per trial
           # where the rest of the wall time goes: set-up (data, model, device), the event loop
           # (training, evaluation, checkpoints); wall − both = imports, outputs (plots), process
           "setup_s": res.get("setup_time_s"), "setup_parts_s": res.get("setup_parts_s"), "loop_s": res["wall_time_s"],
           "checkpoint_s": res.get("checkpoint_time_s"),
           "threads": trial["config"]["threads"], "device": trial["config"]["device"],
           "options": res["config"]["options"]}  # the strategy's effective options, defaults filled in
    if "peak_cuda_mb" in res:
        out["peak_gpu_mb"] = res["peak_cuda_mb"]
    log = res.get("strategy_report") or {}
    if "hebbian_s" in log:
        out.update(hebbian_s=log["hebbian_s"], projection_s=log["projection_s"],
                   hlop_share_of_train=(log["hebbian_s"] + log["projection_s"]) / train_s,
                   lateral_sizes=log["lateral_sizes"], subspace_energy=log["subspace_energy"])
    return out


def parse_options(pairs: list[str], method: str) -> dict:
    """``["ewc_lambda=100", ...]`` -> the options that ``method``'s strategy declares, typed."""
    from spiking.runner.strategies import STRATEGIES  # noqa: PLC0415

    declared = getattr(STRATEGIES[method], "options", {})
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--option needs KEY=VALUE, got {pair!r}")
        if key in declared:
            kind = declared[key][0]
            out[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return out


def mean_std(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else None,
            "median": statistics.median(vals), "n": len(vals)}


def machine(device: str = "cpu") -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out = {"platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(),
           "python": platform.python_version(), "loadavg_start": os.getloadavg()}
    if device.startswith("cuda"):
        import torch  # noqa: PLC0415
        out["gpu"] = torch.cuda.get_device_name(torch.device(device)) if torch.cuda.is_available() else None
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.merge:
        if not args.out:
            raise SystemExit("--merge needs --out")
        merge(args.merge, Path(args.out))
        return 0
    import torch  # noqa: PLC0415

    from spiking.runner.outputs import versions  # noqa: PLC0415

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    reduced = args.tasks != 10 or args.train_subset is not None or args.hidden != "800,800" or args.lateral != PAPER_LATERAL
    out = Path(args.out or ROOT / "bench" / "results" /
               f"hlop_pmnist_{args.train_method}{'_reduced' if reduced else ''}.json")
    info = {"command": " ".join(["python", "bench/hlop_pmnist.py", *(argv if argv is not None else sys.argv[1:])]),
            "machine": machine(args.device), "versions": versions(), "torch_threads_default": torch.get_num_threads(),
            "config": {"tasks": args.tasks, "train_subset": args.train_subset, "hidden": args.hidden,
                       "epochs": 1, "batch_size": 64, "lr": 0.1, "optimizer": "sgd", "lateral": args.lateral,
                       "train_method": args.train_method, "paper_configuration": not reduced,
                       "options": args.option, "eval_unseen": args.eval_unseen,
                       **({"cuda_graph": True} if args.cuda_graph else {})},
            "runs": [], "summary": {}}
    threads = args.threads or torch.get_num_threads()
    info["config"].update(device=args.device, jobs=args.jobs, threads=threads)
    sweep_dir = Path(args.sweep_dir or ROOT / "runs" / f"bench-{out.stem}")
    settings = {"dataset": "pmnist", "tasks": args.tasks, "train_subset": args.train_subset,
                "hidden": [int(h) for h in args.hidden.split(",")], "epochs": 1, "batch_size": 64, "lr": 0.1,
                "device": args.device, "eval_unseen": args.eval_unseen, "threads": threads,
                "model": f"hlop-{args.train_method}"}  # the baselines run in HLOP's network
    if args.cuda_graph:
        settings["cuda_graph"] = True
    if "hlop" in methods:
        settings.update({"hlop.train_method": args.train_method, "hlop.lateral": args.lateral})
    for method in methods:
        settings.update({f"{method}.{k}": v for k, v in parse_options(args.option, method).items()})
    gpu = args.device.startswith("cuda")
    spec = {"out": str(sweep_dir), "methods": methods, "seeds": seeds, "settings": settings,
            "cpus": args.jobs * threads if not gpu else None, "gpus_per_trial": 1 / args.jobs if gpu else 0,
            "isolate": True, "resume": args.resume}
    info["sweep"] = str(sweep_dir)
    if args.in_process:
        info["config"]["in_process"] = True
        result = {"trials": [run_in_process(spec)]}
    else:
        from spiking.sweep import run_sweep  # noqa: PLC0415
        result = run_sweep(spec)
    for t in result["trials"]:
        if t["status"] != "done":
            print(f"{t['method']} seed {t['seed']} failed: {t['error']}", flush=True)
            info.setdefault("failed", []).append({"method": t["method"], "seed": t["seed"], "error": t["error"]})
            continue
        r = row(t, json.loads((sweep_dir / t["out"] / "results.json").read_text()))
        info["runs"].append(r)
        print(f"{r['method']} seed {r['seed']}: ACC {r['ACC']:.2f} BWT {r['BWT']:.2f} wall {r['wall_s']:.0f} s "
              f"(train {r['train_s']:.0f} s, eval {r['eval_s']:.0f} s) peak RSS {r['peak_rss_mb']:.0f} MB"
              + (f", Hebbian+projection {100 * r['hlop_share_of_train']:.1f} % of training"
                 if "hlop_share_of_train" in r else ""), flush=True)
    info["summary"] = summarize(info["runs"])
    info["machine"]["loadavg_end"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=1))
    report(info, out)
    return 0


def run_in_process(spec: dict) -> dict:
    """The sweep's single trial run here (no Ray), recorded as the sweep would record it."""
    from spiking.sweep.engine import execute_trial, record  # noqa: PLC0415
    from spiking.sweep.spec import expand, from_dict, validate  # noqa: PLC0415

    spec = validate(from_dict(spec))
    trials = expand(spec, spec.settings.get("dataset", "pmnist"), spec.seeds)
    if len(trials) != 1:
        raise SystemExit(f"--in-process runs one (method, seed) trial; this configuration has {len(trials)}")
    folder = Path(spec.out)
    outcome = execute_trial(trials[0].config, str(folder / "trials" / trials[0].key))
    return record(trials[0], folder, outcome)


def summarize(runs: list[dict]) -> dict:
    """Per method: mean, sample std, median and count of every measured quantity over seeds."""
    out = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        rows = [r for r in runs if r["method"] == method]
        out[method] = {k: mean_std([r.get(k) for r in rows]) for k in
                       ("ACC", "BWT", "wall_s", "train_s", "eval_s", "setup_s", "loop_s", "checkpoint_s",
                        "peak_rss_mb",
                        "hebbian_s", "projection_s", "hlop_share_of_train")}
    return out


def merge(paths: list[str], out: Path) -> None:
    """Combine the runs of several result files of the same configuration into one summary."""
    infos = [json.loads(Path(p).read_text()) for p in paths]
    def same(cfg: dict) -> dict:  # how runs were scheduled is not part of the configuration
        return {"options": [], "eval_unseen": True, **{k: v for k, v in cfg.items() if k not in ("jobs", "in_process")}}

    for p, i in zip(paths[1:], infos[1:]):
        if same(i["config"]) != same(infos[0]["config"]):
            raise ValueError(f"merge: {p} has another configuration than {paths[0]}")
    info = {"merged_from": [{"path": p, "command": i["command"], "machine": i["machine"],
                             "torch_threads_default": i["torch_threads_default"]} for p, i in zip(paths, infos)],
            "versions": infos[0]["versions"], "config": infos[0]["config"],
            "runs": [r for i in infos for r in i["runs"]]}
    info["summary"] = summarize(info["runs"])
    out.write_text(json.dumps(info, indent=1))
    report(info, out)


def report(info: dict, out: Path) -> None:
    for method, s in info["summary"].items():
        fmt = lambda d: "-" if d is None else f"{d['mean']:.2f} ± {d['std']:.2f}" if d["std"] is not None else f"{d['mean']:.2f}"
        print(f"{method:<10} ACC {fmt(s['ACC'])}  BWT {fmt(s['BWT'])}  wall {fmt(s['wall_s'])} s  "
              f"peak RSS {fmt(s['peak_rss_mb'])} MB")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
