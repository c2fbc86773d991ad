"""Benchmark: host overhead of one training step through the runner, per method (issue #13).

    python bench/step_overhead.py                       # counts at hidden 8 and 800, times at both
    python bench/step_overhead.py --hidden 8 --no-time  # counts only (fast)
    python bench/step_overhead.py --device cuda --out bench/results/step_overhead_gpu.json
    python bench/step_overhead.py --emulate-cuda --hidden 8 --out bench/results/step_overhead_cuda_emulated.json

For finetune, EWC, replay, GPM, joint (784-H-H-10 SpikingMLP, T = 6) and HLOP with DSR (T = 20),
BPTT and OTTT (T = 6) in their own network: top-level dispatched aten ops and host syncs per
training step (``spiking.runner.overhead.OpCounter``), and seconds per step, at hidden size 8
(pure overhead: the arithmetic is negligible) and 800 (the paper's network). A step's cost is the
difference of two runner runs with ``steps`` and ``steps'`` batches per task on a 2-task synthetic
stream (set-up, task hooks and evaluation cancel), see ``spiking.runner.overhead.measure_step``.
Each row also gives the issue's budget (HLOP-DSR 80 ops, others 50; 0 syncs) and whether it holds.
``--emulate-cuda`` counts (no times) the step as a GPU dispatches it on a machine without one:
every layer through the CUDA wrappers (the neurons through the default C++ launcher), their
launches carried out by the CPU kernels outside the count (``tests/cupy_emulation.py``; needs
pytest), and the CPU-only fused paths (HLOP-DSR's hidden stack, the event-driven spike product)
off, as they are for CUDA tensors.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from _record import write_record  # noqa: E402  (bench/ is the script folder, first on sys.path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", default="8,800", help="hidden sizes (comma-separated)")
    p.add_argument("--methods", default=None, help="labels (default: all of spiking.runner.overhead.METHODS)")
    p.add_argument("--steps", default="3,8", help="batches per task of the two runs (count)")
    p.add_argument("--time-steps", default="4,12", help="batches per task of the two runs (time)")
    p.add_argument("--repeats", type=int, default=3, help="timed run pairs per method (median)")
    p.add_argument("--no-time", action="store_true", help="counts only")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="torch device of the runs (cpu, cuda, cuda:1, ...)")
    p.add_argument("--emulate-cuda", action="store_true",
                   help="count the CUDA wrappers' dispatches with emulated launches (implies --no-time)")
    p.add_argument("--launcher", choices=("c++", "cupy"), default="c++",
                   help="with --emulate-cuda: the neurons' CUDA launcher (default the C++ one, as on a GPU; "
                        "cupy: the Python/CuPy launchers, SPIKING_CUDA_LAUNCH=cupy)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "step_overhead.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.emulate_cuda:
        import pytest  # noqa: PLC0415

        sys.path.insert(0, str(ROOT / "tests"))
        import cupy_emulation  # noqa: PLC0415

        launcher = "node" if args.launcher == "c++" else "cupy"
        cupy_emulation.emulate_cuda_backend(pytest.MonkeyPatch(), launcher=launcher)
        args.no_time = True
    from spiking.runner.outputs import versions  # noqa: PLC0415
    from spiking.runner.overhead import METHODS, budget, measure_step  # noqa: PLC0415

    labels = args.methods.split(",") if args.methods else [m[0] for m in METHODS]
    info = {"command": " ".join(["python", "bench/step_overhead.py", *(argv if argv is not None else sys.argv[1:])]),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads,
                        "device": args.device, "loadavg_start": os.getloadavg(),
                        **({"emulated_cuda": True, "cuda_launcher": args.launcher} if args.emulate_cuda else {})},
            "versions": versions(), "rows": []}
    steps = tuple(int(s) for s in args.steps.split(","))
    tsteps = tuple(int(s) for s in args.time_steps.split(","))
    extra = None if args.device == "cpu" else {"device": args.device}
    if extra and args.device.startswith("cuda"):
        from _record import cuda_launcher  # noqa: PLC0415

        info["machine"]["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
        info["machine"]["cuda_launcher"] = cuda_launcher()
    for hidden in (int(h) for h in args.hidden.split(",")):
        for label in labels:
            row = measure_step(label, hidden=hidden, steps=steps, extra=extra)
            if not args.no_time:
                row.update({k: v for k, v in measure_step(label, hidden=hidden, steps=tsteps, count=False, timing=True,
                                                          repeats=args.repeats, extra=extra).items()
                            if k.startswith("step_s")})
            ops, syncs = budget(label)
            row.update(budget_ops=ops, budget_syncs=syncs, within_budget=row["ops"] <= ops and row["syncs"] <= syncs)
            info["rows"].append(row)
            t = f"  {1e3 * row['step_s']:.2f} ms/step" if "step_s" in row else ""
            print(f"{label:<10} hidden {hidden:<4} {row['ops']:6.1f} ops  {row['syncs']:4.1f} syncs  "
                  f"(budget {ops}/{syncs}: {'ok' if row['within_budget'] else 'OVER'}){t}", flush=True)
            write_record(info, args.out)  # after every row: a stopped run keeps what it measured
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
