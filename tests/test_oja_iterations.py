"""The native Oja-iterations op (spiking/kernels/oja_iterations.cpp) against the Python reference loop."""
import pytest
import torch
from torch import nn

from spiking.kernels import extension
from spiking.kernels import oja_iterations as native
from spiking.plasticity import hebbian
from spiking.plasticity.hebbian import hebbian_args, oja_iterations_many, oja_iterations_reference
from spiking.plasticity.hlop import HLOP
from spiking.runner.overhead import OpCounter

needs_op = pytest.mark.skipif(not native.available(), reason=f"no native Oja op: {native.extension().error()}")

# (rows, frozen rows, features, Hebbian rate) of three banks with different rates
SHAPES = ((6, 2, 12, 0.01), (9, 4, 20, 0.05), (3, 0, 7, 0.01))


def _banks(dtype, quantise, seed=0, batch=16, in_op=False):
    """Fresh ``(H, m)`` per bank and the Oja arguments of their learning rows: the frozen residual
    computed here, or (``in_op``) left to the iterations through the frozen basis."""
    g = torch.Generator().manual_seed(seed)
    state, args = [], []
    for M, frozen, N, lr in SHAPES:
        H = (0.3 * torch.randn(M, N, generator=g)).to(dtype)
        m = (0.01 * torch.randn(M, N, generator=g)).to(dtype)
        X = torch.randn(batch, N, generator=g).to(dtype)
        state.append((H, m))
        basis = H[:frozen].clone() if in_op and frozen else None
        args.append(hebbian_args(H, m, X, frozen, lr, quantise, basis=basis))
    return state, args


@needs_op
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("quantise", [None, (2.0, 8.0)])
@pytest.mark.parametrize("in_op", [False, True])
def test_native_op_equals_the_reference_bitwise(dtype, quantise, in_op):
    """Same at:: ops in the same order: H and m equal bit for bit, frozen rows untouched; clip active;
    the frozen residual given, or formed from the basis (in the op, or by basis_residual)."""
    ref_state, ref_args = _banks(dtype, quantise, in_op=in_op)
    nat_state, nat_args = _banks(dtype, quantise, in_op=in_op)
    assert any(b.basis is not None for b in nat_args) == in_op
    before = [H.clone() for H, _ in ref_state]
    oja_iterations_reference(ref_args, iters=5, clip=0.05, momentum=0.8, quantise=quantise)
    with OpCounter() as c:
        oja_iterations_many(nat_args, iters=5, clip=0.05, momentum=0.8, quantise=quantise)
    assert c.ops == {"oja_iterations": 1}  # all banks and iterations: one dispatched op
    for (H_ref, m_ref), (H_nat, m_nat), H0, (_, frozen, _, _) in zip(ref_state, nat_state, before, SHAPES):
        assert torch.equal(H_nat, H_ref) and torch.equal(m_nat, m_ref)
        assert torch.equal(H_nat[:frozen], H0[:frozen]) and not torch.equal(H_nat[frozen:], H0[frozen:])


@needs_op
def test_hlop_hebbian_step_is_the_same_with_and_without_the_op(monkeypatch):
    """Two tasks of HLOP on a small MLP (frozen rows, handed-over residual, per-layer rates): same banks."""
    def train():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 4))
        hlop = HLOP(model, schedule=[[3, 2]], lr=[0.02, 0.05])
        g = torch.Generator().manual_seed(1)
        for task in range(2):
            hlop.before_task(task)
            for _ in range(3):
                model(torch.randn(32, 10, generator=g)).sum().backward()
                hlop.hebbian_step()
            hlop.after_task(task)
        return [b.H for b in hlop.banks.values()]

    fast = train()
    monkeypatch.setattr(hebbian._native, "available", lambda: False)
    slow = train()
    assert all(torch.equal(a, b) for a, b in zip(fast, slow))


def test_without_a_compiler_the_reference_runs(monkeypatch):
    """A failed build falls back to the Python loop (same results), as the other extensions do."""
    def no_compiler(*args):
        raise OSError("c++: command not found")

    monkeypatch.setattr(extension, "cached_build", no_compiler)
    monkeypatch.setattr(native, "_EXT", extension.CachedExtension(native._EXT.kind, native._EXT.sources,
                                                                  native._EXT.what))
    assert not native.available() and "c++: command not found" in native.extension().error()
    state, args = _banks(torch.float32, None)
    ref_state, ref_args = _banks(torch.float32, None)
    oja_iterations_many(args, iters=3)
    oja_iterations_reference(ref_args, iters=3)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(state, ref_state))
    with pytest.raises(RuntimeError, match="c\\+\\+: command not found"):
        native.oja_iterations(args, 3, 10.0, 0.9)


def test_rows_autograd_tracks_take_the_reference():
    """The op has no autograd formula: a bank whose tensors need a gradient runs the Python loop."""
    H = torch.randn(3, 5, requires_grad=True)
    X = torch.randn(8, 5)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):  # the reference's own error
        oja_iterations_many([(H, torch.zeros(3, 5), X, X, 0.01, H.t())], iters=1)


@needs_op
def test_bad_input_names_the_argument():
    H, m, X = torch.zeros(3, 5), torch.zeros(3, 5), torch.zeros(8, 5)
    bank = (H, m, X, X, 0.01)
    cases = [
        ([(H, m, torch.zeros(8, 4), torch.zeros(8, 4), 0.01)], {}, ValueError, r"X\[0\] must be \[B, 5\]"),
        ([bank, (H, torch.zeros(2, 5), X, X, 0.01)], {}, ValueError, r"m_new\[1\] must have the shape of H_new\[1\]"),
        ([(H, m, X, torch.zeros(7, 5), 0.01)], {}, ValueError, r"X_res\[0\] must have the shape of X\[0\]"),
        ([(H, m, torch.zeros(0, 5), torch.zeros(0, 5), 0.01)], {}, ValueError, r"X\[0\] has no rows"),
        ([(torch.zeros(5), m, X, X, 0.01)], {}, ValueError, r"H_new\[0\] must be \[M, N\]"),
        ([(H, m, X.double(), X, 0.01)], {}, TypeError, "bank 0 mixes dtypes"),
        ([(H.long(), m.long(), X.long(), X.long(), 0.01)], {}, TypeError, r"H_new\[0\] must be floating point"),
        ([(H, m, X, None, 0.01, None, torch.zeros(2, 4))], {}, ValueError, r"basis\[0\] must be \[n, 5\]"),
        ([(H, m, X, None, 0.01, None, torch.zeros(2, 5).double())], {}, TypeError, "bank 0 mixes dtypes"),
        ([bank], {"iters": -1}, ValueError, "iters must be >= 0"),
        ([bank], {"clip": -1.0}, ValueError, "clip must be >= 0"),
        ([bank], {"quantise": (0.0, 8.0)}, ValueError, "quantise scale and timesteps must be > 0"),
        ([bank], {"quantise": (1.0, 8.0, 2.0)}, ValueError, r"quantise must be \(scale, timesteps\)"),
    ]
    for banks, kw, error, message in cases:
        settings = {"iters": 2, "clip": 10.0, "momentum": 0.9, "quantise": None, **kw}
        before = H.clone()
        with pytest.raises(error, match=message):
            native.oja_iterations(banks, **settings)
        assert torch.equal(H, before)  # checked before any update
    with pytest.raises(ValueError, match="one entry per bank"):
        torch.ops.spiking_oja.oja_iterations([H], [m, m], [X], [X], [None], [0.01], 1, 10.0, 0.9, None)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@needs_op
@pytest.mark.parametrize("quantise", [None, (2.0, 8.0)])
def test_native_op_on_cuda_equals_the_reference_on_cuda(quantise):
    """The same at:: calls on CUDA tensors (no device code of its own): equal to the Python loop run
    on the GPU, and (unquantised: no rounding bin to flip) to the CPU result within float tolerance."""
    cpu_state, cpu_args = _banks(torch.float32, quantise, in_op=True)
    oja_iterations_many(cpu_args, iters=5, clip=0.05, momentum=0.8, quantise=quantise)
    results = []
    for run in (oja_iterations_many, oja_iterations_reference):
        state, args = _banks(torch.float32, quantise, in_op=True)
        state = [(H.cuda(), m.cuda()) for H, m in state]
        args = [hebbian_args(H, m, a.X.cuda(), frozen, lr, quantise,
                             basis=None if a.basis is None else a.basis.cuda())
                for (H, m), a, (_, frozen, _, lr) in zip(state, args, SHAPES)]
        run(args, iters=5, clip=0.05, momentum=0.8, quantise=quantise)
        torch.cuda.synchronize()
        results.append([H.cpu() for H, _ in state])
    for H_nat, H_ref, (H_cpu, _) in zip(*results, cpu_state):
        assert torch.allclose(H_nat, H_ref, rtol=1e-5, atol=1e-6)
        assert quantise is not None or torch.allclose(H_nat, H_cpu, rtol=1e-4, atol=1e-5)
