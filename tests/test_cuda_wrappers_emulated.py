"""The CUDA wrappers' Python code (spiking/kernels/cuda.py, neuron_cuda.py, online_lif_cuda.py) run on
CPU tensors with each CuPy launch carried out by the CPU kernels of the same definition
(tests/cupy_emulation.py), against the torch reference: argument order and count, output shapes,
what is saved, the NaN/inf flag, autograd wiring and the calls without a gradient. The CUDA code of
the kernels themselves runs only in the GPU tests."""
from __future__ import annotations

import pytest
import torch

import cupy_emulation
import spiking.neuron.surrogate
from spiking.kernels import _common, cpu, cuda, neuron_cuda, online_lif_cuda
from spiking.neuron import LIF, get_neuron, multistep
from spiking.neuron.functional import lif_multistep_torch
from spiking.neuron.online import _fused_ops, lif_online

PARAMS = {"lif": (1.0, 2.0, 0.0), "if": (1.0, 0.0), "plif": (0.4, 1.0, 0.0), "alif": (0.5, 1.0, 0.0, 1.5, 0.9),
          "cuba_lif": (0.6, 0.5, 1.0, 0.0), "li": (0.3, 0.1)}


def test_the_emulation_reads_the_kernels_parameters_in_their_declared_order():
    """SIGNATURES (the order the emulated launches read) equal the parameter names of the
    __global__ declarations in cuda/*.cu, so a wrapper passing arguments out of order fails here."""
    declared = cupy_emulation.declared_parameters()
    for kernel, names in cupy_emulation.SIGNATURES.items():
        assert tuple(p for p, _ in declared[kernel]) == names, kernel
    kinds = dict(declared["nrn_backward"])
    assert (kinds["saved"], kinds["n"], kinds["steps"], kinds["sg_param"]) == ("pointer", "long long", "int", "double")


@pytest.fixture(autouse=True, params=["cupy", "node"])
def launcher(request, monkeypatch):
    """Every test runs with the Python launchers and with the C++ launcher (neuron_cuda_node.cpp);
    a launch the emulation could not carry out is re-raised after the test."""
    ok, why = cpu.available()
    if not ok:
        pytest.fail(f"the CPU extension must build on the test machine: {why}")
    cupy_emulation.emulate(monkeypatch, launcher=request.param)
    cupy_emulation._node_errors.clear()
    yield request.param
    if cupy_emulation._node_errors:
        raise cupy_emulation._node_errors[0]


def _weights(*shapes, seed=11, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype) for s in shapes]


@pytest.mark.parametrize("return_v", [False, True])
@pytest.mark.parametrize("hard", [True, False])
def test_lif_cuda_wrapper_equals_the_torch_reference(hard, return_v):
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(9, 4, 6, generator=g) * 1.2 + 0.6).requires_grad_()
    v0 = (torch.randn(4, 6, generator=g) * 0.3).requires_grad_()
    vth = torch.tensor(0.9, requires_grad=True)
    kw = dict(tau=1.7, v_reset=-0.1 if hard else None, decay_input=True, detach_reset=False, return_v=return_v)
    cfg, _ = _common.make_config(kw["tau"], vth, kw["v_reset"], True, False, "atan", return_v)
    s, v = _common.run_fused(cuda._ops, x, v0, cfg, vth)
    s_ref, v_ref = lif_multistep_torch(x, v0, v_threshold=vth, surrogate=spiking.neuron.surrogate.atan(), **kw)
    assert 0 < s_ref.sum() < s_ref.numel() and torch.equal(s, s_ref) and torch.equal(v, v_ref)
    ws, wv = (w.float() for w in _weights(s.shape, v.shape))
    grads = torch.autograd.grad((s * ws).sum() + (v * wv).sum(), (x, v0, vth))
    refs = torch.autograd.grad((s_ref * ws).sum() + (v_ref * wv).sum(), (x, v0, vth))
    for a, b in zip(grads, refs):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5), float((a - b).abs().max())


def test_lif_cuda_wrapper_flags_nan_resets_the_flag_and_skips_the_check_when_off():
    x = torch.rand(5, 2, 3) * 2
    x[2, 1, 0] = float("nan")
    clean = torch.rand(5, 2, 3)
    checked, _ = _common.make_config(2.0, 1.0, 0.0, True, False, "sigmoid", False, True)
    unchecked, _ = _common.make_config(2.0, 1.0, 0.0, True, False, "sigmoid", False, False)
    for grad in (False, True):
        with pytest.raises(ValueError, match="contains NaN or inf"):
            _common.run_fused(cuda._ops, x.clone().requires_grad_(grad), None, checked, None)
        _common.run_fused(cuda._ops, clean.clone().requires_grad_(grad), None, checked, None)  # flag was reset
    _common.run_fused(cuda._ops, x, None, unchecked, None)  # the check is off: no error, the flag untouched
    _common.run_fused(cuda._ops, clean, None, checked, None)
    cupy_emulation.capturing["status"] = 1  # while a graph is captured the check is off (C++ launcher)
    if cupy_emulation.neuron_cuda_node.node() is not None:
        _common.run_fused(cuda._ops, x, None, checked, None)
        cupy_emulation.capturing["status"] = 0
        _common.run_fused(cuda._ops, clean, None, checked, None)


@pytest.mark.parametrize("name", sorted(neuron_cuda.TYPES))
def test_template_cuda_wrapper_equals_the_torch_reference(name):
    """Recorded calls: outputs and states bit for bit, gradients of x (and of the first parameter
    where the kernel learns it) within 1e-10 in float64; calls without a gradient: the same
    outputs, no node, nothing saved."""
    spec, cfg = get_neuron(name), multistep.make_config(0.0, False, True, "sigmoid")
    g = torch.Generator().manual_seed(5)
    x = (torch.rand((13, 3, 17), generator=g, dtype=torch.float64) * 3 - 0.5).requires_grad_()
    learns_k = bool(neuron_cuda.GRAD_PARAMS[name] & 1)
    k = torch.tensor(PARAMS[name][0], dtype=torch.float64, requires_grad=learns_k)
    wrt = [x, k] if learns_k else [x]
    res = []
    for backend in ("torch", "cupy"):
        out, state = multistep.run(spec, x, (k, *PARAMS[name][1:]), cfg, None, backend)
        (w,) = _weights(out.shape)
        res.append((out, state, torch.autograd.grad((out * w).sum() + sum(s.sum() for s in state), wrt)))
    (o1, s1, g1), (o2, s2, g2) = res
    assert torch.equal(o1, o2) and all(torch.equal(a, b) for a, b in zip(s1, s2))
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-10, rtol=1e-10), float((a - b).abs().max())
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        with torch.no_grad():
            out, state = multistep.run(spec, x, PARAMS[name], cfg, None, "cupy")
    assert out.grad_fn is None and not saved and torch.equal(out, o1)


def test_template_cuda_wrapper_raises_on_nan_from_the_kernel_flag():
    spec, cfg = get_neuron("alif"), multistep.make_config(0.0, False, True, "sigmoid")
    x = torch.rand(6, 2, 5)
    x[4, 0, 3] = float("inf")
    for grad in (False, True):
        with pytest.raises(ValueError, match="contains NaN or inf"):
            multistep.run(spec, x.clone().requires_grad_(grad), PARAMS["alif"], cfg, None, "cupy")
        multistep.run(spec, x[:4].clone().requires_grad_(grad), PARAMS["alif"], cfg, None, "cupy")  # flag reset
    out, _ = multistep.run(spec, x, PARAMS["alif"], cfg, None, "cupy", check_finite=False)
    assert out.shape == x.shape
    multistep.run(spec, x[:4], PARAMS["alif"], cfg, None, "cupy")  # the unchecked call left the flag at 0


@pytest.mark.parametrize("decay_input", [False, True])
@pytest.mark.parametrize("surrogate", ["sigmoid", "atan", "fast_sigmoid", "triangle"])
def test_online_lif_cuda_wrapper_equals_the_reference_path(surrogate, decay_input):
    """lif_online with the cupy backend takes the CUDA wrapper; spikes, traces, rows and the
    gradient equal the CPU ops' (which the emulation runs), and the reference path's within 8 ulp
    of σ'(0) (as tests/test_online_lif.py)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 40, generator=g) * 1.5 + 0.8
    gs = torch.randn(30, 40, generator=g)
    out = {}
    for be in ("cupy", "cpu", "torch"):
        assert (_fused_ops(be, x) is online_lif_cuda) == (be == "cupy")
        xx = x.clone().requires_grad_()
        s, a, r = lif_online(xx, LIF(v_reset=None, backend=be, tau=2.0, decay_input=decay_input,
                                     surrogate=surrogate), steps=6, trace_lambda=0.5)
        (s * gs).sum().backward()
        out[be] = (s, a, r, xx.grad)
    for t, c in zip(out["cupy"], out["cpu"]):
        assert torch.equal(t, c)
    for t, ref in zip(out["cupy"][:3], out["torch"][:3]):
        assert torch.equal(t, ref)
    peak = float(LIF(surrogate=surrogate).surrogate.grad(torch.zeros(())))
    assert torch.all((out["cupy"][3] - out["torch"][3]).abs() <= 8 * torch.finfo(torch.float32).eps * peak * gs.abs())
    with pytest.raises(ValueError, match="contains NaN or inf"):
        bad = x.clone()
        bad[7, 3] = float("nan")
        lif_online(bad, LIF(v_reset=None, backend="cupy"), steps=6, trace_lambda=0.5)


def test_online_lif_cuda_wrapper_refuses_bad_input():
    """The wrapper checks what the kernel would read out of bounds or misread (as the CPU ops do)."""
    from spiking.neuron.surrogate import get_surrogate

    x = torch.rand(6, 4)
    with pytest.raises(ValueError, match="divisible by steps"):
        online_lif_cuda.forward(x, 4, 1.0, 2.0, False)
    for bad_steps in (0, True, 2.0):
        with pytest.raises(ValueError, match="steps"):
            online_lif_cuda.forward(x, bad_steps, 1.0, 2.0, False)
    with pytest.raises(ValueError, match="non-empty"):
        online_lif_cuda.forward(torch.empty(0, 4), 1, 1.0, 2.0, False)
    with pytest.raises(TypeError, match="float32 or float64"):
        online_lif_cuda.forward(x.half(), 2, 1.0, 2.0, False)
    with pytest.raises(ValueError, match="tau"):
        online_lif_cuda.forward(x, 2, 1.0, 0.0, False)
    with pytest.raises(ValueError, match="trace_lambda"):
        online_lif_cuda.forward(x, 2, 1.0, 2.0, False, trace_lambda=1.5)
    with pytest.raises(ValueError, match="g and z must match"):
        online_lif_cuda.backward(x, x[:3], get_surrogate("sigmoid"), 2.0, False)
    s, z, a, r = online_lif_cuda.forward(x, 2, 1.0, 2.0, False)  # valid input runs; no trace: empty
    assert s.shape == x.shape and a.numel() == 0 and r.numel() == 0


def test_online_lif_cuda_wrapper_refuses_cpu_tensors_without_the_emulation(monkeypatch):
    monkeypatch.undo()  # the real device check
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        online_lif_cuda.forward(torch.rand(6, 4), 2, 1.0, 2.0, False)

