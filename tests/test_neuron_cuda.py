"""The neuron template's CUDA kernels (cuda/neurons.cu through CuPy) against the torch references.

Every registered neuron with a kernel, float32 and float64, every surrogate, hard/soft reset:
outputs equal, gradients (input, initial state, PLIF's tau) within 1e-5. Skipped without CUDA +
CuPy; the error path (forcing "cupy" on CPU tensors) runs everywhere.
"""

from __future__ import annotations

import pytest
import torch

from spiking.kernels import neuron_cuda
from spiking.neuron import multistep
from spiking.neuron.registry import get_neuron

needs_gpu = pytest.mark.skipif(not neuron_cuda.available()[0], reason="needs a CUDA GPU and CuPy")

PARAMS = {"lif": (1.0, 2.0, 0.0), "if": (1.0, 0.0), "plif": (0.4, 1.0, 0.0), "alif": (0.5, 1.0, 0.0, 1.5, 0.9),
          "cuba_lif": (0.6, 0.5, 1.0, 0.0), "li": (0.3, 0.1)}


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sg,v_reset", [("sigmoid", 0.0), ("atan", None), ("fast_sigmoid", 0.0), ("triangle", None)])
@pytest.mark.parametrize("name", sorted(neuron_cuda.TYPES))
def test_cupy_equals_torch_reference(name, sg, v_reset, dtype):
    spec = get_neuron(name)
    cfg = multistep.make_config(v_reset, False, True, sg)
    g = torch.Generator(device="cuda").manual_seed(0)
    x = (torch.rand((37, 3, 129), generator=g, device="cuda", dtype=torch.float64) * 3 - 0.5).to(dtype)
    x.requires_grad_()
    # the first parameter requires grad where the fused backward differentiates it (GRAD_PARAMS);
    # elsewhere the fused path refuses such a parameter (test_cupy_refuses_a_parameter_it_cannot_learn)
    learns_k = bool(neuron_cuda.GRAD_PARAMS[name] & 1)
    k = torch.tensor(PARAMS[name][0], device="cuda", dtype=dtype, requires_grad=learns_k)
    params = (k, *PARAMS[name][1:])
    res = []
    for backend in ("torch", "cupy"):
        out, state = multistep.run(spec, x, params, cfg, None, backend)
        w = torch.randn(out.shape, generator=torch.Generator(device="cuda").manual_seed(1), device="cuda",
                        dtype=torch.float64).to(dtype)
        grads = torch.autograd.grad((out * w).sum(), [x, k] if learns_k else [x], materialize_grads=True)
        res.append((out.detach(), [s.detach() for s in state], grads))
    (o1, s1, g1), (o2, s2, g2) = res
    assert torch.equal(o1, o2) and all(torch.equal(a, b) for a, b in zip(s1, s2))
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("name", sorted(n for n in neuron_cuda.TYPES if not neuron_cuda.GRAD_PARAMS[n] & 1))
def test_cupy_refuses_a_parameter_it_cannot_learn(name):
    x = torch.rand(5, 2, 7, device="cuda")
    k = torch.tensor(PARAMS[name][0], device="cuda", requires_grad=True)
    field = get_neuron(name).params._fields[0]
    with pytest.raises(ValueError, match=f"parameter {field} has no gradient on the fused path"):
        multistep.run(get_neuron(name), x, (k, *PARAMS[name][1:]), multistep.make_config(0.0, False, True, "sigmoid"),
                      None, "cupy")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("name", sorted(neuron_cuda.TYPES))
def test_cupy_without_a_gradient_runs_the_forward_kernel_alone(name):
    """Under no_grad (and for inputs that do not require grad) no autograd node is made; the
    outputs and last states are the torch reference's."""
    spec, cfg = get_neuron(name), multistep.make_config(0.0, False, True, "sigmoid")
    x = torch.rand((9, 3, 65), device="cuda") * 3 - 0.5
    ref_out, ref_state = multistep.run(spec, x, PARAMS[name], cfg, None, "torch")
    for grad_x in (True, False):
        xi = x.clone().requires_grad_(grad_x)
        with torch.no_grad() if grad_x else torch.enable_grad():
            out, state = multistep.run(spec, xi, PARAMS[name], cfg, None, "cupy")
        assert out.grad_fn is None and not out.requires_grad
        assert torch.equal(out, ref_out) and all(torch.equal(a, b) for a, b in zip(state, ref_state))


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("name", ["if", "alif"])
def test_cupy_kernel_probes_x_for_nan(name):
    """NaN/inf in x raises from the forward kernel's probe, recorded or not; check_finite=False
    skips it; the flag is reset, so the next clean call runs."""
    spec, cfg = get_neuron(name), multistep.make_config(0.0, False, True, "sigmoid")
    x = torch.rand((6, 2, 33), device="cuda")
    for bad in (float("nan"), float("inf")):
        xb = x.clone()
        xb[4, 1, 7] = bad
        for grad in (True, False):
            with pytest.raises(ValueError, match="contains NaN or inf"):
                multistep.run(spec, xb.clone().requires_grad_(grad), PARAMS[name], cfg, None, "cupy")
        multistep.run(spec, xb, PARAMS[name], cfg, None, "cupy", check_finite=False)
    out, _ = multistep.run(spec, x, PARAMS[name], cfg, None, "cupy")
    assert torch.isfinite(out).all()


def test_cupy_backend_refuses_cpu_tensors():
    with pytest.raises(RuntimeError, match="cupy"):
        multistep.run(get_neuron("if"), torch.rand(3, 2, 4), (1.0, 0.0),
                      multistep.make_config(0.0, False, True, "sigmoid"), backend="cupy")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("name", sorted(neuron_cuda.TYPES))
def test_cupy_graph_keeps_x_only_where_the_backward_reads_it(name):
    """As on the CPU: definitions with BWD_X = 0 (IF, LIF) do not hold the input in the graph, the
    others (and LI, which saves nothing) do; the gradient is the reference's either way."""
    spec = get_neuron(name)
    cfg = multistep.make_config(0.0, False, True, "sigmoid")
    x = (torch.rand(6, 2, 33, device="cuda") * 3).requires_grad_()
    params = tuple(torch.tensor(p, device="cuda") for p in PARAMS[name])
    out, _ = multistep.run(spec, x, params, cfg, None, "cupy")
    kept = any(t is not None and t.data_ptr() == x.data_ptr() for t in out.grad_fn.saved_tensors)
    assert kept == (name not in neuron_cuda.IGNORES_X), name
    (g,) = torch.autograd.grad(out.sum(), x)
    ref, _ = multistep.run(spec, x, params, cfg, None, "torch")
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    assert torch.allclose(g, g_ref, atol=1e-5, rtol=1e-5)
