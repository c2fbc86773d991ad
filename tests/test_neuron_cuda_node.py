"""The C++ launcher of the CUDA neuron kernels (spiking/kernels/neuron_cuda_node.cpp).

On a GPU: it is the default for eager calls, and it gives bit for bit the outputs and gradients of
the Python/CuPy launchers (the same kernels with the same arguments), for LIF in every dtype and
for every template neuron. On the CPU the launcher's wrapping is proven by
tests/test_cuda_wrappers_emulated.py (its launches carried out by the CPU kernels).
"""
from __future__ import annotations

import threading
import warnings

import pytest
import torch

from spiking.kernels import _common, cuda, neuron_cuda, neuron_cuda_node
from spiking.neuron import get_neuron, multistep
from spiking.neuron.functional import lif_multistep, lif_multistep_torch
from spiking.neuron.surrogate import get_surrogate

needs_gpu = pytest.mark.skipif(not neuron_cuda.available()[0], reason="needs a CUDA GPU and CuPy")


@pytest.fixture
def launcher_built():
    """The GPU tests compare the built launcher with CuPy's: wait for a background build."""
    assert neuron_cuda_node.node(wait=True) is not None, neuron_cuda_node.extension().error()


def test_env_switches_the_launcher_off(monkeypatch):
    monkeypatch.setenv(neuron_cuda_node.ENV, "cupy")
    assert neuron_cuda_node.node() is None


class _FakeExtension:
    """Stands in for the CachedExtension: ``load`` blocks until ``release`` is set."""

    def __init__(self, built: bool, fails: bool = False):
        self._built, self.fails = built, fails
        self.release = threading.Event()

    def built(self):
        return self._built

    def load(self):
        assert self.release.wait(10)
        if self.fails:
            raise RuntimeError("no compiler")
        return self

    def Driver(self, launch, capturing, emulated):  # noqa: N802  (the extension's class)
        return (launch, capturing, emulated)


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.delenv(neuron_cuda_node.ENV, raising=False)
    monkeypatch.setattr(neuron_cuda_node, "_ready", None)
    monkeypatch.setattr(neuron_cuda_node, "_builder", None)
    monkeypatch.setattr(neuron_cuda_node, "_driver", lambda: (11, 22))

    def use(ext):
        monkeypatch.setattr(neuron_cuda_node, "_EXT", ext)
        return ext
    return use


def test_a_first_use_without_a_build_compiles_in_the_background(fresh):
    """The first call does not wait for the compiler: CuPy launches (None) until the build is done."""
    ext = fresh(_FakeExtension(built=False))
    assert neuron_cuda_node.node() is None and neuron_cuda_node.node() is None  # building; one thread
    builder = neuron_cuda_node._builder
    assert builder is not None and builder.is_alive()
    ext.release.set()
    assert neuron_cuda_node.node(wait=True) == (ext, (11, 22, False))
    assert neuron_cuda_node._builder is builder and not builder.is_alive()


def test_a_cached_build_is_loaded_at_once(fresh):
    ext = fresh(_FakeExtension(built=True))
    ext.release.set()
    assert neuron_cuda_node.node().ext is ext and neuron_cuda_node._builder is None


def test_a_failed_build_leaves_the_cupy_launcher(fresh):
    ext = fresh(_FakeExtension(built=False, fails=True))
    ext.release.set()
    assert neuron_cuda_node.node(wait=True) is None and neuron_cuda_node.node() is None


def test_the_launcher_builds_without_cuda_headers():
    """The extension needs no CUDA toolkit: it builds against a CPU-only torch too."""
    ext = neuron_cuda_node.extension()
    assert ext.available(), ext.error()


def test_the_launcher_refuses_bad_input_before_launching():
    """Shapes, dtypes, layout and device are checked in C++ before any launch (a launch would
    read or write out of bounds); the driver here counts launches instead of making them."""
    import ctypes

    import cupy_emulation

    launches = []
    count = cupy_emulation.LAUNCH_T(lambda *args: launches.append(1) or 0)
    ext = neuron_cuda_node.extension().load()
    x, st, pr = torch.rand(3, 2, 4), torch.zeros(1, 1), torch.ones(3, 1)
    address = ctypes.cast(count, ctypes.c_void_p).value
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):  # as on a GPU machine: CPU tensors refused
        ext.forward(ext.Driver(address, 0, False), 1, x, st, pr, 1, True, True, False, False)
    emulated = ext.Driver(address, 0, True)
    bad = {"non-empty": (torch.rand(0, 2, 4), st, pr), "contiguous": (x.transpose(1, 2), st, pr),
           "state0 must be": (x, torch.zeros(1, 3), pr), "state0 must have the dtype": (x, st.double(), pr),
           "params must be float64": (x, st, pr.double()), "params must be \\[NP, N\\]": (x, st, torch.ones(3, 5))}
    for message, (xx, s0, p) in bad.items():
        with pytest.raises(RuntimeError, match=message):
            ext.forward(emulated, 1, xx, s0, p, 1, True, True, False, False)
    assert not launches
    out, state = ext.forward(emulated, 1, x, st, pr, 1, True, True, False, False)  # valid: one launch
    assert launches == [1] and out.shape == x.shape and state.shape == x.shape[1:]


@pytest.fixture
def emulated(monkeypatch):
    """The eager CUDA calls through the C++ launcher on CPU tensors, launches run by the CPU kernels."""
    import cupy_emulation

    cupy_emulation.emulate(monkeypatch, launcher="node")
    return cupy_emulation


def test_a_failing_first_launch_switches_to_the_cupy_launcher(emulated):
    """A driver that refuses the C++ launcher's first launch: one RuntimeWarning, the call made
    through the CuPy launcher (right results), the C++ launcher off from then on; a failure after a
    successful launch is raised as it is."""
    x = torch.rand(7, 3, 4) * 2
    ref, _ = lif_multistep_torch(x)
    cfg, _ = _common.make_config(2.0, 1.0, 0.0, True, False, "sigmoid", False, True)
    emulated.driver["launch_result"] = 201  # CUDA_ERROR_INVALID_CONTEXT
    with pytest.warns(RuntimeWarning, match="launching through CuPy"):
        s, _ = _common.run_fused(cuda._ops, x, None, cfg, None)
    assert torch.equal(s, ref) and neuron_cuda_node.node() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the CuPy launcher, no second warning
        s, _ = _common.run_fused(cuda._ops, x, None, cfg, None)
    assert torch.equal(s, ref)


def test_a_launch_failure_after_a_successful_launch_is_raised(emulated):
    x = torch.rand(7, 3, 4) * 2
    cfg, _ = _common.make_config(2.0, 1.0, 0.0, True, False, "sigmoid", False, True)
    _common.run_fused(cuda._ops, x, None, cfg, None)
    emulated.driver["launch_result"] = 700  # CUDA_ERROR_ILLEGAL_ADDRESS
    with pytest.raises(RuntimeError, match="cuLaunchKernel failed with CUresult 700"):
        _common.run_fused(cuda._ops, x, None, cfg, None)
    assert neuron_cuda_node.node() is not None


def test_run_refuses_unknown_neurons_and_dtypes(emulated):
    launcher = neuron_cuda_node.node()
    x, st, pr = torch.rand(3, 2, 4), torch.zeros(1, 1), torch.ones(2, 1)
    args = (1, 1, False, True, False, 0, 1.0, False, False, False)
    with pytest.raises(ValueError, match="no CUDA kernel"):
        neuron_cuda_node.run(launcher, "izhikevich", x, st, pr, *args)
    with pytest.raises(TypeError, match="do not take torch.float16"):
        neuron_cuda_node.run(launcher, "if", x.half(), st.half(), pr, *args)
    with pytest.raises(TypeError, match="do not take torch.int64"):
        neuron_cuda_node.run(launcher, "lif", torch.ones(3, 2, 4, dtype=torch.long), st, pr, *args)
    out, state = neuron_cuda_node.run(launcher, "if", x, st, pr, *args)  # the same call, valid
    assert out.shape == x.shape and state.shape == x.shape[1:]


def _lif(dtype, learn_vth, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = (torch.randn(40, 3, 77, generator=g, device="cuda") * 1.2 + 0.6).to(dtype).requires_grad_()
    v0 = (torch.randn(3, 77, generator=g, device="cuda") * 0.4).to(dtype).requires_grad_()
    vth = torch.tensor(0.9, device="cuda", requires_grad=True) if learn_vth else 0.9
    w = torch.randn(40, 3, 77, generator=g, device="cuda").to(dtype)
    return x, v0, vth, w


def _both(monkeypatch, call):
    """``call()`` with the C++ launcher (the default) and with ``SPIKING_CUDA_LAUNCH=cupy``."""
    out = []
    for env in (None, "cupy"):
        if env is None:
            monkeypatch.delenv(neuron_cuda_node.ENV, raising=False)
        else:
            monkeypatch.setenv(neuron_cuda_node.ENV, env)
        out.append(call())
    return out


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("hard,return_v,sg", [(True, False, "sigmoid"), (False, True, "atan"),
                                              (True, True, "fast_sigmoid")])
def test_lif_through_the_cpp_launcher_equals_the_cupy_launcher(monkeypatch, launcher_built, dtype, hard,
                                                               return_v, sg):
    learn_vth = dtype in (torch.float32, torch.float64)

    def call():
        x, v0, vth, w = _lif(dtype, learn_vth)
        s, v = lif_multistep(x, v0, tau=1.7, v_threshold=vth, v_reset=-0.1 if hard else None,
                             surrogate=get_surrogate(sg), return_v=return_v, backend="cupy")
        wrt = [x, v0] + ([vth] if learn_vth else [])
        grads = torch.autograd.grad((s * w).sum() + (v.float() * 0.5).sum(), wrt)
        return s, v, grads, s.grad_fn.name()

    (s1, v1, g1, node), (s2, v2, g2, fn) = _both(monkeypatch, call)
    assert "CudaNeuronNode" in node and "CudaNeuronNode" not in fn
    assert torch.equal(s1, s2) and torch.equal(v1, v2)
    assert torch.equal(g1[0], g2[0]) and torch.equal(g1[1], g2[1])
    if learn_vth:  # the threshold's float64 per-neuron sums, reduced by torch in either launcher
        torch.testing.assert_close(g1[2], g2[2], rtol=1e-6, atol=0)
    with torch.no_grad():
        (a, _), (b, _) = _both(monkeypatch, lambda: lif_multistep(_lif(dtype, False)[0], backend="cupy"))
    assert a.grad_fn is None and torch.equal(a, b)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("name", ["if", "plif", "alif", "cuba_lif", "li"])
def test_template_neurons_through_the_cpp_launcher_equal_the_cupy_launcher(monkeypatch, launcher_built, name):
    from test_cuda_wrappers_emulated import PARAMS

    spec, cfg = get_neuron(name), multistep.make_config(0.0, False, True, "sigmoid")
    learns_k = bool(neuron_cuda.GRAD_PARAMS[name] & 1)

    def call():
        g = torch.Generator(device="cuda").manual_seed(4)
        x = (torch.rand((23, 4, 65), generator=g, device="cuda") * 3 - 0.5).requires_grad_()
        k = torch.tensor(PARAMS[name][0], device="cuda", requires_grad=learns_k)
        out, state = multistep.run(spec, x, (k, *PARAMS[name][1:]), cfg, None, "cupy")
        w = torch.randn(out.shape, generator=g, device="cuda")
        grads = torch.autograd.grad((out * w).sum() + sum(s.sum() for s in state), [x, k] if learns_k else [x])
        return out, state, grads

    (o1, s1, g1), (o2, s2, g2) = _both(monkeypatch, call)
    assert torch.equal(o1, o2) and all(torch.equal(a, b) for a, b in zip(s1, s2))
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))


@pytest.mark.gpu
@needs_gpu
def test_the_cpp_launcher_checks_nan_and_follows_the_current_stream(launcher_built):
    x = torch.rand(30, 8, 300, device="cuda") * 2
    bad = x.clone()
    bad[5, 2, 7] = float("nan")
    with pytest.raises(ValueError, match="contains NaN or inf"):
        lif_multistep(bad.requires_grad_(), backend="cupy")
    ref, _ = lif_multistep(x, backend="torch")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        y = x * 1.0
        s, _ = lif_multistep(y, backend="cupy")  # after the error the flag is clear again
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(s, ref)
    if torch.cuda.device_count() > 1:  # a tensor on another device than the current one
        s1, _ = lif_multistep(x.to("cuda:1"), backend="cupy")
        assert torch.equal(s1.cpu(), ref.cpu())
