"""Host cost of the CUDA neuron launchers, on a machine without a GPU: the C++ launcher against the
Python/CuPy one, everything but the driver's kernel launch.

Both launchers end in the driver's ``cuLaunchKernel`` (CuPy calls it too); what differs is the work
around it: argument checks and packing, output allocation, the autograd node, the backward's
gradient handling. This script runs both on CPU tensors of x [T, B, N] (default [4, 1, 32]) with the
launch itself replaced by a no-op:

  C++ launcher     ``neuron_cuda_node.cpp`` with a do-nothing ``cuLaunchKernel`` (a ctypes callback:
                   its own call costs are counted against the C++ launcher)
  CuPy launcher    ``spiking.kernels.cuda`` / ``neuron_cuda`` with ``_launch`` a no-op: CuPy's own
                   argument packing and stream lookup are left out, and so is the template path's
                   availability check (both count against the CuPy launcher on a GPU)
  torch x*2        one elementwise torch op (the floor of any differentiable call)

for LIF (``lif_multistep(backend="cupy")``) and IF (``multistep.run(..., "cupy")``), the NaN/inf
check off (the runner's setting on CUDA), forward under ``no_grad`` and forward + backward; median
microseconds per call over ``--reps`` interleaved repetitions of ``--inner`` calls. The kernels do not
run, so the outputs are garbage: this times the host path only. It is a CPU stand-in for the GPU
measurement (``bench/call_overhead.py --device cuda``), which includes the launches and the real
allocator, on a slower or faster host.

Usage: python bench/launch_host_cost.py [--inner 2000 --reps 7] [--out PATH]
"""
from __future__ import annotations

import argparse
import ctypes
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import spiking  # noqa: E402
from _record import write_record  # noqa: E402  (bench/ is the script folder, first on sys.path)

sys.path.insert(0, str(ROOT / "tests"))
from cupy_emulation import CAPTURING_T, LAUNCH_T  # noqa: E402  (the driver functions' C signatures)
from spiking.kernels import _common, cuda, neuron_cuda, neuron_cuda_node  # noqa: E402
from spiking.neuron import get_neuron, multistep  # noqa: E402

_null_launch = LAUNCH_T(lambda *args: 0)
_not_capturing = CAPTURING_T(lambda stream, status: 0)


def use(launcher: str) -> None:
    """Route the CUDA wrappers' eager calls, on CPU tensors, through ``launcher`` ("c++" or "cupy")
    with no-op launches."""
    ext = neuron_cuda_node.extension().load()
    driver = ext.Driver(ctypes.cast(_null_launch, ctypes.c_void_p).value,
                        ctypes.cast(_not_capturing, ctypes.c_void_p).value, True)
    neuron_cuda_node._ready = neuron_cuda_node.Launcher(ext, driver) if launcher == "c++" else False
    neuron_cuda_node._launched = True
    cuda.kernel_handle = lambda name, dev: 1
    cuda._function = lambda name, dev, source="neurons.cu": name
    cuda._launch = lambda fn, x, n, args: None
    cuda._check_cuda = lambda t, name: None
    neuron_cuda.check_run = lambda x, what: None


def calls(T: int, B: int, N: int) -> dict:
    """``name -> (forward, forward_backward)`` callables on fresh inputs of x [T, B, N]."""
    x = torch.rand(T, B, N) * 2
    g = torch.randn(T, B, N)
    xg = x.clone().requires_grad_()
    lif_cfg, _ = _common.make_config(2.0, 1.0, 0.0, True, False, "sigmoid", False, False)
    if_spec, if_cfg = get_neuron("if"), multistep.make_config(0.0, False, True, "sigmoid")
    if_params = (torch.tensor(1.0), torch.tensor(0.0))

    def lif(v):
        return _common.run_fused(cuda._ops, v, None, lif_cfg, None)[0]

    def if_(v):
        return multistep.run(if_spec, v, if_params, if_cfg, None, "cupy", check_finite=False)[0]

    def fwd(f):
        def call():
            with torch.no_grad():
                f(x)
        return call

    def fwd_bwd(f):
        def call():
            xg.grad = None
            f(xg).backward(g)
        return call

    def floor(v):
        return v * 2.0
    return {name: (fwd(f), fwd_bwd(f)) for name, f in (("LIF", lif), ("IF", if_), ("torch x*2", floor))}


def time_us(call, inner: int) -> float:
    t0 = time.perf_counter()
    for _ in range(inner):
        call()
    return (time.perf_counter() - t0) / inner * 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--T", type=int, default=4)
    ap.add_argument("--B", type=int, default=1)
    ap.add_argument("--N", type=int, default=32)
    ap.add_argument("--inner", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "launch_host_cost_cpu.json")
    args = ap.parse_args(argv)
    if args.inner < 1 or args.reps < 1 or min(args.T, args.B, args.N) < 1:
        ap.error("--inner, --reps, --T, --B and --N must be positive")
    torch.set_num_threads(1)
    rows = {}
    for mode, k in (("forward", 0), ("forward_backward", 1)):
        times: dict = {}
        for _ in range(args.reps + 1):  # the first round is a warm-up
            for launcher in ("c++", "cupy"):
                use(launcher)
                for name, pair in calls(args.T, args.B, args.N).items():
                    if name == "torch x*2" and launcher == "cupy":
                        continue
                    label = name if name == "torch x*2" else f"{name} [{launcher} launcher]"
                    times.setdefault(label, []).append(time_us(pair[k], args.inner))
        res = {label: {"median_us": statistics.median(ts[1:]), "min_us": min(ts[1:]), "max_us": max(ts[1:])}
               for label, ts in times.items()}
        summary = {f"{n}: cupy / c++": res[f"{n} [cupy launcher]"]["median_us"]
                   / res[f"{n} [c++ launcher]"]["median_us"] for n in ("LIF", "IF")}
        rows[mode] = {"results": res, "summary": summary}
        for label, r in res.items():
            print(f"{mode:17s} {label:24s} {r['median_us']:8.1f} us  [{r['min_us']:.1f}-{r['max_us']:.1f}]")
        print(f"{mode:17s} {summary}")
    given = argv if argv is not None else sys.argv[1:]
    record = {"command": " ".join(["python", "bench/launch_host_cost.py", *given]),
              "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                          "torch_threads": 1, "loadavg_start": os.getloadavg()},
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "spiking": spiking.__version__},
              "args": {k: str(v) for k, v in vars(args).items()},
              "what": "host path of one eager call, the kernel launch replaced by a no-op, CPU tensors, "
                      "NaN/inf check off; not a GPU measurement",
              "rows": rows}
    write_record(record, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
