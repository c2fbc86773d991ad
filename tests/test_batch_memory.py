"""The GPU evaluation batch sized by memory: the arithmetic and the probe's isolation everywhere,
the probes themselves on a CUDA device (skipped without one)."""
from __future__ import annotations

import pytest
import torch

import spiking
import spiking.plasticity.networks as nets
from spiking.runner import batch_memory
from spiking.runner.batch_memory import affine_working_set, batch_for_memory, memory_batch_size
from spiking.runner.evaluation import GPU_EVAL_BATCH, Evaluator, SpikeCounter, eval_batch_size, evaluate, uncounted

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_batch_fills_the_fraction_of_available_memory_left_after_the_fixed_part():
    assert batch_for_memory(1000, 100, 10, n=10_000, fraction=0.5) == 40  # (500 - 100) // 10
    assert batch_for_memory(1000, 100, 10, n=25, fraction=0.5) == 25  # at most the samples there are
    assert batch_for_memory(1000, 900, 10, n=100, fraction=0.5) == 1  # never below one sample
    assert batch_for_memory(1000, 0, 0, n=77) == 77  # a sample that needs no memory
    for bad in (dict(n=0), dict(n=2.5), dict(n=True), dict(n=5, fraction=0.0), dict(n=5, fraction=1.5),
                dict(n=5, fraction=float("nan"))):
        with pytest.raises(ValueError, match="n must|fraction"):
            batch_for_memory(1000, 0, 10, **bad)


def test_the_working_set_is_the_line_through_the_two_probes():
    seen = []

    def peak(b):
        seen.append(b)
        return 4096 + 300 * b

    small, large = batch_memory.PROBES
    assert affine_working_set(peak) == (4096.0, 300.0) and seen == [large, small, large]  # warm-up first
    # peaks that do not grow (allocator rounding): all of the larger peak per sample of the smaller probe
    assert affine_working_set(lambda b: 8192, probes=(8, 40)) == (0.0, 1024.0)
    assert affine_working_set(lambda b: 100 * b - 300, probes=(8, 40)) == (0.0, 100.0)  # fixed never negative
    for bad in ((8, 8), (40, 8), (0, 8)):
        with pytest.raises(ValueError, match="probes"):
            affine_working_set(peak, probes=bad)


def test_a_one_time_allocation_of_the_first_call_is_not_counted_per_sample():
    """A workspace allocated by the first forward and kept (so later peaks are measured above it)
    would otherwise land in the larger probe and inflate per_sample (seen on an H200)."""
    state = {"workspace": 150 * 2**20}

    def peak(b):  # the first call pays the workspace once
        once, state["workspace"] = state["workspace"], 0
        return 4096 + 300 * b + once

    assert affine_working_set(peak) == (4096.0, 300.0)


def test_without_a_cuda_sample_the_gpu_default_stays_and_cpu_samples_are_refused():
    model = torch.nn.Linear(4, 3)
    assert eval_batch_size({"device": "cuda:0"}, model) == GPU_EVAL_BATCH
    assert eval_batch_size({"device": "cpu"}, model, torch.zeros(1, 4), 500) == 256  # CPU: not probed
    with pytest.raises(ValueError, match="CUDA"):
        memory_batch_size(model, torch.zeros(1, 4), 10)
    with pytest.raises(ValueError, match="n must"):  # checked before any probe
        memory_batch_size(model, torch.zeros(1, 4), 0)


def _counted_models():
    torch.manual_seed(0)
    hooked = torch.nn.Sequential(torch.nn.Linear(6, 5), spiking.LIF(), torch.nn.Flatten(0, 1))
    dsr = nets.HLOPMLP((6, 5, 3), "dsr")  # its DSR neurons count into spike_total
    return [(hooked, lambda m, x: m(x.unsqueeze(0).repeat(4, 1, 1) * 4)), (dsr, lambda m, x: m(x * 4))]


@pytest.mark.parametrize("which", [0, 1])
def test_forwards_inside_uncounted_add_no_spikes(which):
    model, call = _counted_models()[which]
    x = torch.rand(16, 6)
    with torch.no_grad(), SpikeCounter(model) as alone:
        call(model, x)
    with torch.no_grad(), SpikeCounter(model) as probed:
        call(model, x)
        with uncounted(model):
            call(model, x)
            call(model, x)
        assert all(getattr(m, "spike_total", None) is not None for m in model.modules() if hasattr(m, "count_spikes"))
    assert sum(alone.counts.values()) > 0
    assert probed.counts == alone.counts


def test_the_evaluator_keeps_the_cpu_default():
    from spiking.data.streams import from_datasets  # noqa: PLC0415
    x, y = torch.randn(30, 4), torch.randint(0, 3, (30,))
    stream = from_datasets([((x, y), (x, y))])
    assert Evaluator(stream).batch_size_for(torch.nn.Linear(4, 3), stream[0]) == 256
    assert Evaluator(stream, batch_size=9).batch_size_for(torch.nn.Linear(4, 3), stream[0]) == 9


@pytest.mark.gpu
@needs_cuda
def test_probes_predict_the_peak_of_the_chosen_batch():
    """The affine model of the paper network's inference memory holds at a batch far from the
    probes: the peak at B = 2000 is within 10 % (+ 4 MiB) of fixed + B·per_sample."""
    torch.manual_seed(0)
    model = nets.HLOPMLP((784, 800, 800, 10), "dsr").cuda()
    sample = torch.randn(1, 784, device="cuda")
    n = memory_batch_size(model, sample, 10_000)
    assert model.training  # the probes ran in eval mode and left the mode as it was
    assert n == 10_000 or n > GPU_EVAL_BATCH
    fixed, per_sample = next(iter(batch_memory._cache[model].values()))
    assert per_sample > 784 * 4  # at least its own input
    peak = batch_memory._probe_peak(model.eval(), sample, 2000)
    predicted = fixed + 2000 * per_sample
    assert abs(peak - predicted) <= 0.1 * predicted + 4 * 2**20
    available = torch.cuda.mem_get_info()[0] + torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
    small = memory_batch_size(model, sample, 10_000, fraction=(fixed + 100.5 * per_sample) / available)
    assert 99 <= small <= 101  # the share of memory for 100 samples gives 100 (the memory read again)


@pytest.mark.gpu
@needs_cuda
def test_memory_sized_evaluation_matches_the_fixed_batch_and_counts():
    torch.manual_seed(0)
    model = nets.HLOPMLP((784, 800, 800, 10), "dsr").cuda()
    x, y = torch.randn(3000, 784) * 2, torch.randint(0, 10, (3000,))
    peak_before = batch_memory.peak_allocated("cuda")
    with SpikeCounter(model) as sized:
        acc, loss = evaluate(model, x, y, device="cuda")  # sized by memory (probes inside the counter)
    with SpikeCounter(model) as fixed:
        acc_f, loss_f = evaluate(model, x, y, batch_size=GPU_EVAL_BATCH, device="cuda")
    assert abs(acc - acc_f) <= 2 / 3000 and loss == pytest.approx(loss_f, rel=1e-3)
    for name in fixed.counts:
        assert sized.counts[name] == pytest.approx(fixed.counts[name], rel=1e-3), name
    assert batch_memory.peak_allocated("cuda") >= peak_before  # the probes' reset loses no peak
