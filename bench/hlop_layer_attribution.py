"""Diagnostic: which layer's weight change makes HLOP forget an old permuted-MNIST task?

    python bench/hlop_layer_attribution.py                       # HLOP-DSR, paper config, 10 tasks, seed 2022
    python bench/hlop_layer_attribution.py --subspace pca        # exact principal rows instead of Oja's

Trains the paper's configuration (784-800-800-10, 1 epoch per task, batch 64, SGD lr 0.1, paper's
lateral banks) with the HLOP strategy, keeping the weights after every task. For each probe task
j it then evaluates task j's test set with hybrid weights: W_l from the end of training and every
other layer as right after task j ("only l changed"), and the reverse ("all but l changed"). It
also reports ‖ΔW_l a_l‖ / ‖W_l a_l‖, where a_l is layer l's input on task j's test images under
the weights of task j's end and ΔW_l is the change of layer l since then. That is the relative
change of layer l's input current that the projection did not stop. Prints and writes JSON.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", type=int, default=10)
    p.add_argument("--seed", type=int, default=2022)
    p.add_argument("--probe", default="0,4", help="comma-separated task indices to attribute")
    p.add_argument("--subspace", default="hebbian", choices=("hebbian", "pca"))
    p.add_argument("--train-subset", type=int, default=None, help="training images per task (default: all 60k)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT))
    from spiking.data.streams import permuted_mnist  # noqa: PLC0415
    from spiking.runner.outputs import versions  # noqa: PLC0415
    from spiking.runner.strategies.hlop import HLOPStrategy  # noqa: PLC0415

    probes = [int(j) for j in args.probe.split(",")]
    if any(not 0 <= j < args.tasks - 1 for j in probes):
        raise SystemExit(f"--probe: task indices must be in [0, {args.tasks - 2}] (a later task must follow)")
    torch.manual_seed(args.seed)
    stream = permuted_mnist(n_tasks=args.tasks, seed=args.seed, train_subset=args.train_subset)
    opts = {"train_method": "dsr", "lateral": "paper", "subspace": args.subspace}
    model = HLOPStrategy.build_model({"options": opts, "hidden": [800, 800]}, stream)
    strategy = HLOPStrategy(**opts)
    strategy.setup(model, stream, {"lr": 0.1, "seed": args.seed})
    snaps, t0 = [], time.perf_counter()
    for task in stream:
        strategy.before_task(task)
        g = torch.Generator().manual_seed(args.seed * 100 + task.index)
        for x, y in task.train_batches(64, generator=g):
            strategy.train_step(x, y, task)
        strategy.after_task(task)
        snaps.append(copy.deepcopy(model.state_dict()))
        print(f"task {task.index} trained ({time.perf_counter() - t0:.0f} s)", flush=True)

    @torch.no_grad()
    def accuracy(state: dict, j: int) -> float:
        model.load_state_dict(state)
        model.eval()
        x, y = stream[j].test_data()
        return float((model(x).argmax(1) == y).float().mean())

    @torch.no_grad()
    def layer_inputs(state: dict, j: int) -> list[torch.Tensor]:
        model.load_state_dict(state)
        model.train()  # the HLOP layers record their (weight-gradient) input in training mode
        model(stream[j].test_data()[0])
        return [fc.last_input.reshape(-1, fc.in_features) for fc in model.fcs]

    last, layers = snaps[-1], [n for n in snaps[-1] if n.endswith("weight")]
    rows = []
    for j in probes:
        at_j = snaps[j]
        a = layer_inputs(at_j, j)
        row = {"task": j, "acc_after_task": accuracy(at_j, j), "acc_end": accuracy(last, j), "layers": {}}
        for name, inp in zip(layers, a):
            only = {**at_j, name: last[name]}
            all_but = {**last, name: at_j[name]}
            dW = last[name] - at_j[name]
            row["layers"][name] = {
                "acc_only_this_layer_changed": accuracy(only, j),
                "acc_all_but_this_layer_changed": accuracy(all_but, j),
                "relative_current_change": float((inp @ dW.t()).norm() / (inp @ at_j[name].t()).norm()),
            }
        rows.append(row)
        print(f"task {j}: {100 * row['acc_after_task']:.2f} after training, {100 * row['acc_end']:.2f} at the end")
        for name, r in row["layers"].items():
            print(f"  {name}: only this layer changed {100 * r['acc_only_this_layer_changed']:.2f}, all but this "
                  f"layer {100 * r['acc_all_but_this_layer_changed']:.2f}, current change "
                  f"{100 * r['relative_current_change']:.1f} %")
    given = argv if argv is not None else sys.argv[1:]
    info = {"command": " ".join(["python", "bench/hlop_layer_attribution.py", *given]),
            "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
            "versions": versions(), "config": {**vars(args), "hidden": [800, 800], "batch_size": 64, "lr": 0.1,
                                               "lateral": "paper", "train_method": "dsr"},
            "wall_s": time.perf_counter() - t0, "probes": rows}
    out = Path(args.out or ROOT / "bench" / "results" / f"hlop_layer_attribution_{args.subspace}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
