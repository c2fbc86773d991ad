"""The fused CPU path instantiated from the neuron template against the torch references.

For every registered neuron, both dtypes, every surrogate, hard/soft reset, detach_reset and both
charge forms: outputs and final states bit-identical, gradients (input, initial state, learnable
parameters) within 1e-5. Plus the registry's agreement with the kernels and bad-input errors.
"""

from __future__ import annotations

import pytest
import torch

import spiking
from spiking.kernels import neuron_cpu, neuron_cuda
from spiking.neuron import multistep
from spiking.neuron.registry import get_neuron, neuron_names

pytestmark = pytest.mark.skipif(not neuron_cpu.available(), reason="fused neuron extension does not build here")

CONFIGS = [("sigmoid", 0.0, False, True), ("atan", None, True, False), ("fast_sigmoid", -0.3, True, False),
           ("triangle", None, False, True)]


def _params(name, dtype):
    """Parameters of the registered neuron: random per-neuron values where the model allows them."""
    g = torch.Generator().manual_seed(3)
    spec = get_neuron(name)
    shape = (2, 3, 5)

    def rnd(lo, hi):
        return (lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)).to(dtype)

    return {
        "lif": lambda vr: (torch.tensor(0.9, dtype=dtype).requires_grad_(), 2.5, vr),  # one value per layer
        "if": lambda vr: (rnd(0.5, 1.5), vr),
        "plif": lambda vr: (rnd(0.2, 0.9).requires_grad_(), rnd(0.5, 1.5), vr),
        "alif": lambda vr: (rnd(0.2, 0.9), rnd(0.5, 1.5), vr, rnd(0.0, 2.0), rnd(0.5, 0.99)),
        "cuba_lif": lambda vr: (rnd(0.0, 0.9), rnd(0.2, 0.9), rnd(0.5, 1.5), vr),
        "li": lambda vr: (rnd(0.2, 0.9), rnd(-0.5, 0.5)),
    }[spec.name]


def _assert_fused_equals_reference(spec, x, params, cfg, state0):
    """Outputs and final states of the fused CPU path bit-identical to the torch reference;
    gradients (x, state0, learnable parameters) within 1e-5 (float32) / 1e-10 (float64)."""
    results = []
    for backend in ("torch", "cpu"):
        out, state = multistep.run(spec, x, spec.params(*params), cfg, state0, backend)
        w = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64).to(x.dtype)
        loss = (out * w).sum() + sum((s * (k + 1)).sum() for k, s in enumerate(state))
        learn = [p for p in params if isinstance(p, torch.Tensor) and p.requires_grad]
        grads = torch.autograd.grad(loss, [x, *state0, *learn])
        results.append((out.detach(), [s.detach() for s in state], grads))
    (o1, s1, g1), (o2, s2, g2) = results
    if spec.spiking:
        assert 0 < o1.sum() < o1.numel()
    assert torch.equal(o1, o2)
    assert all(torch.equal(a, b) for a, b in zip(s1, s2))
    tol = 1e-5 if x.dtype == torch.float32 else 1e-10
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=tol, rtol=tol), float((a - b).abs().max())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c[0])
@pytest.mark.parametrize("name", ["lif", "if", "plif", "alif", "cuba_lif", "li"])
def test_fused_cpu_equals_torch_reference(name, config, dtype):
    sg, v_reset, detach, decay = config
    spec = get_neuron(name)
    cfg = multistep.make_config(v_reset, detach, decay, sg)
    params = _params(name, dtype)(0.0 if v_reset is None else v_reset)
    g = torch.Generator().manual_seed(4)
    x = (torch.rand((23, 2, 3, 5), generator=g, dtype=torch.float64) * 3.0 - 0.8).to(dtype).requires_grad_()
    state0 = tuple((torch.rand((2, 3, 5), generator=g, dtype=torch.float64) * 0.5).to(dtype).requires_grad_()
                   for _ in spec.states)
    _assert_fused_equals_reference(spec, x, params, cfg, state0)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name, dtype, shape", [
    ("plif", torch.float64, (3, 1, 120_007)),  # per-neuron parameters with gradients: 80 B per neuron
    ("li", torch.float64, (2, 1, 600_001)),    # one value per layer: 8 B per neuron
    ("if", torch.float32, (2, 3, 400_003)),
])
def test_fused_cpu_blocks_of_many_chunks(name, dtype, shape, threads):
    """Layers wider than one block of the CPU loops (2 MiB of per-neuron buffers per block: each
    task walks several blocks, each block many chunks, the last ones partial) against the reference."""
    spec = get_neuron(name)
    cfg = multistep.make_config(None, False, True, "triangle")
    g = torch.Generator().manual_seed(8)

    def rnd(lo, hi, size=shape[1:]):
        return (lo + (hi - lo) * torch.rand(size, generator=g, dtype=torch.float64)).to(dtype)

    params = {"plif": (rnd(0.2, 0.9).requires_grad_(), rnd(0.5, 1.5).requires_grad_(), 0.0),
              "li": (0.4, 0.1), "if": (1.0, 0.0)}[name]
    x = (rnd(-0.8, 2.2, shape)).requires_grad_()
    state0 = tuple(rnd(0.0, 0.5).requires_grad_() for _ in spec.states)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _assert_fused_equals_reference(spec, x, params, cfg, state0)
    finally:
        torch.set_num_threads(before)


def test_long_sequence_float32_gradients_within_1e5():
    """T = 1000, float32: the fused PLIF's tau gradient (summed in double) stays within 1e-5 of float64."""
    g = torch.Generator().manual_seed(6)
    x64 = torch.rand((1000, 4, 16), generator=g, dtype=torch.float64) * 2.0
    grads = {}
    for dtype, backend in ((torch.float64, "torch"), (torch.float32, "cpu")):
        m = spiking.PLIF(tau=4.0, v_reset=None, backend=backend).to(dtype)
        x = x64.to(dtype).requires_grad_()
        out = m(x)
        grads[dtype] = torch.autograd.grad(out.sum(), [x, m.w])
    for a, b in zip(grads[torch.float64], grads[torch.float32]):
        assert torch.allclose(a, b.double(), atol=1e-5, rtol=1e-5)


def test_registry_matches_kernels():
    ext = neuron_cpu.load_extension()
    names = list(ext.names())
    builtin = {"lif", "if", "plif", "alif", "cuba_lif", "li"}  # (docs/neurons.md registers a torch-only example)
    assert set(names) == builtin == set(neuron_cuda.TYPES) and builtin <= set(neuron_names())
    for i, name in enumerate(names):
        spec = get_neuron(name)
        ns, np_, nsave = ext.layout(i)
        assert (ns, np_) == (len(spec.states), len(spec.params._fields))
        assert neuron_cuda.LAYOUT[name] == (ns, np_, nsave)
        scalar, _, bwd_x, grad_mask = ext.traits(i)
        assert bool(scalar) == (name in neuron_cuda.SCALAR_PARAMS)
        assert (not bwd_x) == (name in neuron_cuda.IGNORES_X)
        assert grad_mask == neuron_cuda.GRAD_PARAMS.get(name, (1 << np_) - 1)


def test_the_graph_keeps_x_only_where_the_backward_reads_it():
    """IF's backward reads only its saved H_t (BWD_X = 0): its graph does not hold the input;
    ALIF's reads x, and LI saves nothing, so x gives its backward the shape."""
    ext = neuron_cpu.load_extension()
    for name, kept in (("if", False), ("alif", True), ("li", True)):
        assert bool(ext.traits(neuron_cpu.cpu.dynamics_id(name))[2]) == (name != "if")
        spec = get_neuron(name)
        x = (torch.rand(5, 2, 3, 5) * 3).requires_grad_()
        cfg = multistep.make_config(0.0, False, True, "sigmoid")
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            out, _ = multistep.run(spec, x, _params(name, torch.float32)(0.0), cfg, backend="cpu")
        assert saved, name  # the fused node saved something, through the hooks
        assert any(t.data_ptr() == x.data_ptr() for t in saved) == kept, name
        out.sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()


def test_auto_backend_uses_fused_path_and_torch_for_other_dtypes():
    x = torch.rand(4, 2, 3) * 3
    assert multistep._resolve_backend(None, x, get_neuron("alif")) == "cpu"
    torch_only = get_neuron("if").__class__(**{**get_neuron("if").__dict__, "name": "no_kernel_neuron"})
    assert multistep._resolve_backend(None, x, torch_only) == "torch"
    with pytest.raises(RuntimeError, match="no fused CPU kernel"):
        multistep.run(torch_only, x, (1.0, 0.0), multistep.make_config(0.0, False, True, "sigmoid"), backend="cpu")
    assert multistep._resolve_backend(None, x.half()) == "torch"
    out = spiking.IF()(x.half())
    assert out.dtype == torch.float16 and torch.equal(out.float(), spiking.IF()(x))


def test_stateful_continues_the_sequence():
    x = torch.rand(10, 2, 7, dtype=torch.float64) * 2
    for M in (spiking.IF, spiking.PLIF, spiking.ALIF, spiking.CubaLIF, spiking.LI):
        whole = M()(x)
        m = M(stateful=True)
        parts = torch.cat([m(x[:4]), m(x[4:])])
        assert torch.equal(whole.detach(), parts.detach()), M.__name__
        m.reset_state()
        assert torch.equal(m(x[:4]).detach(), whole[:4].detach())


def test_single_step_api_matches_multistep():
    x = torch.rand(6, 3, 4, dtype=torch.float64) * 2
    m = spiking.CubaLIF()
    state, outs = None, []
    for xt in x:
        o, state = m.step(xt, state)
        outs.append(o)
    assert torch.equal(torch.stack(outs), m(x))


# ---------------------------------------------------------------------------------- bad input


def test_unknown_neuron_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown name 'lifx'.*registered neurons: \[.*'alif'.*'cuba_lif'"):
        get_neuron("lifx")


@pytest.mark.parametrize("make,arg", [
    (lambda: spiking.PLIF(tau=1.0), "tau"),
    (lambda: spiking.ALIF(tau=0.5), "tau"),
    (lambda: spiking.ALIF(tau_adapt=0.9), "tau_adapt"),
    (lambda: spiking.ALIF(beta=-1.0), "beta"),
    (lambda: spiking.CubaLIF(tau_syn=0.5), "tau_syn"),
    (lambda: spiking.CubaLIF(tau_mem=float("nan")), "tau_mem"),
    (lambda: spiking.LI(tau=0.0), "tau"),
    (lambda: spiking.IF(v_threshold=float("inf")), "v_threshold"),
    (lambda: spiking.IF(v_reset="zero"), "v_reset"),
    (lambda: spiking.PLIF(channels=0), "channels"),
    (lambda: spiking.RLIF(0), "features"),
    (lambda: spiking.RLIF(4, tau=0.5), "tau"),
    (lambda: spiking.IF(backend="gpu"), "backend"),
])
def test_parameters_out_of_range_name_the_argument(make, arg):
    with pytest.raises(ValueError, match=rf"^{arg}\b"):
        make()


def test_bad_tensors_are_named():
    with pytest.raises(ValueError, match="x contains NaN"):
        spiking.IF()(torch.tensor([[float("nan")]]))
    with pytest.raises(ValueError, match="per-channel PLIF with 3 channels"):
        spiking.PLIF(channels=3)(torch.rand(2, 2, 4))
    with pytest.raises(ValueError, match=r"state0.v must have the shape"):
        spiking.neuron.if_multistep(torch.rand(2, 2, 4), v0=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="parameter v_threshold of shape"):
        multistep.run(get_neuron("if"), torch.rand(2, 2, 4), (torch.ones(3), 0.0), multistep.make_config(0.0, False,
                      True, "sigmoid"))
    with pytest.raises(ValueError, match="RLIF|x must have shape"):
        spiking.RLIF(4)(torch.rand(2, 3, 5))


def test_lif_definition_takes_one_value_per_layer():
    """LIF's definition keeps its parameters in registers (SCALAR_PARAMS): per-neuron values are
    refused by name on the fused path; the torch reference takes them."""
    cfg = multistep.make_config(0.0, False, True, "sigmoid")
    x = torch.rand(3, 2, 4) * 2
    params = (1.0, torch.full((4,), 2.0), 0.0)
    with pytest.raises(ValueError, match=r"lif: the fused kernel takes one value per layer .*'tau'"):
        multistep.run(get_neuron("lif"), x, params, cfg, backend="cpu")
    out, _ = multistep.run(get_neuron("lif"), x, params, cfg, backend="torch")
    assert torch.equal(out, spiking.lif_multistep(x, backend="torch")[0])
    tau = torch.tensor(2.0, requires_grad=True)  # LIF's fused step gives a gradient for v_threshold only
    with pytest.raises(ValueError, match="lif: parameter tau has no gradient on the fused path"):
        multistep.run(get_neuron("lif"), x, (1.0, tau, 0.0), cfg, backend="cpu")


@pytest.mark.parametrize("name, params, field", [
    ("li", lambda p: (p, 0.0), "k"),                 # LI's fused step gives no parameter gradients
    ("if", lambda p: (1.0, p), "v_reset"),           # IF's: for v_threshold only
    ("alif", lambda p: (p, 1.0, 0.0, 0.2, 0.9), "k"),  # ALIF's: none
    ("cuba_lif", lambda p: (0.5, p, 1.0, 0.0), "k"),  # CubaLIF's: for v_threshold only
    ("plif", lambda p: (0.5, 1.0, p), "v_reset"),     # PLIF's: for k and v_threshold
])
def test_parameters_without_fused_gradients_are_refused(name, params, field):
    """A learnable parameter the definition gives no gradient for (GRAD_PARAMS) is refused by name
    on the fused path (not a silent zero gradient); the torch reference differentiates it."""
    cfg = multistep.make_config(0.0, False, True, "sigmoid")
    x = torch.rand(3, 2, 4) * 2
    p = torch.tensor(0.4, requires_grad=True)
    with pytest.raises(ValueError, match=f"{name}: parameter {field} has no gradient on the fused path"):
        multistep.run(get_neuron(name), x, params(p), cfg, backend="cpu")
    out, _ = multistep.run(get_neuron(name), x, params(p), cfg, backend="torch")
    (grad,) = torch.autograd.grad(out.sum(), [p])
    assert grad != 0
