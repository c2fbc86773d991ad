"""Run the CUDA wrappers' Python code on CPU tensors, with each CuPy launch carried out by the CPU
kernels of the same definitions (test helper; no GPU needed).

``emulate(monkeypatch)`` (the Python launchers, ``SPIKING_CUDA_LAUNCH=cupy``) replaces, in
:mod:`spiking.kernels.cuda`, :mod:`.neuron_cuda` and
:mod:`.online_lif_cuda`, the pointer packing (``_ptr`` hands the tensor itself through), the kernel
lookup (``_function`` returns the name expression) and the launch (``_launch`` reads the argument
tuple in the order of the kernel's C++ signature and runs the CPU extension's forward / backward,
or the CPU online-LIF ops, writing into the output tensors the wrapper allocated). What the
wrappers do around the launches then runs as on a GPU: argument order and count, output shapes,
saved tensors, the NaN/inf flag and its reset, autograd wiring, the calls without a gradient. The
kernels' own CUDA code is not run (``tests/test_cuda_compile.py`` compiles it; the GPU tests run it).

``emulate(monkeypatch, launcher="node")`` runs the C++ launcher (``neuron_cuda_node.cpp``) on CPU
tensors instead: its ``cuLaunchKernel`` is a ctypes callback that decodes the raw parameter array by
the types of the kernel's ``__global__`` declaration, rebuilds the tensors from their addresses (with
the shapes the kernel indexes) and runs the same CPU kernels; ``cuStreamIsCapturing`` reports
``capturing["status"]``.
"""
from __future__ import annotations

import ctypes
import math
import re
import types
from pathlib import Path

import torch
from torch.utils._python_dispatch import _disable_current_modes

from spiking.kernels import (cpu, cuda, dsr_stack, neuron_cuda, neuron_cuda_node, online_lif, online_lif_cuda,
                             spike_matmul)
from spiking.runner import registry

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


# ---------------------------------------------------------------------------------------------
# the C++ launcher (spiking/kernels/neuron_cuda_node.cpp): its cuLaunchKernel calls come here

_CUDA = Path(__file__).resolve().parents[1] / "cuda"
_CTYPES = {"long long": ctypes.c_int64, "int": ctypes.c_int32, "double": ctypes.c_double}


def declared_parameters() -> dict[str, tuple[tuple[str, str], ...]]:
    """``{kernel: ((name, kind), ...)}`` from the ``__global__`` declarations in ``cuda/*.cu``:
    kind ``"pointer"``, ``"long long"``, ``"int"`` or ``"double"``."""
    out = {}
    for cu in _CUDA.glob("*.cu"):
        for name, params in re.findall(r"__global__\s+void\s+(\w+)\s*\(([^)]*)\)", cu.read_text()):
            decl = []
            for p in params.replace("\n", " ").split(","):
                words = p.replace("__restrict__", " ").split()
                kind = "pointer" if "*" in p else " ".join(w for w in words[:-1] if w != "const")
                decl.append((words[-1].lstrip("*"), kind))
            out[name] = tuple(decl)
    return out


_DTYPES = {"float": torch.float32, "double": torch.float64, "lif::f16": torch.float16, "lif::bf16": torch.bfloat16}


def _shapes(kernel: str, targs: list[str], v: dict) -> dict:
    """Shape and dtype of every pointer parameter of a neuron kernel launch, from its scalars and the
    dynamics' layout (what the C++ launcher's tensors must have)."""
    ns, np_, nsave = cpu.load_extension().layout(_dynamics(targs[0]))
    t = _DTYPES[targs[-1]]
    c = torch.float64 if t == torch.float64 else torch.float32
    steps, n, p_n = v["steps"], v["n"], v["p_n"]
    seq, per = ((steps, n), t), ((ns, n), t)
    common = {"x": seq, "params": ((np_, p_n), c), "saved": ((nsave, steps, n), t)}
    if kernel == "nrn_forward":
        return {**common, "state0": ((ns, v["s_n"]), t), "out": seq, "state_last": per, "seq": seq,
                "nonfinite": ((), torch.int32)}
    return {**common, "g_out": seq, "g_seq": seq, "g_last": per, "g_x": seq, "g_state0": per,
            "g_params": ((np_, n), torch.float64)}


def _at(address: int, shape: tuple, dtype: torch.dtype) -> torch.Tensor | None:
    """The CPU tensor of ``shape`` at a raw address (None for a null pointer; an empty tensor where
    the shape is empty, as the Python launchers pass it)."""
    count = math.prod(shape)
    if not address:
        return torch.empty(shape, dtype=dtype) if count == 0 else None
    buf = (ctypes.c_char * (count * torch.empty((), dtype=dtype).element_size())).from_address(address)
    return torch.frombuffer(buf, dtype=dtype).view(shape)


_node_kernels: dict[int, str] = {}  # fake CUfunction handle -> name expression
_node_errors: list[BaseException] = []


def _node_launch(fn, gx, gy, gz, bx, by, bz, shmem, stream, params, extra) -> int:
    """cuLaunchKernel as the C++ launcher calls it: decode the parameter array by the kernel's
    declared types, rebuild the tensors from their addresses and run the launch on the CPU."""
    if driver["launch_result"]:
        return driver["launch_result"]
    try:
        name = _node_kernels[fn]
        kernel, targs = _NAME.fullmatch(name).groups()
        targs = [t.strip() for t in targs.split(",")]
        decl = declared_parameters()[kernel]
        raw = {pname: (kind, params[i]) for i, (pname, kind) in enumerate(decl)}
        scalars = {p: ctypes.cast(a, ctypes.POINTER(_CTYPES[k])).contents.value for p, (k, a) in raw.items()
                   if k != "pointer"}
        assert (bx, by, bz, gy, gz, shmem, extra) == (256, 1, 1, 1, 1, 0, None)
        assert gx == max(1, -(-scalars["n"] // 256))
        with _disable_current_modes():  # nothing the emulated launch does is counted
            shapes = _shapes(kernel, targs, scalars)
            args = {p: _at(ctypes.cast(a, ctypes.POINTER(ctypes.c_void_p)).contents.value or 0, *shapes[p])
                    for p, (k, a) in raw.items() if k == "pointer"}
            KERNELS[kernel](targs, {**args, **scalars})
        return 0
    except BaseException as exc:  # noqa: BLE001  (reported through the CUresult, re-raised by the test)
        _node_errors.append(exc)
        return 999


capturing = {"status": 0}  # what cuStreamIsCapturing reports (1: the stream is being captured)
driver = {"launch_result": 0}  # a nonzero CUresult: every cuLaunchKernel fails with it, launching nothing

#: the C signatures of cuLaunchKernel and cuStreamIsCapturing, for stand-ins of the driver
LAUNCH_T = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, *[ctypes.c_uint] * 7, ctypes.c_void_p,
                             ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)
CAPTURING_T = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int))
_launch_cb = LAUNCH_T(_node_launch)
_capturing_cb = CAPTURING_T(lambda stream, status: status.__setitem__(0, capturing["status"]) or 0)


def _fake_handle(name: str, device: int) -> int:
    handle = 0x1000 + len(_node_kernels)
    _node_kernels[handle] = name
    return handle


def emulate_node(monkeypatch) -> None:
    """Route the eager CUDA neuron calls through the C++ launcher, its kernel launches carried out on
    the CPU by :func:`_node_launch` (a launch error re-raised from ``_node_errors`` by the caller)."""
    ext = neuron_cuda_node.extension().load()
    emulated = ext.Driver(ctypes.cast(_launch_cb, ctypes.c_void_p).value,
                          ctypes.cast(_capturing_cb, ctypes.c_void_p).value, True)
    monkeypatch.setattr(neuron_cuda_node, "_ready", neuron_cuda_node.Launcher(ext, emulated))
    monkeypatch.setattr(neuron_cuda_node, "_handles", {})
    monkeypatch.setattr(cuda, "kernel_handle", _fake_handle)
    monkeypatch.delenv(neuron_cuda_node.ENV, raising=False)
    monkeypatch.setitem(capturing, "status", 0)
    monkeypatch.setitem(driver, "launch_result", 0)
    monkeypatch.setattr(neuron_cuda_node, "_launched", False)


def emulate(monkeypatch, flag: torch.Tensor | None = None, launcher: str = "cupy") -> torch.Tensor:
    """Patch the CUDA wrappers to run on CPU tensors through :func:`launch` (``launcher="cupy"``,
    the Python launchers) or through the C++ launcher (``"node"``, :func:`emulate_node`); returns the
    NaN/inf flag the Python launchers use (a CPU int32 0-dim tensor; the C++ launcher keeps its own)."""
    flag = torch.zeros((), dtype=torch.int32) if flag is None else flag
    if launcher == "node":
        emulate_node(monkeypatch)
    else:
        monkeypatch.setenv(neuron_cuda_node.ENV, "cupy")
    for mod in (cuda, neuron_cuda, online_lif_cuda):
        monkeypatch.setattr(mod, "_ptr", lambda t: t)
    monkeypatch.setattr(cuda, "_function", lambda name, dev, source="neurons.cu": name)
    monkeypatch.setattr(cuda, "_launch", lambda fn, x, n, args: launch(fn, args))
    monkeypatch.setattr(cuda, "_check_cuda", lambda t, name: None)
    monkeypatch.setattr(cuda, "nonfinite_flag", lambda x, check: flag if check else None)
    monkeypatch.setattr(neuron_cuda, "check_run", lambda x, what: None)
    monkeypatch.setattr(online_lif_cuda, "usable", lambda x: x.dtype in online_lif_cuda.DTYPES)
    return flag


def emulate_cuda_backend(monkeypatch, launcher: str = "node") -> None:
    """As :func:`emulate` (by default with the C++ launcher, the default on a GPU), and every layer
    resolves to the CUDA wrappers (``SPIKING_BACKEND=cupy``) with the NaN/inf check off, as the
    runner's networks run on a GPU: what a training step dispatches on a GPU, on CPU tensors
    (counted by ``spiking.runner.overhead``)."""
    emulate(monkeypatch, launcher=launcher)
    monkeypatch.setenv("SPIKING_BACKEND", "cupy")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "_import_cupy", lambda: None)
    monkeypatch.setattr(cuda, "nonfinite_flag", lambda x, check: None)
    monkeypatch.setattr(registry, "checks_inputs", lambda device: False)  # as on a CUDA device
    # the CPU-only fused paths step aside, as they do for CUDA tensors: HLOP-DSR's hidden stack runs
    # layer by layer, the event-driven product and the weight transpose as torch ops
    monkeypatch.setattr(dsr_stack, "fused_available", lambda x1: False)
    monkeypatch.setattr(spike_matmul._EXT, "available", lambda: False)
