"""The lean call path of the fused neurons (bench/call_overhead.py measures its host cost).

* A call that records a gradient goes through one autograd node: on CPU the extension's C++ node
  (``ext.apply``), on CUDA the Python ``autograd.Function`` of ``_common.make_ops``. That Python
  wrapper is checked here too, built over the CPU kernels, since no GPU may be present.
* A call that records no gradient runs the forward loop alone: no node, nothing saved.
* The static options of a call are built once per distinct value and reused; changing a layer's
  attribute between calls takes effect.
"""

from __future__ import annotations

import pytest
import torch

import spiking
from spiking.kernels import _common, cpu
from spiking.neuron import get_neuron, multistep
from spiking.neuron.functional import lif_multistep_torch


@pytest.fixture(scope="module", autouse=True)
def _extension():
    ok, why = cpu.available()
    if not ok:
        pytest.fail(f"the CPU extension must build on the test machine: {why}")


# the Python autograd.Function that the CUDA backend uses, over the CPU kernels
PYTHON_OPS = _common.make_ops("call_path_test", cpu._forward_impl, cpu._backward_impl)


def _grads(out, state, wrt):
    g = torch.Generator().manual_seed(11)
    w1 = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)
    w2 = torch.randn(state.shape, generator=g, dtype=torch.float64).to(state.dtype)
    return torch.autograd.grad((out * w1).sum() + (state * w2).sum(), wrt)


@pytest.mark.parametrize("ops", ["cpu", "python"])
@pytest.mark.parametrize("return_v", [False, True])
@pytest.mark.parametrize("hard", [True, False])
def test_eager_lif_wrappers_equal_the_torch_reference(ops, return_v, hard):
    """Spikes and membranes bit for bit, gradients of x, v0 and a learnable threshold within 1e-5,
    for the C++ node (CPU) and the Python Function (the CUDA wrapper)."""
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(9, 4, 6, generator=g) * 1.2 + 0.6).requires_grad_()
    v0 = (torch.randn(4, 6, generator=g) * 0.3).requires_grad_()
    vth = torch.tensor(0.9, requires_grad=True)
    kw = dict(tau=1.7, v_reset=-0.1 if hard else None, decay_input=True, detach_reset=False, surrogate="atan",
              return_v=return_v)
    cfg, _ = _common.make_config(kw["tau"], vth, kw["v_reset"], True, False, "atan", return_v)
    fused = cpu._ops if ops == "cpu" else PYTHON_OPS
    s, v = _common.run_fused(fused, x, v0, cfg, vth)
    s_ref, v_ref = lif_multistep_torch(x, v0, v_threshold=vth, **{**kw, "surrogate": spiking.neuron.surrogate.atan()})
    assert 0 < s_ref.sum() < s_ref.numel()
    assert torch.equal(s, s_ref) and torch.equal(v, v_ref)
    for a, b in zip(_grads(s, v, (x, v0, vth)), _grads(s_ref, v_ref, (x, v0, vth))):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5), float((a - b).abs().max())
    if ops == "cpu":
        assert type(s.grad_fn).__name__ == "CppFunction"  # one C++ node, no Python backward


@pytest.mark.parametrize("make", [spiking.LIF, spiking.IF, spiking.ALIF])
def test_calls_without_gradient_build_no_graph_and_save_nothing(make):
    """Under no_grad, and in grad mode for inputs without requires_grad: no node, nothing saved, the
    same spikes as the recorded call."""
    layer = make()
    x = torch.rand(6, 3, 8) * 2.0
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        with torch.no_grad():
            s1 = layer(x)
        s2 = layer(x)  # grad mode, nothing requires grad
    assert s1.grad_fn is None and s2.grad_fn is None and not saved
    s3 = layer(x.clone().requires_grad_())
    assert s3.grad_fn is not None and torch.equal(s1, s2) and torch.equal(s1, s3.detach())


def test_per_layer_parameters_get_their_gradients_back_in_their_own_shapes():
    """A learnable threshold of one value per layer through the C++ node: the loops' per-neuron
    gradients are summed back to one value, as the reference's autograd does; a two-state neuron's
    states (broadcast from one value each) get theirs through the expand."""
    spec = get_neuron("cuba_lif")
    cfg = multistep.make_config(0.0, False, True, "sigmoid")
    x = (torch.rand(11, 2, 7, dtype=torch.float64) * 2.0).requires_grad_()
    vth = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)  # CubaLIF learns its threshold
    i0, v0 = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (0.1, 0.2))
    grads = []
    for backend in ("torch", "cpu"):
        state0 = (i0.expand(2, 7), v0.expand(2, 7))  # two states (i, v), one value each
        out, state = multistep.run(spec, x, (0.5, 0.6, vth, 0.0), cfg, state0, backend)
        assert 0 < out.sum() < out.numel()
        grads.append(_grads(out, state[1], (x, vth, i0, v0)))
    for a, b in zip(*grads):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-10, rtol=1e-10), float((a - b).abs().max())


def test_nonfinite_x_is_refused_on_the_recorded_path_of_template_neurons():
    x = (torch.rand(5, 2, 3) * 2.0)
    x[3, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        spiking.IF()(x.requires_grad_())
    out = spiking.IF(check_inputs=False)(x)  # the check can be switched off
    assert out.shape == x.shape


def test_static_options_are_reused_and_follow_changed_attributes():
    a, _ = _common.make_config(2.0, 1.0, 0.0, True, False, "sigmoid", False)
    b, _ = _common.make_config(2.0, 1.0, 0.0, True, False, "sigmoid", False)
    c, _ = _common.make_config(3.0, 1.0, 0.0, True, False, "sigmoid", False)
    assert a is b and c.tau == 3.0 and a.tau == 2.0
    vth = torch.tensor(0.7)
    d, t = _common.make_config(2.0, vth, 0.0, True, False, "sigmoid", False)
    assert t is vth and d.v_threshold == 0.0  # a tensor threshold travels as a tensor
    layer = spiking.LIF()
    x = torch.full((6, 1, 4), 1.5)
    before = layer(x)
    layer.tau = 1.0  # no leak: the membrane reaches the threshold sooner
    after = layer(x)
    assert torch.equal(after, lif_multistep_torch(x, tau=1.0)[0]) and not torch.equal(before, after)


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("make", [lambda b: spiking.LIF(tau=1.37, v_threshold=0.77, backend=b),
                                  lambda b: spiking.IF(v_threshold=0.73, v_reset=0.11, backend=b),
                                  lambda b: spiking.PLIF(tau=1.61, backend=b)],
                         ids=["LIF", "IF", "PLIF"])
def test_a_layer_first_run_under_inference_mode_then_trains(make, backend):
    """The cached per-layer constants (fused paths) and parameter scalars (torch reference steps)
    made by an evaluation under inference_mode are normal tensors, so a later recorded call can
    save them for its backward."""
    layer = make(backend)
    x = torch.rand(5, 2, 4) * 2.0
    with torch.inference_mode():
        s_eval = layer(x)
    xg = x.clone().requires_grad_()
    s = layer(xg)
    s.sum().backward()
    assert torch.equal(s.detach(), s_eval) and xg.grad is not None
