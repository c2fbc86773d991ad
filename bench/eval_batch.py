"""Benchmark: evaluation cost per sample of the HLOP-DSR paper network on the CPU (issue #13).

    python bench/eval_batch.py                  # ~3 min on 2 idle cores

Trains the 784-800-800-10 DSR network (T = 20) for ``--train-steps`` batches of MNIST (so its
spike densities are those of a trained net), then times ``spiking.runner.evaluation.evaluate`` on
``--n`` test samples per evaluation batch size, at 1 and 2 threads (median of ``--reps``). Each
row is timed three ways: the default fused hidden stack (``spiking.kernels.dsr_stack``), the
unfused stack with the event-driven hidden-to-hidden product (``spiking.kernels.spike_matmul``)
and the unfused stack with the dense ``torch.mm`` reference, so the gain of each change is
measured in the same run. The runner's default evaluation batch on the CPU is 256, except for a
model that sizes its own: ``HLOPMLP`` on its fused CPU path (``eval_batch_size_for``, the row
marked ``models_own_batch``), which is what the runner uses for this network.
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

from _record import write_record  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--n", type=int, default=6000, help="test samples per timing")
    p.add_argument("--batches", default="64,256,1000,model",
                   help="evaluation batch sizes; 'model': the model's own size (HLOPMLP.eval_batch_size_for)")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "eval_batch.json"))
    args = p.parse_args(argv)

    import spiking.plasticity.networks as nets  # noqa: PLC0415
    from spiking.data.idx import load_mnist  # noqa: PLC0415
    from spiking.kernels.spike_matmul import spike_matmul, spike_matmul_reference  # noqa: PLC0415
    from spiking.runner.evaluation import CPU_EVAL_BATCH, evaluate  # noqa: PLC0415
    from spiking.runner.outfolder import cpu_model  # noqa: PLC0415
    from spiking.runner.outputs import versions  # noqa: PLC0415

    info = {"command": " ".join(["python", "bench/eval_batch.py", *(argv if argv is not None else sys.argv[1:])]),
            "machine": {"platform": platform.platform(), "cpu": cpu_model(), "cpus": os.cpu_count(),
                        "loadavg_start": os.getloadavg()},
            "versions": versions(), "default_eval_batch_cpu": CPU_EVAL_BATCH, "rows": []}
    xtr, ytr, xte, yte = load_mnist()
    norm = lambda x: ((x.float() / 255 - 0.1307) / 0.3081).reshape(len(x), -1)  # noqa: E731
    xtr, xte, ytr, yte = norm(xtr), norm(xte), ytr.long(), yte.long()
    torch.manual_seed(0)
    model = nets.HLOPMLP((784, 800, 800, 10), "dsr")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    for _ in range(args.train_steps):
        idx = torch.randint(0, len(xtr), (64,), generator=g)
        opt.zero_grad()
        model.loss_backward(xtr[idx], ytr[idx], F.cross_entropy)
        opt.step()
    density = []
    hooks = [n.register_forward_hook(lambda _m, _i, o: density.append(float(o[0].mean()))) for n in model.neurons]
    acc, _ = evaluate(model, xte[:1000], yte[:1000])
    for h in hooks:
        h.remove()
    layers = len(model.neurons)
    density = [statistics.fmean(density[i::layers]) for i in range(layers)]
    info.update(train_steps=args.train_steps, accuracy_1000=acc, spike_density=density)
    print(f"trained {args.train_steps} steps: accuracy {acc:.4f}, spike density per hidden layer {density}")
    x, y = xte[:args.n], yte[:args.n]
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        own = model.eval_batch_size_for("cpu")
        for bs in (own if b == "model" else int(b) for b in args.batches.split(",")):
            row = {"threads": threads, "batch": bs, "models_own_batch": bs == own}
            for name, fused, product in (("fused_stack", True, spike_matmul), ("event_driven", False, spike_matmul),
                                         ("dense", False, spike_matmul_reference)):
                nets.spike_matmul = product
                model.__dict__.pop("_fused_dsr", None)
                if not fused:  # the unfused hidden stack: [T, B, N] tensors and a product between layers
                    model._fused_dsr = lambda _x: False
                evaluate(model, x[:bs], y[:bs], batch_size=bs)  # warm-up
                times = []
                for _ in range(args.reps):
                    t0 = time.perf_counter()
                    a, _ = evaluate(model, x, y, batch_size=bs)
                    times.append(time.perf_counter() - t0)
                row[name] = {"us_per_sample": 1e6 * statistics.median(times) / args.n,
                             "all_s": times, "accuracy": a}
            nets.spike_matmul = spike_matmul
            model.__dict__.pop("_fused_dsr", None)
            row["event_driven_speedup"] = row["dense"]["us_per_sample"] / row["event_driven"]["us_per_sample"]
            row["fused_speedup_vs_event_driven"] = (row["event_driven"]["us_per_sample"]
                                                    / row["fused_stack"]["us_per_sample"])
            info["rows"].append(row)
            print(f"threads {threads} batch {bs:5d}: fused {row['fused_stack']['us_per_sample']:7.1f} us/sample  "
                  f"event-driven {row['event_driven']['us_per_sample']:7.1f}  dense {row['dense']['us_per_sample']:7.1f}"
                  f"  (fused x{row['fused_speedup_vs_event_driven']:.2f} vs event-driven)", flush=True)
    write_record(info, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
