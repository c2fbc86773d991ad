"""LIF throughput: spiking's fused kernels against snnTorch, Norse, SpikingJelly and plain torch.

One run measures every implementation on every workload with interleaved repetitions (rep 1 of
all implementations, then rep 2, ...), so machine noise hits all of them alike, at each torch
thread count asked for (CPU default: 1 and 2); it reports the median and min-max wall time,
neuron-updates/s (T·B·N / time) and the ratio of ours to the fastest peer measured in the same
run, and writes JSON (command, machine, versions, load average at start and end) to
bench/results/lif_throughput_{cpu,gpu}.json.

"Ours" (``spiking``) is what a user calls: ``LIF(tau=2.0, v_threshold=1.0, v_reset=0.0)`` with
every other argument at its default (backend "auto", NaN/inf check on). ``spiking-unchecked``
(``check_inputs=False``) and ``spiking-torch`` (the torch reference backend) are reference rows,
not peers. Targets on the defaults, against the fastest peer of the same run and thread count:
lif_fwd >= 3x, lif_fwd_bwd >= 3x, net >= 1.3x; and the default within 10 % of the unchecked row.

Workloads (all LIF: tau = 2, V_th = 1, hard reset to 0, each library's default surrogate unless
stated):
  lif_fwd        LIF only, x [100, 64, 4096], forward under no_grad
  lif_fwd_bwd    LIF only, same x, forward + backward (upstream gradient given)
  net            Linear(784,1000) -> LIF -> Linear(1000,10) over T = 25, batch 128; the image is
                 fed at every step (fc1 on all T·B rows), logits averaged over T, CE + backward
  net_static     the same net with fc1 computed once per image (direct encoding: the input is
                 constant over T, so fc1(x) is too); every implementation gets the same treatment
  lif_fwd_bwd_large  (GPU only) lif_fwd_bwd at batch 256: with a fixed host cost per call, the
                 kernels' share of a step and so the roofline fraction grow with the problem size
  gpu_linear_n   (GPU only) Linear(n,n) -> LIF, batch 16, T = 500, n in {4096, 8192, 16384},
                 forward + backward (Open Neuromorphic benchmark shape)

Rows: ``spiking`` is LIF(...) with default arguments (what users run), ``spiking-unchecked`` the
same with check_inputs=False, ``spiking-torch`` our torch reference path; on a GPU
``spiking-cupy-launch`` is the default LIF with ``SPIKING_CUDA_LAUNCH=cupy`` (kernels launched through
CuPy and a Python autograd.Function instead of the default C++ launcher), and the LIF-alone
workloads also get ``spiking-graphed``: the default LIF's whole step (forward, or forward +
backward) captured once in a CUDA graph (``torch.cuda.graph``; the NaN/inf check is off during
capture) and replayed, which removes the host's per-call cost and leaves the kernels' time. The
roofline is given for the default row and, where present, the graphed one.

Usage: python bench/lif_throughput.py [--quick] [--reps 7] [--threads 1,2] [--device cpu|cuda] [--out PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import spiking  # noqa: E402
from spiking.kernels import auto_backend  # noqa: E402
from spiking.neuron.module import LIF  # noqa: E402

TAU = 2.0
OURS = "spiking"  # LIF(...) with default arguments
GRAPHED = "spiking-graphed"  # the same, its step captured in a CUDA graph (GPU, LIF-alone workloads)
CUPY_LAUNCH = "spiking-cupy-launch"  # the default LIF launched through CuPy and Python (GPU)
CUPY_LAUNCH_ENV = {"SPIKING_CUDA_LAUNCH": "cupy"}
ENV = {CUPY_LAUNCH: CUPY_LAUNCH_ENV}  # rows set up and timed with these environment variables
NOT_PEERS = {"spiking", "spiking-unchecked", "spiking-torch", GRAPHED, CUPY_LAUNCH}
TARGETS = {"lif_fwd": 3.0, "lif_fwd_bwd": 3.0, "net": 1.3}  # ours / fastest peer, on defaults


# ---------------------------------------------------------------------------------------------
# implementations: each factory returns a fresh module mapping x [T, B, N] -> spikes [T, B, N].
# Per-step loops use x.unbind(0): indexing x[t] of a grad-requiring x makes autograd build a
# full-size zero gradient per step (O(T^2) traffic), which would make the peers look far slower.


class OursLIF(nn.Module):
    """``LIF(tau, v_threshold, v_reset)`` plus only the keyword arguments given (none: the defaults)."""

    def __init__(self, **kwargs):
        super().__init__()
        self.lif = LIF(tau=TAU, v_threshold=1.0, v_reset=0.0, **kwargs)

    def forward(self, x):
        return self.lif(x)


class TorchLoopLIF(nn.Module):
    """A plain per-step torch loop (SpikingJelly equations, sigmoid surrogate alpha = 4)."""

    class _Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z):
            ctx.save_for_backward(z)
            return (z >= 0).to(z.dtype)

        @staticmethod
        def backward(ctx, g):
            (z,) = ctx.saved_tensors
            s = torch.sigmoid(4.0 * z)
            return g * 4.0 * s * (1.0 - s)

    def forward(self, x):
        v = torch.zeros_like(x[0])
        out = []
        for xt in x.unbind(0):
            h = v + (xt - v) / TAU
            s = self._Spike.apply(h - 1.0)
            v = h * (1.0 - s)
            out.append(s)
        return torch.stack(out)


class SnnTorchLIF(nn.Module):
    """snnTorch Leaky (beta = 1 - 1/tau, reset "zero", default atan surrogate), loop over T."""

    def __init__(self):
        super().__init__()
        import snntorch as snn

        self.leaky = snn.Leaky(beta=1.0 - 1.0 / TAU, threshold=1.0, reset_mechanism="zero")

    def forward(self, x):
        mem = torch.zeros_like(x[0])
        out = []
        for xt in x.unbind(0):
            spk, mem = self.leaky(xt, mem)
            out.append(spk)
        return torch.stack(out)


class NorseLIF(nn.Module):
    """Norse LIFBoxCell (tau_mem_inv = 500 at dt = 1e-3 is tau = 2 steps, default SuperSpike), loop over T."""

    def __init__(self):
        super().__init__()
        from norse.torch import LIFBoxCell, LIFBoxParameters

        p = LIFBoxParameters(tau_mem_inv=torch.tensor(1.0 / (TAU * 1e-3)), v_leak=torch.tensor(0.0),
                             v_th=torch.tensor(1.0), v_reset=torch.tensor(0.0))
        self.cell = LIFBoxCell(p, dt=1e-3)

    def forward(self, x):
        state = None
        out = []
        for xt in x.unbind(0):
            z, state = self.cell(xt, state)
            out.append(z)
        return torch.stack(out)


class SpikingJellyLIF(nn.Module):
    """SpikingJelly LIFNode, multi-step (default Sigmoid surrogate). SpikingJelly 2 sends CUDA tensors
    to its own fused kernels (Triton / native CUDA) by itself: the row is its fused GPU path."""

    def __init__(self):
        super().__init__()
        from spikingjelly.activation_based import functional, neuron

        self.node = neuron.LIFNode(tau=TAU, v_threshold=1.0, v_reset=0.0, step_mode="m")
        self._reset = functional.reset_net

    def forward(self, x):
        self._reset(self.node)
        return self.node(x)


def _try(factory: Callable[[], nn.Module]) -> Optional[Callable[[], nn.Module]]:
    try:
        factory()
    except Exception as exc:  # library not installed / backend not available
        print(f"  skipped: {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", flush=True)
        return None
    return factory


def implementations(device: str) -> dict[str, Callable[[], nn.Module]]:
    cands: dict[str, Callable[[], nn.Module]] = {}
    cands["spiking"] = OursLIF
    cands["spiking-unchecked"] = lambda: OursLIF(check_inputs=False)
    cands["spiking-torch"] = lambda: OursLIF(backend="torch")
    cands["torch-loop"] = TorchLoopLIF
    cands["snntorch"] = SnnTorchLIF
    cands["norse-lifbox"] = NorseLIF
    cands["spikingjelly"] = SpikingJellyLIF
    if device == "cuda":
        cands[GRAPHED] = graphed_ours
        cands[CUPY_LAUNCH] = OursLIF
    out = {}
    for name, f in cands.items():
        print(f"implementation {name}", flush=True)
        g = _try(f)
        if g is not None:
            out[name] = g
    return out


@contextlib.contextmanager
def _env(values: dict):
    """Environment variables set for the block (restored after)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---------------------------------------------------------------------------------------------
# workloads: each returns (setup(factory) -> step callable, neuron updates per step)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _graph_replay(step: Callable[[], None]) -> Callable[[], None]:
    """``step`` captured once in a CUDA graph after three warm-up calls on a side stream (the
    runner's helpers, ``spiking.runner.cuda_graph``); returns the replay."""
    from spiking.runner.cuda_graph import capture_cuda_graph, warm_on_side_stream

    for _ in range(3):
        warm_on_side_stream(step)
    return capture_cuda_graph(step)[0]


def _graphed(factory) -> bool:
    return getattr(factory, "graphed", False)


def graphed_ours():
    """Factory of the graphed row: the default LIF; the workload captures its step."""
    return OursLIF()


graphed_ours.graphed = True


def lif_fwd(shape, device):
    x = torch.randn(shape, device=device) * 0.8 + 0.6

    def setup(factory):
        m = factory().to(device)

        def step():
            with torch.no_grad():
                m(x)
        return _graph_replay(step) if _graphed(factory) else step
    return setup, shape[0] * shape[1] * shape[2]


def lif_fwd_bwd(shape, device):
    x = (torch.randn(shape, device=device) * 0.8 + 0.6).requires_grad_()
    g = torch.randn(shape, device=device)

    def setup(factory):
        m = factory().to(device)

        def step():
            x.grad = None
            m(x).backward(g)
        return _graph_replay(step) if _graphed(factory) else step
    return setup, shape[0] * shape[1] * shape[2]


class Net(nn.Module):
    def __init__(self, lif: nn.Module, n_in: int, n_hidden: int, n_out: int, steps: int, static: bool):
        super().__init__()
        self.fc1, self.lif, self.fc2 = nn.Linear(n_in, n_hidden), lif, nn.Linear(n_hidden, n_out)
        self.steps, self.static = steps, static

    def forward(self, x):  # x [B, n_in]
        if self.static:
            cur = self.fc1(x).unsqueeze(0).expand(self.steps, -1, -1)
        else:
            cur = self.fc1(x.unsqueeze(0).expand(self.steps, -1, -1))
        return self.fc2(self.lif(cur)).mean(0)


def net(steps, batch, device, static):
    torch.manual_seed(0)
    x = torch.rand(batch, 784, device=device) * 2.0
    y = torch.randint(0, 10, (batch,), device=device)

    def setup(factory):
        torch.manual_seed(1)
        m = Net(factory(), 784, 1000, 10, steps, static).to(device)

        def step():
            m.zero_grad(set_to_none=True)
            F.cross_entropy(m(x), y).backward()
        return step
    return setup, steps * batch * 1000


def gpu_linear(n, steps, batch, device):
    torch.manual_seed(0)
    x = torch.randn(steps, batch, n, device=device)

    def setup(factory):
        torch.manual_seed(1)
        fc = nn.Linear(n, n, bias=False).to(device)
        nn.init.normal_(fc.weight, std=2.0 / n ** 0.5)
        lif = factory().to(device)

        def step():
            fc.zero_grad(set_to_none=True)
            lif(fc(x)).sum().backward()
        return step
    return setup, steps * batch * n


# ---------------------------------------------------------------------------------------------


PAIRED = ("spiking", "spiking-unchecked")  # compared with each other: always adjacent, order alternating


def rep_order(names: list, rep: int) -> list:
    """Order of one rep: the units (PAIRED as one unit, every other implementation alone) rotated
    by ``rep`` (who runs right after the previous one's memory churn changes every rep), PAIRED in
    alternating order, so neither of the pair is systematically the one that follows a peer."""
    pair = [n for n in PAIRED if n in names]
    units = [pair] if pair else []
    units += [[n] for n in names if n not in PAIRED]
    first = rep % max(1, len(units))
    units = units[first:] + units[:first]
    return [n for unit in units for n in (unit if rep % 2 == 0 else unit[::-1])]


def measure(workload_name, setup, updates, impls, reps, device):
    """Interleaved repetitions: every rep runs each implementation once (after one warm-up each),
    in the order of :func:`rep_order`."""
    steps = {}
    for name, factory in impls.items():
        try:
            with _env(ENV.get(name, {})):
                steps[name] = setup(factory)
                steps[name]()  # warm-up (JIT builds, allocator)
                _sync(device)
        except Exception as exc:
            print(f"  {workload_name}/{name} failed: {exc.__class__.__name__}: {exc}", flush=True)
    # On a GPU one step can take well under a millisecond, where launch and host-sync overheads
    # would dominate a single timed call: each rep there times `inner` back-to-back steps (chosen
    # from a second warm-up so that a rep lasts >= 20 ms) and reports the time per step.
    inner = {}
    for name, step in list(steps.items()):
        inner[name] = 1
        if device == "cuda":
            try:
                _sync(device)
                t0 = time.perf_counter()
                with _env(ENV.get(name, {})):
                    step()
                _sync(device)
            except Exception as exc:
                print(f"  {workload_name}/{name} failed: {exc.__class__.__name__}: {exc}", flush=True)
                del steps[name]
                continue
            inner[name] = max(1, min(200, int(0.02 / max(time.perf_counter() - t0, 1e-6)) + 1))
    times = {name: [] for name in steps}
    for rep in range(reps):
        for name in rep_order(list(steps), rep):
            step = steps[name]
            with _env(ENV.get(name, {})):
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(inner[name]):
                    step()
                _sync(device)
            times[name].append((time.perf_counter() - t0) / inner[name])
    res = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        res[name] = {"median_s": med, "min_s": min(ts), "max_s": max(ts), "times_s": ts, "steps_per_rep": inner[name],
                     "updates_per_s_median": updates / med, "updates_per_s_min_max": [updates / max(ts),
                                                                                      updates / min(ts)]}
    ours = OURS
    peers = {k: v for k, v in res.items() if k not in NOT_PEERS}
    summary = {}
    if ours in res and peers:
        best = min(peers, key=lambda k: peers[k]["median_s"])
        summary = {"fastest_peer": best, "ours": ours,
                   "ratio_ours_vs_fastest_peer": peers[best]["median_s"] / res[ours]["median_s"]}
        for ref, key in (("spiking-unchecked", "ratio_default_vs_unchecked"),
                         ("spiking-torch", "ratio_ours_vs_our_torch_reference"),
                         (CUPY_LAUNCH, "ratio_cpp_launch_vs_cupy_launch")):
            if ref in res:
                summary[key] = res[ref]["median_s"] / res[ours]["median_s"]
    for name, r in sorted(res.items(), key=lambda kv: kv[1]["median_s"]):
        print(f"  {workload_name:>18s} {name:>18s}: {r['median_s'] * 1e3:9.2f} ms "
              f"[{r['min_s'] * 1e3:.2f}-{r['max_s'] * 1e3:.2f}]  {r['updates_per_s_median'] / 1e6:9.1f} M updates/s",
              flush=True)
    if summary:
        print(f"  {workload_name:>18s} ours / fastest peer ({summary['fastest_peer']}): "
              f"{summary['ratio_ours_vs_fastest_peer']:.2f}x; default / unchecked speed "
              f"{summary.get('ratio_default_vs_unchecked', float('nan')):.2f}", flush=True)
    return {"neuron_updates": updates, "results": res, "summary": summary}


def _versions():
    out = {"python": platform.python_version(), "torch": torch.__version__, "spiking": spiking.__version__}
    from importlib import metadata

    for mod in ("numpy", "snntorch", "norse", "spikingjelly", "cupy"):
        try:
            m = __import__(mod)
        except Exception:
            out[mod] = None
            continue
        v = getattr(m, "__version__", None)
        if v is None:
            try:
                v = metadata.version(mod)
            except metadata.PackageNotFoundError:
                v = "installed (version unknown)"
        out[mod] = v
    return out


def _machine(device):
    cpu_model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"platform": platform.platform(), "cpu": cpu_model, "cpu_count": os.cpu_count(),
            "torch_threads_default": torch.get_num_threads(), "device": device}
    try:
        info["load_avg_at_start"] = os.getloadavg()
    except OSError:
        pass
    if device == "cuda":
        from _record import cuda_launcher  # noqa: PLC0415  (bench/ is the script folder)

        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
        info["cuda_launcher"] = cuda_launcher()
    return info


_bandwidth: dict = {}


def copy_bandwidth(device, nbytes=1 << 30, reps=5):
    """Measured device copy bandwidth (read + write bytes / s): the roofline reference, measured
    once per run so that every roofline fraction of the run uses the same reference."""
    if device in _bandwidth:
        return _bandwidth[device]
    a = torch.empty(nbytes // 4, device=device)
    b = torch.empty_like(a)
    ts = []
    for _ in range(reps + 1):
        _sync(device)
        t0 = time.perf_counter()
        b.copy_(a)
        _sync(device)
        ts.append(time.perf_counter() - t0)
    _bandwidth[device] = 2 * nbytes / statistics.median(ts[1:])
    return _bandwidth[device]


def roofline(r: dict, device: str, name: str = OURS) -> dict:
    """Achieved bytes/s of our fused LIF fwd+bwd (row ``name``) against the device's measured copy
    bandwidth.

    Minimum traffic per neuron-update (float32): forward reads x and writes spikes and H (the
    saved state); backward reads H and dL/dspikes and writes dL/dx: 6 values = 24 bytes.
    """
    bw = copy_bandwidth(device)
    achieved = 6 * 4 * r["neuron_updates"] / r["results"][name]["median_s"]
    return {"row": name, "copy_bandwidth_Bps": bw, "lif_fwd_bwd_achieved_Bps": achieved,
            "fraction_of_copy_bandwidth": achieved / bw, "bytes_per_update": 24}


def check_targets(workloads: dict) -> dict:
    """Per target workload: ours / fastest peer against TARGETS, and default within 10 % of unchecked."""
    out = {}
    for name, want in TARGETS.items():
        summary = workloads.get(name, {}).get("summary", {})
        if "ratio_ours_vs_fastest_peer" not in summary:
            continue
        ratio, unchecked = summary["ratio_ours_vs_fastest_peer"], summary.get("ratio_default_vs_unchecked")
        out[name] = {"ratio": ratio, "target": want, "met": ratio >= want, "default_vs_unchecked": unchecked,
                     "default_within_10pct_of_unchecked": None if unchecked is None else unchecked >= 0.9}
    return out


def _thread_counts(text: Optional[str], device: str) -> list[Optional[int]]:
    if text is None:
        return [1, 2] if device == "cpu" else [None]
    return [int(t) for t in text.split(",")]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--reps", type=int, default=7, help="interleaved repetitions per implementation")
    ap.add_argument("--quick", action="store_true", help="small shapes and 2 reps (smoke test)")
    ap.add_argument("--workloads", default="all", help="comma list: lif_fwd,lif_fwd_bwd,net,net_static,gpu_linear")
    ap.add_argument("--threads", default=None,
                    help="comma list of torch thread counts, each a full pass over the workloads "
                         "(default: 1,2 on CPU, torch's choice on CUDA)")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/lif_throughput_{device}.json)")
    args = ap.parse_args(argv)
    device = args.device
    reps = 2 if args.quick else args.reps
    lif_shape = (20, 8, 1024) if args.quick else (100, 64, 4096)
    net_steps, net_batch = (5, 16) if args.quick else (25, 128)
    gpu_ns = (1024,) if args.quick else (4096, 8192, 16384)
    gpu_steps = 20 if args.quick else 500
    wanted = set(args.workloads.split(",")) if args.workloads != "all" else None

    t_start = time.time()
    impls = implementations(device)
    workloads = {
        "lif_fwd": lambda: lif_fwd(lif_shape, device),
        "lif_fwd_bwd": lambda: lif_fwd_bwd(lif_shape, device),
        "net": lambda: net(net_steps, net_batch, device, static=False),
        "net_static": lambda: net(net_steps, net_batch, device, static=True),
    }
    if device == "cuda":
        # 4x the batch: the kernels' share of a step grows (the host overhead per call is fixed)
        large = (lif_shape[0], 4 * lif_shape[1], lif_shape[2])
        workloads["lif_fwd_bwd_large"] = lambda: lif_fwd_bwd(large, device)
        for n in gpu_ns:
            workloads[f"gpu_linear_{n}"] = lambda n=n: gpu_linear(n, gpu_steps, 16, device)
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / (
        f"lif_throughput_{device}{'_quick' if args.quick else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    runs = {}
    doc = {
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "machine": _machine(device),
        "versions": _versions(),
        "config": {"reps": reps, "quick": args.quick, "lif_shape": lif_shape, "net_steps": net_steps,
                   "net_batch": net_batch, "tau": TAU,
                   "timing": "wall clock per step, median of interleaved reps (on GPU each rep times "
                             "steps_per_rep back-to-back steps and divides)",
                   "ours": OURS, "ours_backend": auto_backend(torch.zeros(2, 2, device=device)),
                   "peers": sorted(k for k in impls if k not in NOT_PEERS), "targets": TARGETS,
                   "notes": "ours is LIF(tau, v_threshold, v_reset) with default arguments (backend auto, NaN/inf "
                            "check on); spiking-unchecked (check_inputs=False) and spiking-torch (reference "
                            "backend) are reference rows, not peers; surrogates are each library's default"},
        "runs": runs,
        "wall_s": None,
    }
    for threads in _thread_counts(args.threads, device):
        if threads is not None:
            torch.set_num_threads(threads)
        label = str(torch.get_num_threads())
        print(f"=== torch threads {label}", flush=True)
        results = {}
        runs[label] = {"torch_threads": torch.get_num_threads(), "workloads": results}
        for wname, make in workloads.items():
            if wanted is not None and not any(wname.startswith(w) for w in wanted):
                continue
            print(f"workload {wname}", flush=True)
            setup, updates = make()
            rows = {k: f for k, f in impls.items() if k != GRAPHED or wname.startswith("lif_fwd")}  # LIF alone
            results[wname] = measure(wname, setup, updates, rows, reps, device)
            if device == "cuda":
                torch.cuda.empty_cache()
                for row, key in ((OURS, wname), (GRAPHED, f"{wname}_graphed")):
                    if wname.startswith("lif_fwd_bwd") and row in results[wname]["results"]:
                        r = runs[label].setdefault("roofline", {})[key] = roofline(results[wname], device, row)
                        print(f"  roofline ({row}): {r['fraction_of_copy_bandwidth']:.1%} of the measured copy "
                              f"bandwidth {r['copy_bandwidth_Bps'] / 1e12:.2f} TB/s", flush=True)
            runs[label]["targets"] = check_targets(results)
            out.write_text(json.dumps(doc, indent=1))  # partial results survive an interrupted run
        for name, t in runs[label]["targets"].items():
            print(f"target {name} @ {label} thread(s): {t['ratio']:.2f}x (>= {t['target']}x: "
                  f"{'met' if t['met'] else 'NOT met'}); default / unchecked speed {t['default_vs_unchecked']:.2f}",
                  flush=True)
    doc["wall_s"] = time.time() - t_start
    doc["machine"]["load_avg_at_end"] = os.getloadavg()
    out.write_text(json.dumps(doc, indent=1))
    print(f"wrote {out} ({doc['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
