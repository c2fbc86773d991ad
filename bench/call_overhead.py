"""Host cost of one neuron-layer call: what a small or mid-sized step pays before any arithmetic.

On a tiny input (default x [4, 1, 32]: the arithmetic is negligible) every implementation is called
``--inner`` times in a row, ``--reps`` times, interleaved (rep 1 of every implementation, then rep 2,
...); reported: the median (and min-max) microseconds per call, for the forward under ``no_grad``
and for forward + backward (x requires grad, an upstream gradient is given). On a GPU the inner
loop ends with a synchronize; the kernels are far shorter than their launches, so the time is the
host's. Ours use default arguments (what users run: backend "auto", input checks on).

  LIF()                   spiking.LIF, the fused LIF (CPU extension / CuPy kernels)
  LIF(check_inputs=False) the same without the NaN/inf check (on a GPU the check reads a flag: a sync)
  IF()                    spiking.IF, the neuron template's fused path
  snntorch / norse        their per-step LIF loops (bench/lif_throughput.py's peer modules)
  spikingjelly            LIFNode multi-step, torch backend (when installed)
  torch x*2 (floor)       one elementwise torch op: the least any differentiable call costs
  ... [CuPy launch]       (GPU only) LIF() / IF() with SPIKING_CUDA_LAUNCH=cupy: the kernels launched
                          through CuPy and a Python autograd.Function instead of the default C++
                          launcher (the reference for the launcher's saving, in the same run)

Writes JSON (command, machine, versions, load average at start and end) to
bench/results/call_overhead_{cpu,gpu}.json.

Usage: python bench/call_overhead.py [--device cpu|cuda] [--T 4 --B 1 --N 32] [--inner 2000 --reps 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import spiking  # noqa: E402
from _record import write_record  # noqa: E402  (bench/ is the script folder, first on sys.path)
from lif_throughput import (CUPY_LAUNCH_ENV, NorseLIF, SnnTorchLIF, SpikingJellyLIF, _env, _machine, _try,  # noqa: E402
                            _versions)


class Floor(nn.Module):
    """``x * 2``: one differentiable elementwise op."""

    def forward(self, x):
        return x * 2.0


# rows timed with these environment variables set (GPU only): the Python/CuPy launchers
CUPY_LAUNCH = {"LIF() [CuPy launch]": lambda: spiking.LIF(), "IF() [CuPy launch]": lambda: spiking.IF()}
ENV = {name: CUPY_LAUNCH_ENV for name in CUPY_LAUNCH}




def implementations(device: str = "cpu") -> dict:
    cands = {
        "LIF()": lambda: spiking.LIF(),
        "LIF(check_inputs=False)": lambda: spiking.LIF(check_inputs=False),
        "IF()": lambda: spiking.IF(),
        "snntorch": SnnTorchLIF,
        "norse-lifbox": NorseLIF,
        "spikingjelly": SpikingJellyLIF,
        "torch x*2 (floor)": Floor,
        **(CUPY_LAUNCH if device == "cuda" else {}),
    }
    out = {}
    for name, f in cands.items():
        g = _try(f)
        if g is not None:
            out[name] = g
    return out


def _loop(module, x, g, backward: bool, inner: int) -> float:
    """Seconds per call over ``inner`` calls (synchronized at the end on a GPU)."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    if backward:
        xg = x.detach().requires_grad_()
        sync()
        t0 = time.perf_counter()
        for _ in range(inner):
            xg.grad = None
            module(xg).backward(g)
    else:
        sync()
        with torch.no_grad():
            t0 = time.perf_counter()
            for _ in range(inner):
                module(x)
    sync()
    return (time.perf_counter() - t0) / inner


def run(args) -> dict:
    device = torch.device(args.device)
    x = torch.rand(args.T, args.B, args.N, device=device) * 2.0
    g = torch.randn_like(x)
    modules = {name: f().to(device) for name, f in implementations(args.device).items()}
    rows = {}
    for mode, backward in (("forward", False), ("forward_backward", True)):
        times = {name: [] for name in modules}
        for name, m in modules.items():  # warm-up: builds, first-call compiles, allocator
            with _env(ENV.get(name, {})):
                _loop(m, x, g, backward, max(1, args.inner // 10))
        for _ in range(args.reps):
            for name, m in modules.items():
                with _env(ENV.get(name, {})):
                    times[name].append(_loop(m, x, g, backward, args.inner))
        res = {name: {"median_us": statistics.median(ts) * 1e6, "min_us": min(ts) * 1e6, "max_us": max(ts) * 1e6}
               for name, ts in times.items()}
        peers = [k for k in ("snntorch", "norse-lifbox", "spikingjelly") if k in res]
        summary = {}
        if peers:
            best = min(peers, key=lambda k: res[k]["median_us"])
            summary = {"fastest_peer": best,
                       "ratio_fastest_peer_vs_LIF()": res[best]["median_us"] / res["LIF()"]["median_us"]}
        summary["ratio_LIF()_vs_floor"] = res["LIF()"]["median_us"] / res["torch x*2 (floor)"]["median_us"]
        for name in CUPY_LAUNCH:  # what the C++ launcher saves per call
            if name in res:
                own = name.split(" [")[0]
                summary[f"ratio_{name}_vs_{own}"] = res[name]["median_us"] / res[own]["median_us"]
        rows[mode] = {"results": res, "summary": summary}
        for name, r in sorted(res.items(), key=lambda kv: kv[1]["median_us"]):
            print(f"{mode:17s} {name:26s} {r['median_us']:8.1f} us/call  [{r['min_us']:.1f}-{r['max_us']:.1f}]",
                  flush=True)
        print(f"{mode:17s} {summary}", flush=True)
    return rows


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--T", type=int, default=4)
    ap.add_argument("--B", type=int, default=1)
    ap.add_argument("--N", type=int, default=32)
    ap.add_argument("--inner", type=int, default=2000, help="calls per timed repetition")
    ap.add_argument("--reps", type=int, default=7, help="timed repetitions (median)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.inner < 1 or args.reps < 1 or min(args.T, args.B, args.N) < 1:
        ap.error("--inner, --reps, --T, --B and --N must be positive")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or ROOT / "bench" / "results" / f"call_overhead_{'gpu' if args.device == 'cuda' else 'cpu'}.json"
    record = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git_commit": _git_commit(),
        "machine": _machine(args.device) | {"torch_threads": torch.get_num_threads()},
        "versions": _versions(),
        "args": vars(args) | {"out": str(out)},
    }
    if args.device == "cuda" and not torch.cuda.is_available():
        record["skipped"] = "no CUDA device visible"
        print(record["skipped"])
    else:
        record["rows"] = run(args)
    write_record(record, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
