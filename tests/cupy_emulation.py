"""Run the CUDA wrappers' Python code on CPU tensors, with each CuPy launch carried out by the CPU
kernels of the same definitions (test helper; no GPU needed).

``emulate(monkeypatch)`` replaces, in :mod:`spiking.kernels.cuda`, :mod:`.neuron_cuda` and
:mod:`.online_lif_cuda`, the pointer packing (``_ptr`` hands the tensor itself through), the kernel
lookup (``_function`` returns the name expression) and the launch (``_launch`` reads the argument
tuple in the order of the kernel's C++ signature and runs the CPU extension's forward / backward,
or the CPU online-LIF ops, writing into the output tensors the wrapper allocated). What the
wrappers do around the launches then runs as on a GPU: argument order and count, output shapes,
saved tensors, the NaN/inf flag and its reset, autograd wiring, the calls without a gradient. The
kernels' own CUDA code is not run (``tests/test_cuda_compile.py`` compiles it; the GPU tests run it).
"""
from __future__ import annotations

import re
import types

import torch
from torch.utils._python_dispatch import _disable_current_modes

from spiking.kernels import cpu, cuda, neuron_cuda, online_lif, online_lif_cuda

_NAME = re.compile(r"(\w+)<(.*)>")

#: each kernel's parameters in the order of its C++ signature (tests/test_cuda_wrappers_emulated.py
#: checks them against the __global__ declarations in cuda/*.cu)
SIGNATURES = {
    "nrn_forward": ("x", "state0", "params", "out", "state_last", "saved", "seq", "nonfinite", "n", "s_n", "p_n",
                    "steps", "hard", "decay_input"),
    "nrn_backward": ("x", "saved", "params", "g_out", "g_seq", "g_last", "g_x", "g_state0", "g_params", "n", "p_n",
                     "steps", "hard", "detach", "decay_input", "sg_param"),
    "online_forward": ("x", "s", "z", "a", "r", "nonfinite", "n", "steps", "v_th", "tau", "decay_input", "lam"),
    "online_backward": ("g", "z", "gx", "n", "sg_param", "tau", "decay_input"),
}


def _dynamics(cxx: str) -> int:
    """``nrn::ALIF`` -> the CPU extension's dynamics id."""
    name = {v: k for k, v in neuron_cuda.TYPES.items()}[cxx.strip()]
    return cpu.dynamics_id(name)


def _saved_shape(nsave: int, shape: torch.Size) -> list[int]:
    return [*shape] if nsave == 1 else [nsave, *shape]


def _nrn_forward(targs: list[str], a: dict) -> None:
    x, out, state_last, saved, seq, flag = a["x"], a["out"], a["state_last"], a["saved"], a["seq"], a["nonfinite"]
    dyn = _dynamics(targs[0])
    o, st, sv, bad = cpu.load_extension().forward(dyn, x, a["state0"], a["params"], bool(a["hard"]),
                                                  bool(a["decay_input"]), saved is not None, seq is not None)
    out.copy_(o)
    if seq is not None:  # the kernel writes the per-step state and the last state
        seq.copy_(st)
        state_last.view(-1).copy_(st[-1].reshape(-1))
    else:
        state_last.view(-1).copy_(st.reshape(-1))
    if saved is not None:
        saved.view(-1).copy_(sv.reshape(-1))
    if bad and flag is not None:
        flag.fill_(1)


def _nrn_backward(targs: list[str], a: dict) -> None:
    saved, g_x, g_state0, g_params = a["saved"], a["g_x"], a["g_state0"], a["g_params"]
    dyn, sg = _dynamics(targs[0]), int(targs[1])
    ext = cpu.load_extension()
    nsave = ext.layout(dyn)[2]
    sv = saved.reshape(_saved_shape(nsave, g_x.shape)) if nsave else saved
    gx, gs0, gp = ext.backward(dyn, a["x"], sv, a["params"], a["g_out"], a["g_seq"], a["g_last"], bool(a["hard"]),
                               bool(a["detach"]), bool(a["decay_input"]), sg, float(a["sg_param"]), g_params is not None)
    g_x.copy_(gx)
    g_state0.view(-1).copy_(gs0.reshape(-1))
    if g_params is not None:  # per-neuron columns on a GPU; the CPU may return per-chunk sums
        g_params.zero_()
        g_params[:, :gp.shape[1]] = gp


def _online_forward(targs: list[str], a: dict) -> None:
    x, flag = a["x"], a["nonfinite"]
    trace = float(a["lam"]) if a["a"] is not None else None
    s2, z2, a2, r2 = online_lif.forward(x, int(a["steps"]), float(a["v_th"]), float(a["tau"]), bool(a["decay_input"]),
                                        trace, False)
    a["s"].copy_(s2)
    a["z"].copy_(z2)
    if a["a"] is not None:
        a["a"].copy_(a2)
        a["r"].copy_(r2)
    if flag is not None and not bool(torch.isfinite(x).all()):
        flag.fill_(1)


def _online_backward(targs: list[str], a: dict) -> None:
    surrogate = types.SimpleNamespace(kernel_id=int(targs[0]), param=float(a["sg_param"]))
    a["gx"].copy_(online_lif.backward(a["g"], a["z"], surrogate, float(a["tau"]), bool(a["decay_input"])))


KERNELS = {"nrn_forward": _nrn_forward, "nrn_backward": _nrn_backward, "online_forward": _online_forward,
           "online_backward": _online_backward}


def launch(name: str, args: tuple) -> None:
    """Carry out the launch of kernel ``name`` (a name expression) with ``args`` on the CPU;
    what it runs is not counted by an active dispatch mode (as a CuPy launch is not)."""
    kernel, targs = _NAME.fullmatch(name).groups()
    names = SIGNATURES[kernel]
    assert len(args) == len(names), f"{kernel}: {len(args)} arguments for {len(names)} parameters"
    with _disable_current_modes():
        KERNELS[kernel]([t.strip() for t in targs.split(",")], dict(zip(names, args)))


def emulate(monkeypatch, flag: torch.Tensor | None = None) -> torch.Tensor:
    """Patch the CUDA wrappers to run on CPU tensors through :func:`launch`; returns the NaN/inf
    flag they use (a CPU int32 0-dim tensor)."""
    flag = torch.zeros((), dtype=torch.int32) if flag is None else flag
    for mod in (cuda, neuron_cuda, online_lif_cuda):
        monkeypatch.setattr(mod, "_ptr", lambda t: t)
    monkeypatch.setattr(cuda, "_function", lambda name, dev, source="neurons.cu": name)
    monkeypatch.setattr(cuda, "_launch", lambda fn, x, n, args: launch(fn, args))
    monkeypatch.setattr(cuda, "_check_cuda", lambda t, name: None)
    monkeypatch.setattr(cuda, "nonfinite_flag", lambda x, check: flag if check else None)
    monkeypatch.setattr(neuron_cuda, "check_run", lambda x, what: None)
    monkeypatch.setattr(online_lif_cuda, "usable", lambda x: x.dtype in online_lif_cuda.DTYPES)
    return flag


def emulate_cuda_backend(monkeypatch) -> None:
    """As :func:`emulate`, and every layer resolves to the CUDA wrappers (``SPIKING_BACKEND=cupy``)
    with the NaN/inf check off, as the runner's networks run on a GPU: what a training step
    dispatches on a GPU, on CPU tensors (counted by ``spiking.runner.overhead``)."""
    emulate(monkeypatch)
    monkeypatch.setenv("SPIKING_BACKEND", "cupy")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "_import_cupy", lambda: None)
    monkeypatch.setattr(cuda, "nonfinite_flag", lambda x, check: None)
