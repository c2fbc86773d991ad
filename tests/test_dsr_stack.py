"""The fused DSR stack (spiking/kernels/dsr_stack_cpu.cpp) against the unfused DSR ops."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from spiking.kernels import dsr_stack as ds
from spiking.neuron.dsr import _normalised_weights, drive_coefficients
from spiking.plasticity.networks import HLOPMLP

pytestmark = pytest.mark.skipif(not ds.extension().available(), reason="no C++ toolchain: " + ds.extension().error())

BETA = math.exp(-0.05)
TAU, W0, SHIFT = 1.0 / (1.0 - BETA), 0.7, drive_coefficients(1.0, 1.0, 0.05, 0.3)[1]


def _stack(sizes, B, T, gain, seed):
    g = torch.Generator().manual_seed(seed)
    x1 = torch.rand(B, sizes[0], generator=g) * gain
    weights = [torch.randn(a, b, generator=g) * 0.6 for a, b in zip(sizes[:-1], sizes[1:])]
    scales = torch.rand(len(weights), generator=g) * 0.1 + 0.02
    return x1, weights, scales, _normalised_weights(T, 1.0, 0.05, torch.float32, "cpu").view(-1)


# (2100, 150, 70): Wᵀ wider than one L2 panel (three panels of 64, 64 and 22 columns: whole
# vectors and single ones), and 40 samples: two sample blocks
@pytest.mark.parametrize("sizes,B,T", [((50, 43), 37, 20), ((8, 9, 7, 5), 3, 1), ((64, 33), 1, 55), ((17,), 5, 4),
                                       ((2100, 150, 70), 40, 7)])
@pytest.mark.parametrize("gain", [0.08, 0.4])  # sparse and dense (> 20 %: the reference's product is dense then)
def test_counts_and_weighted_drives_equal_the_unfused_path(sizes, B, T, gain):
    x1, weights, scales, wn = _stack(sizes, B, T, gain, seed=B + T)
    counts, whats = ds.dsr_stack(x1, weights, scales, wn, TAU, W0, SHIFT)
    ref_counts, ref_whats = ds.dsr_stack_reference(x1, weights, scales, wn, TAU, W0, SHIFT)
    assert len(counts) == len(sizes) and len(whats) == len(sizes) - 1
    if T >= 20 or gain > 0.35:  # from w0 = 0.7 a weak drive needs many steps to fire
        assert float(counts[0].sum()) > 0
    for c, r in zip(counts, ref_counts):
        assert torch.equal(c, r)  # the same spikes, step for step
    for w, r in zip(whats, ref_whats):
        torch.testing.assert_close(w, r, rtol=1e-5, atol=1e-6)


def test_result_does_not_depend_on_the_thread_count():
    x1, weights, scales, wn = _stack((40, 30, 20), 64, 20, 0.3, seed=9)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ds.dsr_stack(x1, weights, scales, wn, TAU, W0, SHIFT)
        torch.set_num_threads(2)
        two = ds.dsr_stack(x1, weights, scales, wn, TAU, W0, SHIFT)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one[0] + one[1], two[0] + two[1]))


def test_bad_input_names_the_argument():
    x1, weights, scales, wn = _stack((6, 5), 2, 3, 0.3, seed=1)
    with pytest.raises(ValueError, match="x1"):
        ds.dsr_stack(x1[0], weights, scales, wn, TAU, W0, SHIFT)
    with pytest.raises(ValueError, match=r"weights_t\[0\]"):
        ds.dsr_stack(x1, [weights[0].t()], scales, wn, TAU, W0, SHIFT)
    with pytest.raises(ValueError, match="one scale per weight"):
        ds.dsr_stack(x1, weights, scales[:0], wn, TAU, W0, SHIFT)
    with pytest.raises(ValueError, match="wn"):
        ds.dsr_stack(x1, weights, scales, wn.view(1, -1), TAU, W0, SHIFT)


@pytest.mark.parametrize("sizes", [(30, 40, 33, 5), (20, 24, 18, 16, 4), (40, 16, 3)])  # (40, 16, 3): one hidden layer
def test_network_fused_and_unfused_give_the_same_logits_and_gradients(sizes):
    torch.manual_seed(0)
    fused = HLOPMLP(sizes, method="dsr")
    with torch.no_grad():
        for fc in fused.fcs:
            fc.weight.mul_(3.0)  # some saturation: threshold gradients too
    plain = copy.deepcopy(fused)
    plain._fused_dsr = lambda x: False
    x, y = torch.rand(17, sizes[0]) * 2, torch.randint(0, sizes[-1], (17,))
    assert fused._fused_dsr(x)
    with torch.inference_mode():
        assert torch.equal(fused.eval()(x), plain.eval()(x))
    fused.train(), plain.train()
    lf = fused.loss_backward(x, y, torch.nn.functional.cross_entropy)
    lp = plain.loss_backward(x, y, torch.nn.functional.cross_entropy)
    assert torch.equal(lf, lp)
    for (name, p), q in zip(fused.named_parameters(), plain.parameters()):
        assert torch.equal(p.grad, q.grad), name
    if len(sizes) > 3:  # saturation between hidden layers: the threshold gradients are compared too
        assert any(float(n.v_threshold.grad.abs()) > 0 for n in fused.neurons)
    for a, b in zip(fused.fcs, plain.fcs):  # the Hebbian rule's inputs
        assert torch.equal(a.last_input, b.last_input)


def test_network_keeps_the_unfused_path_where_it_must():
    net = HLOPMLP((10, 12, 12, 3), method="dsr", hebb_rate="weighted")
    x = torch.rand(4, 10)
    assert net.eval()._fused_dsr(x)  # evaluation records no Hebbian input
    assert not net.train()._fused_dsr(x)  # the weighted rate of the spikes is recorded
    assert not HLOPMLP((10, 12, 12, 3), method="dsr")._fused_dsr(x.double())
    hooked = HLOPMLP((10, 12, 12, 3), method="dsr")
    hooked.neurons[0].register_forward_hook(lambda *a: None)
    assert not hooked._fused_dsr(x)


def test_runner_spike_counts_are_the_same_fused_and_unfused():
    """The evaluation's SpikeCounter keeps the fused path (the neurons count themselves) and counts
    the spikes the unfused path's hooks would see."""
    from spiking.runner.evaluation import SpikeCounter, evaluate

    torch.manual_seed(2)
    fused = HLOPMLP((12, 30, 25, 4), method="dsr")
    with torch.no_grad():
        for fc in fused.fcs:
            fc.weight.mul_(3.0)
    plain = copy.deepcopy(fused)
    plain._fused_dsr = lambda x: False
    x, y = torch.rand(50, 12), torch.randint(0, 4, (50,))
    calls = []
    real = ds.dsr_stack
    try:
        ds.dsr_stack = lambda *a, **k: calls.append(1) or real(*a, **k)
        with SpikeCounter(fused) as cf:
            acc_f = evaluate(fused, x, y, batch_size=16)
    finally:
        ds.dsr_stack = real
    with SpikeCounter(plain) as cp:
        acc_p = evaluate(plain, x, y, batch_size=16)
    assert len(calls) == 4 and acc_f == acc_p  # 4 batches through the fused stack
    assert cf.counts == cp.counts and min(cf.counts.values()) > 0
    assert all(n.spike_total is None for n in fused.neurons)  # counting stopped on exit


def test_non_finite_drive_and_mixed_dtypes_are_refused():
    x1, weights, scales, wn = _stack((6, 5), 2, 3, 0.3, seed=1)
    x1[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        ds.dsr_stack(x1, weights, scales, wn, TAU, W0, SHIFT)
    with pytest.raises(TypeError, match="one floating dtype"):
        ds.dsr_stack(x1.nan_to_num(), [weights[0].double()], scales, wn, TAU, W0, SHIFT)
    counts, whats = ds.dsr_stack(x1[:0], weights, scales, wn, TAU, W0, SHIFT)  # an empty batch
    assert counts[0].shape == (0, 6) and whats[0].shape == (0, 5)


def test_without_weighted_drives_the_counts_are_the_same():
    x1, weights, scales, wn = _stack((40, 30, 20), 9, 20, 0.3, seed=4)
    counts, whats = ds.dsr_stack(x1, weights, scales, wn, TAU, W0, SHIFT)
    only, none = ds.dsr_stack(x1, weights, scales, wn, TAU, W0, SHIFT, weighted=False)
    ref, ref_none = ds.dsr_stack_reference(x1, weights, scales, wn, TAU, W0, SHIFT, weighted=False)
    assert len(whats) == 2 and none == [] and ref_none == []
    assert all(torch.equal(a, b) and torch.equal(a, r) for a, b, r in zip(counts, only, ref))
