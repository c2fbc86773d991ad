"""Time to the first LIF result in a fresh process, after installation (`spiking build` done).

Each repetition starts a new Python process that imports torch, imports spiking and runs
``LIF()(x)`` on x [25, 64, 800] once; the child reports the three durations, the parent also
times the whole process. Target: the first LIF call (import spiking + first forward, with the
native build cached) <= 3 s. ``--cold`` also times one first call against an empty build cache
(the compile a user without `spiking build` waits for once).

Usage: python bench/first_call.py [--reps 5] [--cold] [--out bench/results/first_call.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 3.0

CHILD = """
import json, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
from spiking import LIF
from spiking.kernels import auto_backend
x = torch.rand(25, 64, 800) * 3
t2 = time.perf_counter()
s = LIF()(x)
t3 = time.perf_counter()
assert s.sum() > 0
print(json.dumps({"import_torch_s": t1 - t0, "import_spiking_s": t2 - t1, "first_lif_call_s": t3 - t2,
                  "backend": auto_backend(x)}))
"""


def one_process(env: dict) -> dict:
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    if res.returncode != 0:
        raise RuntimeError(f"child failed:\n{res.stderr}")
    row = json.loads(res.stdout.strip().splitlines()[-1])
    row["process_wall_s"] = wall
    row["first_result_s"] = row["import_spiking_s"] + row["first_lif_call_s"]
    row["stderr"] = res.stderr.strip()
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5, help="fresh processes with the build cache in place")
    ap.add_argument("--cold", action="store_true", help="also one process against an empty build cache")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "first_call.json"))
    args = ap.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    doc = {"command": " ".join([Path(sys.executable).name] + sys.argv), "load_avg_at_start": os.getloadavg(),
           "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()}, "target_s": TARGET_S}
    subprocess.run([sys.executable, "-m", "spiking.cli", "build"], check=True, env=env, cwd=ROOT,
                   capture_output=True)  # the installation step (a no-op when already cached)
    warm = [one_process(env) for _ in range(args.reps)]
    keys = ("import_torch_s", "import_spiking_s", "first_lif_call_s", "first_result_s", "process_wall_s")
    doc["warm"] = {"runs": warm, "median": {k: statistics.median(r[k] for r in warm) for k in keys}}
    doc["warm"]["met"] = doc["warm"]["median"]["first_result_s"] <= TARGET_S
    doc["warm"]["backends"] = sorted({r["backend"] for r in warm})
    if args.cold:
        with tempfile.TemporaryDirectory() as cache:
            doc["cold"] = one_process(dict(env, SPIKING_CACHE=cache))
    doc["load_avg_at_end"] = os.getloadavg()
    med = doc["warm"]["median"]
    print(f"first LIF result after install (median of {args.reps} fresh processes): import spiking + first call "
          f"{med['first_result_s']:.2f} s (target <= {TARGET_S} s: {'met' if doc['warm']['met'] else 'NOT met'}); "
          f"import torch {med['import_torch_s']:.2f} s; whole process {med['process_wall_s']:.2f} s")
    if args.cold:
        print(f"cold (empty build cache): first call {doc['cold']['first_lif_call_s']:.1f} s; "
              f"stderr: {doc['cold']['stderr']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
