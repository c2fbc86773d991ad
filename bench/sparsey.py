"""Sparsey macrocolumn benchmark: capacity, familiarity, speed, similarity preservation.

    python bench/sparsey.py [--quick] [--repeats 5] [--out bench/results]

Writes bench/results/sparsey.json and bench/results/sparsey.png. Inputs are random binary
patterns with exactly `a` active of N (N=784, Q=32, K=16 by default). Reported:
  * recall per-CM rate and exact-code rate vs number of stored traces M, fraction of weights set
    beside the theory p1 = 1 - exp(-M a / (N K)), stored-vs-novel familiarity ROC AUC;
  * time per store / per recall vs M (medians over repeats);
  * batched throughput (stores/s, recalls/s) and matmul vs popcount input sums for recall;
  * similarity preservation: code overlap vs input overlap of perturbed copies.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from spiking.memory import Macrocolumn  # noqa: E402
from spiking.memory import cpu as mem_cpu  # noqa: E402


def patterns(M, N, a, gen):
    idx = torch.rand(M, N, generator=gen).argsort(1)[:, :a]
    return torch.zeros(M, N).scatter_(1, idx, 1.0)


def auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """ROC AUC = P(pos > neg) + P(pos == neg)/2."""
    p, n = pos.double().unsqueeze(1), neg.double().unsqueeze(0)
    return float(((p > n).double() + 0.5 * (p == n).double()).mean())


def timed(fn, repeats):
    ts = []
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def capacity(N, Q, K, a, Ms, repeats, n_probe=500):
    rows = []
    for seed in range(repeats):
        gen = torch.Generator().manual_seed(1000 + seed)
        X = patterns(max(Ms), N, a, gen)
        novel = patterns(n_probe, N, a, gen)
        mac = Macrocolumn(N, Q, K, seed=seed, theta_sat=None)
        codes, done = [], 0
        for M in Ms:
            t = time.perf_counter()
            c, _ = mac.store(X[done:M])
            t_store = (time.perf_counter() - t) / (M - done)
            codes.append(c)
            done = M
            C = torch.cat(codes)
            t = time.perf_counter()
            rec, G = mac.recall(X[:M])
            t_recall = (time.perf_counter() - t) / M
            _, Gn = mac.recall(novel)
            rows.append({"seed": seed, "M": M, "recall_cm": float((rec == C).float().mean()),
                         "recall_exact": float((rec == C).all(1).float().mean()),
                         "auc": auc(G, Gn), "G_stored": float(G.mean()), "G_novel": float(Gn.mean()),
                         "fill": mac.fill(), "fill_theory": 1 - math.exp(-M * a / (N * K)),
                         "store_s_per_trace": t_store, "recall_s_per_trace": t_recall})
    out = []
    for M in Ms:
        r = [x for x in rows if x["M"] == M]
        out.append({k: (statistics.median([x[k] for x in r]) if k != "M" else M) for k in r[0] if k != "seed"})
    return out


def throughput(N, Q, K, a, B, repeats):
    gen = torch.Generator().manual_seed(7)
    X = patterns(B, N, a, gen)
    res = {}
    for backend in (["c"] if mem_cpu.available() else []) + ["torch"]:
        n = B if backend == "c" else min(B, 500)

        def run():
            mac = Macrocolumn(N, Q, K, seed=0, backend=backend, theta_sat=None)
            mac.store(X[:n])
            return mac
        t, mac = timed(run, repeats)
        res[f"stores_per_s_{backend}"] = n / t
    mac = Macrocolumn(N, Q, K, seed=0, theta_sat=None)
    mac.store(X[: min(B, 150)])
    P = patterns(10 * B, N, a, gen)
    for sums in ["matmul"] + (["packed"] if mem_cpu.available() else []):
        mac.recall(P[:100], sums=sums)                      # warm the dense cache
        t, _ = timed(lambda: mac.recall(P, sums=sums), repeats)
        res[f"recalls_per_s_{sums}"] = len(P) / t
    res["n_store_batch"], res["n_recall_batch"], res["a"] = B, len(P), a
    return res


def state_bytes(mac) -> int:
    """Size of the serialised state_dict (torch.save), i.e. what a checkpoint of the MAC costs."""
    buf = io.BytesIO()
    torch.save(mac.state_dict(), buf)
    return buf.tell()


def storage(N, Q, K, a):
    """Bytes of a MAC without horizontal synapses: packed weights, and the serialised state (weights +
    trace table, which exact forgetting needs) empty and after M* = ln2·N·K/a random traces."""
    mac = Macrocolumn(N, Q, K, horizontal=False, theta_sat=None)
    out = {"QK": Q * K, "weights_packed": mac.nbytes(), "state_dict_empty": state_bytes(mac)}
    M = int(round(math.log(2) * N * K / a))
    mac.store(patterns(M, N, a, torch.Generator().manual_seed(3)))
    out.update({"M": M, "fill": mac.fill(), "state_dict_at_M": state_bytes(mac),
                "trace_bytes_per_trace": (state_bytes(mac) - out["state_dict_empty"]) / M})
    return out


def similarity(N, Q, K, a, n_base, repeats):
    keep = [1.0, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
    rows = {k: {"learn": [], "recall": []} for k in keep}
    for seed in range(repeats):
        gen = torch.Generator().manual_seed(50 + seed)
        base = patterns(n_base, N, a, gen)
        mac = Macrocolumn(N, Q, K, seed=seed, theta_sat=None)
        cb, _ = mac.store(base)
        for k in keep:
            var = base.clone()                           # keep a fraction k of active bits, move the rest
            for i in range(n_base):
                on = torch.nonzero(var[i]).reshape(-1)
                off = torch.nonzero(var[i] == 0).reshape(-1)
                m = int(round((1 - k) * a))
                var[i, on[torch.randperm(len(on), generator=gen)[:m]]] = 0
                var[i, off[torch.randperm(len(off), generator=gen)[:m]]] = 1
            cr, _ = mac.recall(var)
            probe = Macrocolumn.from_state_dict(mac.state_dict())
            cl, _ = probe.store(var)
            rows[k]["recall"].append(float((cr == cb).float().mean()))
            rows[k]["learn"].append(float((cl == cb).float().mean()))
    return [{"input_overlap": k, "code_overlap_learning": statistics.median(v["learn"]),
             "code_overlap_recall": statistics.median(v["recall"])} for k, v in rows.items()]


def plot(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cap = result["capacity"]
    M = [r["M"] for r in cap]
    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    a = ax[0, 0]
    a.plot(M, [r["recall_cm"] for r in cap], "o-", label="recall (fraction of CMs)")
    a.plot(M, [r["recall_exact"] for r in cap], "s-", label="exact-code rate")
    a.plot(M, [r["auc"] for r in cap], "^-", label="familiarity AUC stored vs novel")
    a.axvline(result["config"]["M_star"], color="gray", ls=":", label="M* (50 % fill, theory)")
    a.set_xlabel("stored traces M"), a.legend(fontsize=8), a.set_title("recall and familiarity")
    a = ax[0, 1]
    a.plot(M, [r["fill"] for r in cap], "o-", label="measured")
    a.plot(M, [r["fill_theory"] for r in cap], "--", label="1 - exp(-M a / (N K))")
    a.set_xlabel("stored traces M"), a.set_ylabel("fraction of weights set"), a.legend(fontsize=8)
    a = ax[1, 0]
    a.plot(M, [1e6 * r["store_s_per_trace"] for r in cap], "o-", label="store")
    a.plot(M, [1e6 * r["recall_s_per_trace"] for r in cap], "s-", label="recall (batched)")
    a.set_xlabel("stored traces M"), a.set_ylabel("µs per trace"), a.legend(fontsize=8)
    a.set_ylim(bottom=0)
    a = ax[1, 1]
    sim = result["similarity"]
    a.plot([r["input_overlap"] for r in sim], [r["code_overlap_learning"] for r in sim], "o-", label="learning (draw)")
    a.plot([r["input_overlap"] for r in sim], [r["code_overlap_recall"] for r in sim], "s-", label="retrieval (argmax)")
    a.plot([0, 1], [1 / result["config"]["K"], 1], ":", color="gray", label="chance .. identity")
    a.set_xlabel("input overlap with stored pattern"), a.set_ylabel("code overlap (fraction of CMs)")
    a.legend(fontsize=8), a.set_title("similarity preservation")
    c = result["config"]
    fig.suptitle(f"Sparsey MAC N={c['N']} Q={c['Q']} K={c['K']} a={c['a']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--N", type=int, default=784)
    ap.add_argument("--Q", type=int, default=32)
    ap.add_argument("--K", type=int, default=16)
    ap.add_argument("--a", type=int, default=40, help="active inputs per pattern")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="fewer points and repeats (smoke run)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args(argv)
    N, Q, K, a = args.N, args.Q, args.K, args.a
    reps = 2 if args.quick else args.repeats
    M_star = math.log(2) * N * K / a
    fr = [0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0] if not args.quick else [0.25, 0.5, 1.0, 1.5]
    Ms = sorted({max(1, int(round(f * M_star))) for f in fr})
    torch.set_num_threads(1)     # capacity / similarity sweeps: small ops, 1 thread avoids pool wake-ups
    result = {
        "command": " ".join([sys.executable.split("/")[-1]] + sys.argv),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                    "loadavg_at_start": os.getloadavg()},
        "config": {"N": N, "Q": Q, "K": K, "a": a, "M_star": M_star, "repeats": reps,
                   "c_fast_path": mem_cpu.available(), "params": Macrocolumn(N, Q, K).params.as_dict()},
        "note": "medians over repeats (seeds); stores are batched and sequential in their learning semantics",
    }
    t0 = time.perf_counter()
    result["capacity"] = capacity(N, Q, K, a, Ms, reps)
    result["throughput"] = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        result["throughput"][f"threads{threads}"] = {
            "a40": throughput(N, Q, K, a, 2000, reps), "a150_mnist_like": throughput(N, Q, K, 150, 2000, reps)}
    torch.set_num_threads(1)
    result["similarity"] = similarity(N, Q, K, a, 50 if not args.quick else 20, reps)
    result["storage_bytes"] = {f"N784_Q{q}_K16": storage(784, q, 16, a) for q in (32, 64)}
    result["wall_s"] = time.perf_counter() - t0
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sparsey.json").write_text(json.dumps(result, indent=2))
    plot(result, out / "sparsey.png")
    print(json.dumps({k: result[k] for k in ("throughput", "storage_bytes", "wall_s")}, indent=2))
    for r in result["capacity"]:
        print(f"M={r['M']:4d} fill={r['fill']:.3f} (theory {r['fill_theory']:.3f}) recall_cm={r['recall_cm']:.4f} "
              f"exact={r['recall_exact']:.3f} auc={r['auc']:.3f} store={1e6 * r['store_s_per_trace']:.1f}us "
              f"recall={1e6 * r['recall_s_per_trace']:.1f}us")
    print(f"wrote {out / 'sparsey.json'} and {out / 'sparsey.png'}")


if __name__ == "__main__":
    main()
