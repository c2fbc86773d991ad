"""RLIF's fused paths against its torch reference (spiking/neuron/rlif.py).

CPU extension (spiking/kernels/rlif_cpu.cpp): float32/float64, hard/soft reset, both charge forms,
detach_reset, every surrogate, with/without bias, odd shapes, T = 1 and long T: spikes and the
last membrane equal (the element-wise step rounds like the reference, the matmul is the same
call), gradients of x, W, b, V_0, S_0 within 1e-5 relative (float32; 1e-12 float64). The CUDA
host loop (spiking/kernels/rlif_cuda.py) runs on CPU here with torch stand-ins for its two step
kernels; the real kernels are tested on a GPU (skipped without one).
"""

from __future__ import annotations

import pytest
import torch

import spiking
from spiking.kernels import rlif_cpu, rlif_cuda
from spiking.neuron import multistep
from spiking.neuron.rlif import RLIFParams, rlif_multistep

pytestmark = pytest.mark.skipif(not rlif_cpu.available(), reason="fused RLIF extension does not build here")

# (v_reset, decay_input, detach_reset, surrogate)
MODES = [(0.0, True, False, "sigmoid"), (None, False, False, "atan"), (0.2, False, True, "fast_sigmoid"),
         (None, True, True, "triangle")]
SHAPES = [(1, 1, 1), (1, 3, 6), (37, 3, 11), (300, 2, 5)]


def _inputs(shape, dtype, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    t, b, n = shape
    x = (torch.rand(shape, generator=g, dtype=torch.float64) * 1.6).to(dtype).requires_grad_()
    w = (torch.randn(n, n, generator=g, dtype=torch.float64) * 0.5).to(dtype).requires_grad_()
    bb = (torch.randn(n, generator=g, dtype=torch.float64) * 0.1).to(dtype).requires_grad_() if bias else None
    v0 = torch.rand(b, n, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    s0 = (torch.rand(b, n, generator=g, dtype=torch.float64) > 0.5).to(dtype).requires_grad_()
    return x, w, bb, v0, s0


def _run(backend, args, mode, seed=1):
    """Outputs and the gradients of a random linear function of (spikes, V_T, S_T)."""
    v_reset, decay, detach, sg = mode
    x, w, b, v0, s0 = args
    out, (v, s) = rlif_multistep(x, w, b, v0, s0, tau=3.0, v_reset=v_reset, decay_input=decay, detach_reset=detach,
                                 surrogate=sg, backend=backend)
    g = torch.Generator().manual_seed(seed)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device)).sum() for t in (out, v, s))
    leaves = [t for t in args if t is not None and t.requires_grad]
    return (out, v, s), torch.autograd.grad(loss, leaves)


def _assert_same(ref, got, dtype, exact_v=True):
    """Spikes equal; V_T equal (``exact_v``, same matmul call) or within the tolerance (a matmul
    whose operand sits at another memory offset may sum in another order); gradients close."""
    (o1, v1, s1), g1 = ref
    (o2, v2, s2), g2 = got
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.equal(o1, o2) and torch.equal(s1, s2)
    assert torch.equal(v1, v2) if exact_v else torch.allclose(v1, v2, rtol=tol, atol=tol)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, rtol=tol, atol=tol * max(1.0, a.abs().max().item()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", MODES, ids=lambda m: f"{m[0]}-{m[1]}-{m[2]}-{m[3]}")
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_cpu_equals_reference(shape, mode, dtype):
    args = _inputs(shape, dtype)
    ref = _run("torch", args, mode)
    assert 0 < ref[0][0].mean() < 1 or shape[0] == 1  # the recurrence is exercised: some spikes, not all
    _assert_same(ref, _run("cpu", args, mode), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_without_bias_and_with_default_state(dtype):
    x, w, _, _, _ = _inputs((23, 4, 9), dtype, bias=False)
    ref = _run("torch", (x, w, None, None, None), MODES[0])
    _assert_same(ref, _run("cpu", (x, w, None, None, None), MODES[0]), dtype)


def test_backward_with_only_some_gradients():
    """A frozen W / x (no grad) still gives the right gradients for the rest, and nothing for them."""
    x, w, b, v0, s0 = _inputs((15, 2, 7), torch.float64)
    w = w.detach()
    ref = _run("torch", (x.detach(), w, b, v0, None), MODES[1])
    got = _run("cpu", (x.detach(), w, b, v0, None), MODES[1])
    _assert_same(ref, got, torch.float64)


def test_module_uses_fused_path_and_trains():
    torch.manual_seed(0)
    m = spiking.RLIF(12, tau=2.5)
    ref = spiking.RLIF(12, tau=2.5, backend="torch")
    ref.load_state_dict(m.state_dict())
    x = torch.rand(20, 3, 12) * 2
    out, out_ref = m(x), ref(x)
    assert torch.equal(out, out_ref)
    out.sum().backward()
    out_ref.sum().backward()
    assert torch.allclose(m.recurrent.weight.grad, ref.recurrent.weight.grad, rtol=1e-5, atol=1e-6)
    assert m.recurrent.weight.grad.abs().sum() > 0


def test_stateful_module_carries_state():
    torch.manual_seed(1)
    x = torch.rand(30, 2, 8) * 2
    whole = spiking.RLIF(8)
    split = spiking.RLIF(8, stateful=True)
    split.load_state_dict(whole.state_dict())
    assert torch.equal(torch.cat([split(x[:13]), split(x[13:])]), whole(x))
    split.reset()
    assert torch.equal(split(x), whole(x))


def test_single_steps_equal_the_multistep_run():
    torch.manual_seed(2)
    m = spiking.RLIF(6, v_reset=None)
    x = torch.rand(9, 2, 6) * 2
    state, outs = None, []
    for xt in x:
        s, state = m.step(xt, state)
        outs.append(s)
    assert torch.equal(torch.stack(outs), m(x))


def test_bad_input_names_the_argument():
    x = torch.rand(4, 2, 3)
    w = torch.rand(3, 3)
    with pytest.raises(ValueError, match="weight"):
        rlif_multistep(x, torch.rand(3, 4))
    with pytest.raises(ValueError, match="bias"):
        rlif_multistep(x, w, torch.rand(4))
    with pytest.raises(ValueError, match="v0"):
        rlif_multistep(x, w, v0=torch.rand(3, 3))
    with pytest.raises(TypeError, match="weight"):
        rlif_multistep(x, w.double(), backend="cpu")
    with pytest.raises(ValueError, match="tau"):
        rlif_multistep(x, w, tau=0.5)
    bad = x.clone()
    bad[2, 1, 0] = float("nan")
    for backend in ("cpu", "torch"):
        with pytest.raises(ValueError, match="NaN or inf"):
            rlif_multistep(bad, w, backend=backend)
    rlif_multistep(bad, w, backend="cpu", check_finite=False)  # the check can be skipped
    with pytest.raises(RuntimeError, match="cupy"):
        rlif_multistep(x, w, backend="cupy")


class TorchStepLoop(rlif_cuda.HostLoop):
    """rlif_cuda's host loop with its two kernels replaced by torch on the CPU (autograd for the
    step's local derivatives), to test the loop (matmuls, state hand-over, dL/dW) without a GPU."""

    @staticmethod
    def _cfg(hard, detach, sg=0, sg_param=4.0):
        name = {0: "sigmoid", 1: "atan", 2: "fast_sigmoid", 3: "triangle"}[sg]
        return multistep.make_config(0.0 if hard else None, detach, True, (name, sg_param))

    def step_forward(self, x, rec, v, out, h, consts, hard, decay_input):
        k, rest, theta, v_reset = consts
        hh = multistep.charge(x + rec, v, k, rest, decay_input)
        s, v_new = multistep.fire_reset(hh, theta, v_reset, self._cfg(hard, False))
        out.copy_(s), v.copy_(v_new)
        if h is not None:
            h.copy_(hh)

    def step_backward(self, h, g_out, g_s, g_v, g_x, consts, hard, detach, decay_input, sg, sg_param):
        k, rest, theta, v_reset = consts
        hh = h.detach().requires_grad_()
        with torch.enable_grad():
            s, v = multistep.fire_reset(hh, theta, v_reset, self._cfg(hard, detach, sg, sg_param))
            g_spike = g_s if g_out is None else g_out + g_s
            (g_h,) = torch.autograd.grad((s * g_spike).sum() + (v * g_v).sum(), hh)
        g_v.copy_(g_h * (1 - k))
        g_x.copy_(g_h * k if decay_input else g_h)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: f"{m[0]}-{m[1]}-{m[2]}-{m[3]}")
@pytest.mark.parametrize("shape", [(1, 2, 3), (19, 3, 7)], ids=str)
def test_cuda_host_loop_on_cpu(shape, mode):
    from spiking.kernels.rlif_cpu import RLIFFunction

    args = _inputs(shape, torch.float64)
    v_reset, decay, detach, sg = mode
    cfg = multistep.make_config(v_reset, detach, decay, sg)
    p = RLIFParams(1 / 3.0, 1.0, 0.0 if v_reset is None else v_reset)
    out, v, s = RLIFFunction.apply(TorchStepLoop(), *args, p, cfg, True, False)
    g = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device)).sum() for t in (out, v, s))
    got = ((out, v, s), torch.autograd.grad(loss, args))
    _assert_same(_run("torch", args, mode), got, torch.float64, exact_v=False)


needs_gpu = pytest.mark.skipif(not rlif_cuda.available()[0], reason="needs a CUDA GPU and CuPy")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", MODES, ids=lambda m: f"{m[0]}-{m[1]}-{m[2]}-{m[3]}")
def test_cupy_equals_reference(mode, dtype):
    args = [None if t is None else t.detach().cuda().requires_grad_() for t in _inputs((41, 3, 129), dtype)]
    _assert_same(_run("torch", args, mode), _run("cupy", args, mode), dtype, exact_v=False)
