"""Neuron-family throughput: every neuron (default arguments) against its nearest peer.

For each neuron, ours (module with default arguments: backend "auto", i.e. the fused template
kernels on CPU float32, input checks on) and the nearest peer's per-step loop are timed on the
same x [T, B, N] in interleaved repetitions (rep 1 of every implementation, then rep 2, ...):
forward under no_grad, and forward + backward (x requires grad, upstream gradient given). Reported:
median and min-max seconds, neuron-updates/s (T·B·N / time) and ours/peer speed-up.

  IF       vs SpikingJelly IFNode (step_mode="m", torch backend: a per-step loop)
  PLIF     vs SpikingJelly ParametricLIFNode (same)
  ALIF     vs Norse LSNNCell (adaptive threshold), per-step loop
  CubaLIF  vs snnTorch Synaptic, per-step loop
  LI       vs Norse LIBoxCell, per-step loop
  RLIF     vs snnTorch RLeaky (all-to-all), per-step loop, at N = --rlif-n. Both do the same three
           dense matmuls (per step S_{t-1} W^T and (dL/dI_t) W, and dL/dW), so the RLIF row also
           reports their time alone ("matmul_floor": T addmm [B,N]x[N,N], T mm, one
           [N,TB]x[TB,N]) and the speed-up a path doing nothing but them would have
(LIF keeps its dedicated kernel and its own bench, bench/lif_throughput.py.)

Writes JSON (command, machine, versions, os.getloadavg() at start and end) to
bench/results/neuron_throughput_{cpu,gpu}.json. --device cuda runs the GPU rows when a GPU is
visible (skipped with a note otherwise).

Usage: python bench/neuron_throughput.py [--T 100 --B 64 --N 4096 --rlif-n 512 --reps 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import spiking  # noqa: E402


class PeerLoop(nn.Module):
    """A peer's single-step cell run over T (x.unbind(0): no per-step full-size zero gradients)."""

    def __init__(self, step, *cells: nn.Module):
        super().__init__()
        self.step = step
        self.cells = nn.ModuleList(cells)  # registered, so .to(device) moves their parameters

    def forward(self, x):
        return torch.stack(self.step(x))


def _snn_synaptic():
    import snntorch

    cell = snntorch.Synaptic(alpha=0.5, beta=0.5)

    def step(x):
        syn, mem = cell.init_synaptic()
        out = []
        for xt in x.unbind(0):
            spk, syn, mem = cell(xt, syn, mem)
            out.append(spk)
        return out
    return PeerLoop(step, cell)


def _snn_rleaky(n):
    import snntorch

    cell = snntorch.RLeaky(beta=0.5, linear_features=n)

    def step(x):
        spk, mem = cell.init_rleaky()
        out = []
        for xt in x.unbind(0):
            spk, mem = cell(xt, spk, mem)
            out.append(spk)
        return out
    return PeerLoop(step, cell), cell


def _norse(cell):
    def step(x):
        state, out = None, []
        for xt in x.unbind(0):
            z, state = cell(xt, state)
            out.append(z)
        return out
    return PeerLoop(step, cell)


class _SJNode(nn.Module):
    """A SpikingJelly multi-step node, reset before each call (a module: .to(device) moves PLIF's w)."""

    def __init__(self, node: nn.Module):
        super().__init__()
        self.node = node

    def forward(self, x):
        self.node.reset()
        return self.node(x)


def _sj(kind):
    from spikingjelly.activation_based import neuron

    cls = neuron.IFNode if kind == "if" else neuron.ParametricLIFNode
    return _SJNode(cls(step_mode="m"))


def implementations(n_rlif: int):
    """(neuron, ours factory, peer name, peer factory, N override)."""
    import norse.torch as norse

    def rlif_pair():
        peer, cell = _snn_rleaky(n_rlif)
        ours = spiking.RLIF(n_rlif)
        with torch.no_grad():
            ours.recurrent.weight.copy_(cell.recurrent.weight)
            ours.recurrent.bias.copy_(cell.recurrent.bias)
        return ours, peer

    return [
        ("IF", spiking.IF, "spikingjelly.IFNode", lambda: _sj("if"), None),
        ("PLIF", spiking.PLIF, "spikingjelly.ParametricLIFNode", lambda: _sj("plif"), None),
        ("ALIF", spiking.ALIF, "norse.LSNNCell", lambda: _norse(norse.LSNNCell()), None),
        ("CubaLIF", spiking.CubaLIF, "snntorch.Synaptic", _snn_synaptic, None),
        ("LI", spiking.LI, "norse.LIBoxCell", lambda: _norse(norse.LIBoxCell()), None),
        ("RLIF", rlif_pair, "snntorch.RLeaky", None, n_rlif),
    ]


def _time(fn, x, backward: bool, g) -> float:
    if backward:
        xg = x.detach().requires_grad_()
        t0 = time.perf_counter()
        out = fn(xg)
        out.backward(g)
    else:
        with torch.no_grad():
            t0 = time.perf_counter()
            fn(x)
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _rlif_matmul_floor(T: int, B: int, N: int, device, reps: int) -> dict:
    """Median seconds of RLIF's dense matmuls alone: forward (T addmm), backward (T mm + dL/dW)."""
    w, b = torch.randn(N, N, device=device) * 0.05, torch.randn(N, device=device)
    s, out = (torch.rand(B, N, device=device) < 0.25).float(), torch.empty(B, N, device=device)
    gi, sp = torch.randn(T * B, N, device=device), (torch.rand(T * B, N, device=device) < 0.25).float()

    def fwd():
        for _ in range(T):
            torch.addmm(b, s, w.t(), out=out)

    def bwd():
        for _ in range(T):
            torch.mm(out, w, out=s)
        return gi.t() @ sp

    res = {}
    for name, fn in (("forward", fwd), ("backward", bwd)):
        fn()
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
        res[name + "_s"] = statistics.median(ts)
    res["forward_backward_s"] = res["forward_s"] + res["backward_s"]
    return res


def _summary(ts, updates):
    med = statistics.median(ts)
    return {"median_s": med, "min_s": min(ts), "max_s": max(ts), "updates_per_s": updates / med}


def run(args) -> dict:
    device = torch.device(args.device)
    rows = []
    for name, ours_f, peer_name, peer_f, n_override in implementations(args.rlif_n):
        n = n_override or args.N
        x = torch.rand(args.T, args.B, n, device=device) * 2.0
        g = torch.randn_like(x)
        if peer_f is None:
            ours, peer = ours_f()
        else:
            ours, peer = ours_f(), peer_f()
        if isinstance(ours, nn.Module):
            ours = ours.to(device)
        if isinstance(peer, nn.Module):
            peer = peer.to(device)
        updates = args.T * args.B * n
        row = {"neuron": name, "peer": peer_name, "shape": [args.T, args.B, n]}
        for mode, backward in (("forward", False), ("forward_backward", True)):
            for fn in (ours, peer):  # warm-up (builds the extension, allocator)
                _time(fn, x, backward, g)
            times = {"ours": [], "peer": []}
            for _ in range(args.reps):
                times["ours"].append(_time(ours, x, backward, g))
                times["peer"].append(_time(peer, x, backward, g))
            o, p = _summary(times["ours"], updates), _summary(times["peer"], updates)
            row[mode] = {"ours": o, "peer": p, "speedup": p["median_s"] / o["median_s"]}
            print(f"{name:8s} {mode:17s} ours {o['updates_per_s'] / 1e6:8.1f} M/s  {peer_name:32s} "
                  f"{p['updates_per_s'] / 1e6:8.1f} M/s  x{row[mode]['speedup']:.2f}", flush=True)
        if name == "RLIF":
            floor = _rlif_matmul_floor(args.T, args.B, n, device, args.reps)
            floor["max_speedup_forward"] = row["forward"]["peer"]["median_s"] / floor["forward_s"]
            floor["max_speedup_forward_backward"] = (row["forward_backward"]["peer"]["median_s"]
                                                     / floor["forward_backward_s"])
            row["matmul_floor"] = floor
            print(f"{'':8s} matmuls alone: forward {floor['forward_s'] * 1e3:.1f} ms, forward+backward "
                  f"{floor['forward_backward_s'] * 1e3:.1f} ms (a path doing only them: x"
                  f"{floor['max_speedup_forward_backward']:.2f} fwd+bwd)", flush=True)
        rows.append(row)
    return {"rows": rows}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--B", type=int, default=64)
    ap.add_argument("--N", type=int, default=4096)
    ap.add_argument("--rlif-n", type=int, default=512, help="features of the recurrent layer (dense N x N)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or ROOT / "bench" / "results" / f"neuron_throughput_{'gpu' if args.device == 'cuda' else 'cpu'}.json"
    import norse
    import snntorch
    import spikingjelly

    record = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
        "versions": {"torch": torch.__version__, "spiking": spiking.__version__, "snntorch": snntorch.__version__,
                     "norse": getattr(norse, "__version__", "?"),
                     "spikingjelly": getattr(spikingjelly, "__version__", "2.0.0")},
        "args": vars(args) | {"out": str(out)},
        "defaults": "every neuron with its constructor defaults (ours: backend auto = fused CPU template, "
                    "check_inputs=True); peers with theirs",
        "loadavg_start": os.getloadavg(),
    }
    if args.device == "cuda" and not torch.cuda.is_available():
        record["skipped"] = "no CUDA device visible: GPU rows not measured"
        print(record["skipped"])
    else:
        if args.device == "cuda":
            from _record import cuda_launcher  # noqa: PLC0415  (bench/ is the script folder)

            record["machine"]["cuda_launcher"] = cuda_launcher()
        record.update(run(args))
    record["loadavg_end"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
