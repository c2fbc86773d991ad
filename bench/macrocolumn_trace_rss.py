"""RSS growth of ``Macrocolumn.trace()`` on a large memory (issue: 500 calls at 20k traces).

Stores ``--traces`` random binary patterns (N = 784, Q = 32, K = 16, no critical period), then calls
``trace(i)`` ``--calls`` times on spread-out ids, keeping every returned dict (the worst case: a
caller that collects them), and reports the resident-set growth (``/proc/self/status`` VmRSS)
over those calls. ``--legacy`` also measures the former implementation (each call converted whole
trace-table columns to int64 and returned a view of one) in a fresh subprocess, for comparison.

    python bench/macrocolumn_trace_rss.py [--traces 20000] [--calls 500] [--legacy] [--out PATH]

Runs in ~10-30 s on 2 cores; writes JSON (default ``bench/results/macrocolumn_trace_rss.json``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spiking.memory import Macrocolumn  # noqa: E402
from spiking.memory.csa import unpack_bits  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def legacy_trace(mac: Macrocolumn, tid: int) -> dict:
    """The former ``trace()``: whole columns converted to int64 per call, ``prev`` a view of one."""
    prev = mac.traces["prev"].long()[tid]
    return {"x": unpack_bits(mac.traces["x"][tid], mac.N), "code": mac.traces["code"].long()[tid].clone(),
            "prev": None if bool((prev < 0).all()) else prev, "written": bool(mac.traces["written"][tid])}


def measure(n_traces: int, calls: int, legacy: bool) -> dict:
    torch.manual_seed(0)
    mac = Macrocolumn(784, Q=32, K=16, theta_sat=None, horizontal=False, seed=0)
    x = (torch.rand(n_traces, 784) < 0.1).to(torch.uint8)
    for i in range(0, n_traces, 1000):
        mac.store(x[i:i + 1000])
    base = rss_mb()
    ids = torch.linspace(0, n_traces - 1, calls).long().tolist()
    kept = [legacy_trace(mac, i) if legacy else mac.trace(i) for i in ids]
    grown = rss_mb() - base
    return {"impl": "legacy" if legacy else "current", "traces": len(mac), "calls": len(kept),
            "rss_before_mb": base, "rss_growth_mb": grown}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=int, default=20_000)
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--legacy", action="store_true", help="also measure the former implementation")
    ap.add_argument("--impl", choices=("current", "legacy"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "macrocolumn_trace_rss.json"))
    args = ap.parse_args()
    if args.impl:  # worker: one implementation in a fresh process
        print(json.dumps(measure(args.traces, args.calls, args.impl == "legacy")))
        return
    load0 = os.getloadavg()
    rows = []
    for impl in ("current", "legacy") if args.legacy else ("current",):
        cmd = [sys.executable, __file__, "--traces", str(args.traces), "--calls", str(args.calls), "--impl", impl]
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
        print(f"{impl:8s} {rows[-1]['calls']} calls on {rows[-1]['traces']} traces: "
              f"RSS +{rows[-1]['rss_growth_mb']:.1f} MB")
    doc = {"command": " ".join([sys.executable, *sys.argv]), "rows": rows,
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
           "versions": {"torch": torch.__version__, "python": platform.python_version()},
           "loadavg_start": load0, "loadavg_end": os.getloadavg()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
