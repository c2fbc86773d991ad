"""The fused CPU LIF (C++ extension built from cuda/lif_step.cuh) against the torch reference.

float64: spikes/membranes identical, gradients (x, v0, learnable threshold) within 1e-6.
float32: same op order, so spikes/membranes bit-identical; gradients within 1e-5.
float16/bfloat16: per-op rounding reproduced, so spikes/membranes bit-identical too.
"""

from __future__ import annotations

import itertools
import warnings
import zlib

import pytest
import torch

from spiking.kernels import auto_backend, cpu
from spiking.neuron.functional import lif_multistep, lif_multistep_torch
from spiking.neuron.module import LIF
from spiking.neuron.surrogate import SURROGATES, Surrogate, get_surrogate


@pytest.fixture(scope="module", autouse=True)
def _extension():
    ok, why = cpu.available()
    if not ok:
        pytest.fail(f"the CPU extension must build on the test machine: {why}")


SHAPES = [(7, 3, 5), (1, 2, 3), (53, 1, 17)]
CONFIGS = list(itertools.product(sorted(SURROGATES), [True, False], [True, False], [True, False]))


def _inputs(shape, dtype, seed, with_v0=True, learn_vth=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 1.2 + 0.6
    x.view(-1)[0] = 3.0  # at least one spike at t = 0, whatever T
    x = x.to(dtype).requires_grad_()
    v0 = (torch.randn(shape[1:], generator=g, dtype=torch.float64) * 0.5).to(dtype).requires_grad_() if with_v0 else None
    vth_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    vth = torch.tensor(0.9, dtype=vth_dtype, requires_grad=True) if learn_vth else 0.9
    return x, v0, vth


def _kwargs(sg, hard, decay, detach, vth, return_v=True, tau=1.7):
    return dict(tau=tau, v_threshold=vth, v_reset=-0.1 if hard else None, decay_input=decay,
                detach_reset=detach, surrogate=get_surrogate(sg), return_v=return_v)


def _grads(fn, x, v0, vth, kw, seed):
    s, v = fn(x, v0, **kw)
    g = torch.Generator().manual_seed(seed + 1)
    ws = torch.randn(s.shape, generator=g, dtype=torch.float64).to(s.dtype)
    wv = torch.randn(v.shape, generator=g, dtype=torch.float64).to(v.dtype)
    wrt = [t for t in (x, v0, vth) if isinstance(t, torch.Tensor)]
    grads = torch.autograd.grad((s * ws).sum() + (v * wv).sum(), wrt)
    return s, v, grads


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("sg,hard,decay,detach", CONFIGS)
def test_float64_matches_reference(shape, sg, hard, decay, detach):
    x, v0, vth = _inputs(shape, torch.float64, seed=zlib.crc32(repr((shape, sg, hard, decay, detach)).encode()) % 10_000)
    kw = _kwargs(sg, hard, decay, detach, vth)
    s_ref, v_ref, g_ref = _grads(lif_multistep_torch, x, v0, vth, kw, 3)
    s, v, g = _grads(cpu.lif_multistep_cpu, x, v0, vth, kw, 3)
    assert s.shape == s_ref.shape and v.shape == v_ref.shape
    assert torch.equal(s, s_ref)
    assert torch.equal(v, v_ref)
    assert s_ref.sum() > 0, "the input must make some neurons fire"
    for name, a, b in zip(("x", "v0", "v_threshold"), g, g_ref):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6, msg=lambda m: f"grad {name}: {m}")


@pytest.mark.parametrize("sg,hard,decay,detach", CONFIGS)
def test_float32_same_op_order_is_bit_exact(sg, hard, decay, detach):
    x, v0, vth = _inputs((29, 4, 33), torch.float32, seed=11)
    kw = _kwargs(sg, hard, decay, detach, vth)
    s_ref, v_ref, g_ref = _grads(lif_multistep_torch, x, v0, vth, kw, 5)
    s, v, g = _grads(cpu.lif_multistep_cpu, x, v0, vth, kw, 5)
    assert torch.equal(s, s_ref)
    assert torch.equal(v, v_ref)
    torch.testing.assert_close(g[0], g_ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g[1], g_ref[1], atol=1e-5, rtol=1e-5)
    # the threshold gradient sums T*N terms: compare relative to its scale
    torch.testing.assert_close(g[2], g_ref[2], atol=1e-5 * max(1.0, g_ref[2].abs().item()), rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("hard", [True, False])
@pytest.mark.parametrize("decay", [True, False])
def test_half_precision_rounding_is_reproduced(dtype, hard, decay):
    x, v0, _ = _inputs((23, 3, 41), dtype, seed=7, learn_vth=False)
    kw = _kwargs("atan", hard, decay, False, 0.9)
    s_ref, v_ref, g_ref = _grads(lif_multistep_torch, x, v0, 0.9, kw, 9)
    s, v, g = _grads(cpu.lif_multistep_cpu, x, v0, 0.9, kw, 9)
    assert torch.equal(s, s_ref)
    assert torch.equal(v, v_ref)
    tol = 2e-2 if dtype == torch.float16 else 1e-1   # the reference itself accumulates in 16 bits
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a.float(), b.float(), atol=tol, rtol=tol)


@pytest.mark.parametrize("return_v", [True, False])
@pytest.mark.parametrize("use", ["spikes", "v", "both"])
def test_partial_losses_and_float_threshold(return_v, use):
    """Gradient flows when only spikes, only the membrane, or both enter the loss; plain-number threshold."""
    x, v0, _ = _inputs((13, 2, 9), torch.float64, seed=21)
    kw = _kwargs("sigmoid", True, True, False, 1.1, return_v=return_v)
    outs = []
    for fn in (lif_multistep_torch, cpu.lif_multistep_cpu):
        s, v = fn(x, v0, **kw)
        loss = {"spikes": (s * torch.arange(s.numel()).reshape(s.shape)).sum(), "v": (v ** 2).sum()}
        loss["both"] = loss["spikes"] + loss["v"]
        outs.append(torch.autograd.grad(loss[use], (x, v0)))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_default_state_and_no_grad_path():
    x = torch.randn(9, 4, 6, dtype=torch.float64) + 0.5
    for hard in (True, False):
        kw = _kwargs("triangle", hard, True, False, 0.7, return_v=False)
        with torch.no_grad():
            s, v = cpu.lif_multistep_cpu(x, None, **kw)
        s_ref, v_ref = lif_multistep_torch(x, None, **kw)
        assert s.grad_fn is None
        assert torch.equal(s, s_ref) and torch.equal(v, v_ref)


def test_saves_only_h_seq():
    """Forward+backward memory: the only tensor of more than one step's size saved for backward is
    H_t [T, N] (x is not kept: LIF's backward does not read it); the rest is the threshold and the
    layer's three parameters."""
    x, v0, vth = _inputs((17, 5, 11), torch.float32, seed=1)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        s, v = cpu.lif_multistep_cpu(x, v0, **_kwargs("atan", True, True, False, vth))
    big = [t for t in saved if t.numel() > 3]
    assert len(big) == 1 and big[0].shape == (17, 5, 11) and big[0].dtype == torch.float32
    assert not any(t is x for t in saved)


def test_noncontiguous_input():
    base = torch.randn(6, 20, 4, dtype=torch.float64) + 0.5
    x = base.transpose(1, 2)  # [6, 4, 20] non-contiguous
    assert not x.is_contiguous()
    x = x.requires_grad_()
    kw = _kwargs("fast_sigmoid", False, False, True, 0.8)
    s_ref, v_ref, g_ref = _grads(lif_multistep_torch, x, None, 0.8, kw, 2)
    s, v, g = _grads(cpu.lif_multistep_cpu, x, None, 0.8, kw, 2)
    assert torch.equal(s, s_ref) and torch.equal(v, v_ref)
    torch.testing.assert_close(g[0], g_ref[0], atol=1e-6, rtol=1e-6)


def test_dispatcher_and_module_use_the_cpu_path():
    x = torch.randn(10, 3, 7) + 0.5
    assert auto_backend(x) == "cpu"
    s_auto, _ = lif_multistep(x, backend="auto")
    s_ref, _ = lif_multistep(x, backend="torch")
    assert torch.equal(s_auto, s_ref)
    lif = LIF(tau=3.0, surrogate="atan", learn_threshold=True, backend="cpu")
    xr = x.clone().requires_grad_()
    lif(xr).sum().backward()
    ref = LIF(tau=3.0, surrogate="atan", learn_threshold=True, backend="torch")
    xr2 = x.clone().requires_grad_()
    ref(xr2).sum().backward()
    torch.testing.assert_close(xr.grad, xr2.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lif.v_threshold.grad, ref.v_threshold.grad, atol=1e-4, rtol=1e-5)


def test_custom_op_registration_and_torch_compile():
    x, v0, vth = _inputs((5, 2, 3), torch.float32, seed=4)
    args = (x, v0, vth, 0.0, 2.0, 0.0, True, True, False, Surrogate("atan", 2.0).kernel_id, 2.0, True, True, True)
    torch.library.opcheck(cpu._forward_op, args, test_utils=("test_schema", "test_autograd_registration",
                                                              "test_faketensor"))

    def f(x, v0, vth):
        s, v = cpu.lif_multistep_cpu(x, v0, tau=2.0, v_threshold=vth, v_reset=0.0, surrogate="atan", return_v=True)
        return s.sum() + (v * v).sum()

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    g_c = torch.autograd.grad(compiled(x, v0, vth), (x, v0, vth))
    g_e = torch.autograd.grad(f(x, v0, vth), (x, v0, vth))
    for a, b in zip(g_c, g_e):
        torch.testing.assert_close(a, b)


def test_errors_name_the_problem():
    with pytest.raises(RuntimeError, match="CPU tensors"):
        cpu.lif_multistep_cpu(torch.empty(3, 2, device="meta"))
    with pytest.raises(TypeError, match="v0"):
        cpu.lif_multistep_cpu(torch.zeros(3, 2), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="v0"):
        cpu.lif_multistep_cpu(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(TypeError, match="x"):
        cpu.lif_multistep_cpu(torch.zeros(3, 2, dtype=torch.int32))


def test_missing_compiler_is_an_error_when_forced_and_a_warning_on_auto(monkeypatch, caplog):
    """The error and the one fallback warning carry the build's real reason (here: no compiler)."""
    from spiking.kernels import extension

    def no_compiler(*args):
        raise OSError("c++: command not found")

    monkeypatch.setattr(extension, "cached_build", no_compiler)  # the build finds no compiler
    monkeypatch.setattr(cpu, "_EXT", extension.CachedExtension(cpu._EXT.kind, cpu._EXT.sources, cpu._EXT.what,
                                                               units=cpu._EXT.units, error_prefix=cpu._EXT.error_prefix))
    import spiking.kernels as kernels

    monkeypatch.setattr(kernels, "_warned", set())
    x = torch.randn(4, 2, 3)
    with pytest.raises(RuntimeError, match="backend 'cpu'.*OSError: c\\+\\+: command not found"):
        lif_multistep(x, backend="cpu")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        s, _ = lif_multistep(x, backend="auto")
        lif_multistep(x, backend="auto")
    runtime = [w for w in rec if issubclass(w.category, RuntimeWarning)]
    assert len(runtime) == 1 and "c++: command not found" in str(runtime[0].message)
    assert not [r for r in caplog.records if r.name.startswith("spiking")]  # not also logged (printed twice)
    assert torch.equal(s, lif_multistep_torch(x)[0])


def test_recycled_large_buffers_never_alias_live_tensors():
    """Outputs >= 256 KiB come from a reuse cache: a freed buffer is reused, a live one never is."""
    cpu.empty_cache()
    x1 = torch.randn(40, 2, 32768) + 0.5
    x2 = torch.randn(40, 2, 32768) + 0.5
    kw = _kwargs("atan", True, True, False, 1.0, return_v=False)
    ref1, _ = lif_multistep_torch(x1, **kw)
    ref2, _ = lif_multistep_torch(x2, **kw)
    s1, _ = cpu.lif_multistep_cpu(x1, **kw)
    s2, _ = cpu.lif_multistep_cpu(x2, **kw)          # s1 alive: must get a different buffer
    assert s1.data_ptr() != s2.data_ptr()
    assert torch.equal(s1, ref1) and torch.equal(s2, ref2)
    ptr = s2.data_ptr()
    del s2
    assert cpu.load_extension().cached_bytes() >= x2.numel() * 4
    s3, _ = cpu.lif_multistep_cpu(x2, **kw)          # reuses the freed block, fully overwritten
    assert s3.data_ptr() == ptr and torch.equal(s3, ref2)
    del s3
    assert cpu.empty_cache() >= x2.numel() * 4
    assert cpu.load_extension().cached_bytes() == 0


def test_buffer_cache_keeps_the_newest_blocks_and_is_bounded():
    """Many output sizes (shapes changing over a run): the cache evicts the oldest blocks, holds at
    most 64, and a freed buffer of the newest size is still reused."""
    cpu.empty_cache()
    kw = _kwargs("sigmoid", True, True, False, 1.0, return_v=False)
    pages = []
    for k in range(80):                               # [T, N] spikes and [N] state: >= 256 KiB each
        x = torch.full((2, 65536 + 1024 * k), 0.6)
        s, _ = cpu.lif_multistep_cpu(x, **kw)
        ptr = s.data_ptr()
        del s, _
        pages.append(((2 * (65536 + 1024 * k) * 4 + 4095) // 4096) * 4096)
    held = cpu.load_extension().cached_bytes()
    assert 0 < held <= 64 * pages[-1]
    s, _ = cpu.lif_multistep_cpu(x, **kw)             # the newest size: served from the cache
    assert s.data_ptr() == ptr and torch.equal(s, lif_multistep_torch(x, **kw)[0])
    del s, _
    cpu.empty_cache()
    assert cpu.load_extension().cached_bytes() == 0


def test_large_output_streaming_stores_path():
    """Outputs >= 32 MiB take the non-temporal-store path; odd N exercises unaligned heads and tails."""
    x, _, vth = _inputs((16, 2, 262147), torch.float32, seed=13)
    kw = _kwargs("sigmoid", False, True, False, vth)
    s_ref, v_ref, g_ref = _grads(lif_multistep_torch, x, None, vth, kw, 17)
    s, v, g = _grads(cpu.lif_multistep_cpu, x, None, vth, kw, 17)
    assert s.numel() * 4 >= 32 << 20
    assert torch.equal(s, s_ref) and torch.equal(v, v_ref)
    torch.testing.assert_close(g[0], g_ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g[1], g_ref[1], atol=1e-5 * max(1.0, g_ref[1].abs().item()), rtol=1e-4)
