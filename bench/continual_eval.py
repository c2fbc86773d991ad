"""Benchmark: what continual evaluation (``--eval-every``) costs, through the runner (issue #13).

    python bench/continual_eval.py              # ~1 min on 2 idle cores

Runs HLOP-DSR in the paper's network (784-800-800-10) on ``--tasks`` permuted-MNIST tasks of
``--train-subset`` images with the runner's defaults, once per ``--eval-every`` value (0: only the
full test sets before training and after each task, unseen tasks included), and reads from each
run's ``events.jsonl`` how many full and subset evaluations it made. Reports the evaluation time,
the samples evaluated and the time per evaluated sample: continual evaluation costs in proportion
when the last is about the same for every value (the subsets are ``--eval-subset`` samples per
seen task, transformed once and cached). Training time is reported too: it must not change with
the evaluation schedule.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _record import write_record  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", type=int, default=3)
    p.add_argument("--train-subset", type=int, default=10000)
    p.add_argument("--eval-every", default="0,200,100,50", help="values of eval_every, one run each")
    p.add_argument("--eval-subset", type=int, default=1000)
    p.add_argument("--seed", type=int, default=2022)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "continual_eval.json"))
    args = p.parse_args(argv)

    import torch  # noqa: PLC0415

    from spiking.runner import run  # noqa: PLC0415
    from spiking.runner.outfolder import cpu_model  # noqa: PLC0415
    from spiking.runner.outputs import versions  # noqa: PLC0415

    info = {"command": " ".join(["python", "bench/continual_eval.py", *(argv if argv is not None else sys.argv[1:])]),
            "machine": {"platform": platform.platform(), "cpu": cpu_model(), "cpus": os.cpu_count(),
                        "torch_threads": torch.get_num_threads(), "loadavg_start": os.getloadavg()},
            "versions": versions(), "settings": vars(args), "rows": []}
    for every in (int(e) for e in args.eval_every.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = {"dataset": "pmnist", "tasks": args.tasks, "train_subset": args.train_subset, "hidden": [800, 800],
                   "epochs": 1, "batch_size": 64, "lr": 0.1, "model": "hlop-dsr", "method": "hlop",
                   "options": {"train_method": "dsr", "lateral": "paper"}, "seeds": [args.seed],
                   "eval_every": every, "eval_subset": args.eval_subset, "progress": False, "out": tmp}
            res = run(cfg)
            events = [json.loads(line) for f in Path(tmp).rglob("events.jsonl") for line in f.read_text().splitlines()
                      if line.strip()]
        res = res.get("per_seed", [res])[0] if "eval_time_s" not in res else res
        full = sum(1 for e in events if e.get("kind") in ("full", "before"))
        subset = sum(1 for e in events if e.get("kind") == "subset")
        samples = full * 10000 + subset * args.eval_subset  # permuted-MNIST test sets hold 10,000 images
        row = {"eval_every": every, "steps": res["steps"], "full_evaluations": full, "subset_evaluations": subset,
               "samples_evaluated": samples, "eval_s": res["eval_time_s"], "train_s": sum(res["train_time_s"]),
               "wall_s": res["wall_time_s"], "us_per_evaluated_sample": 1e6 * res["eval_time_s"] / samples,
               "ACC": res["ACC"]}
        info["rows"].append(row)
        print(f"eval_every {every:4d}: {full} full + {subset} subset evaluations = {samples} samples, "
              f"eval {row['eval_s']:.2f} s ({row['us_per_evaluated_sample']:.1f} us/sample), "
              f"train {row['train_s']:.1f} s", flush=True)
    base = info["rows"][0]["us_per_evaluated_sample"]
    for row in info["rows"]:
        row["per_sample_vs_first"] = row["us_per_evaluated_sample"] / base
    write_record(info, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
