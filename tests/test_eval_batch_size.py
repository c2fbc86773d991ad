"""The evaluation batch: the config's, else the model's own size by memory, else the device default."""
from __future__ import annotations

import pytest
import torch

import spiking.plasticity.networks as nets
from spiking.kernels import dsr_stack
from spiking.runner.evaluation import (CPU_EVAL_BATCH, GPU_EVAL_BATCH, Evaluator, eval_batch_size, evaluate,
                                       evaluate_batches)

fused = pytest.mark.skipif(not dsr_stack.extension().available(), reason="no C++ toolchain")


class Sized(torch.nn.Linear):
    """A model that sizes its own evaluation batch and records the batches it sees."""

    def __init__(self, size):
        super().__init__(4, 3)
        self.size, self.seen = size, []

    def eval_batch_size_for(self, device):
        return self.size

    def forward(self, x):
        self.seen.append(x.shape[0])
        return super().forward(x)


def test_config_then_model_then_device_default():
    cpu, gpu = {"eval_batch_size": None, "device": "cpu"}, {"eval_batch_size": None, "device": "cuda:0"}
    assert eval_batch_size({"eval_batch_size": 17, "device": "cpu"}, Sized(5)) == 17
    assert eval_batch_size(cpu, Sized(5)) == 5
    assert eval_batch_size(cpu, Sized(None)) == CPU_EVAL_BATCH
    assert eval_batch_size(gpu, torch.nn.Linear(2, 2)) == GPU_EVAL_BATCH
    assert eval_batch_size(cpu) == CPU_EVAL_BATCH


@pytest.mark.parametrize("bad", [0, -3, 2.5, "64", True])
def test_a_bad_size_from_the_model_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="eval_batch_size_for"):
        eval_batch_size({"eval_batch_size": None, "device": "cpu"}, Sized(bad))


def test_evaluate_runs_the_models_batch():
    model = Sized(7)
    x, y = torch.randn(30, 4), torch.randint(0, 3, (30,))
    evaluate(model, x, y)
    assert model.seen == [7, 7, 7, 7, 2]


@fused
def test_hlop_mlp_sizes_its_batch_by_memory_only_on_the_fused_path():
    model = nets.HLOPMLP((784, 800, 800, 10), "dsr")
    per_sample = 4 * (784 + 2 * 800 + 2 * 1600 + 10)
    assert model.eval_batch_size_for("cpu") == nets.EVAL_BYTES // per_sample > CPU_EVAL_BATCH
    assert nets.HLOPMLP((784, 800, 800, 10), "bptt").eval_batch_size_for("cpu") is None  # [T, B, N] tensors
    assert nets.HLOPMLP((20, 8, 3), "dsr").double().eval_batch_size_for("cpu") is None  # unfused in float64
    hooked = nets.HLOPMLP((20, 8, 3), "dsr")
    hooked.neurons[0].register_forward_hook(lambda *_: None)
    assert hooked.eval_batch_size_for("cpu") is None  # a hook needs the unfused spikes


@fused
def test_hlop_mlp_accuracy_does_not_depend_on_the_batch():
    torch.manual_seed(0)
    model = nets.HLOPMLP((20, 16, 16, 4), "dsr")
    x, y = torch.randn(300, 20) * 3, torch.randint(0, 4, (300,))
    assert model.eval_batch_size_for("cpu") >= 300
    (acc, loss), (acc7, loss7) = evaluate(model, x, y), evaluate(model, x, y, batch_size=7)
    assert acc == acc7 and loss == pytest.approx(loss7, rel=1e-5)  # the products' sums follow the batch


def test_batches_give_what_whole_tensors_give():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(30, 4), torch.randint(0, 3, (30,))
    whole = evaluate(model, x, y, batch_size=30)
    parts = evaluate_batches(model, [(x[:11], y[:11]), (x[11:], y[11:])])
    assert whole[0] == parts[0] and whole[1] == pytest.approx(parts[1], rel=1e-6)
    masked = evaluate_batches(model, [(x, y)], classes=(0, 1))
    assert masked == evaluate(model, x, y, classes=(0, 1))
    with pytest.raises(ValueError, match="at least one sample"):
        evaluate_batches(model, iter(()))
    with pytest.raises(ValueError, match="same number of samples"):
        evaluate(model, x, y[:-1])
    assert model.training  # restored


def test_the_evaluator_streams_a_task_in_the_models_batches():
    from spiking.data.streams import from_datasets  # noqa: PLC0415
    torch.manual_seed(0)
    x, y = torch.randn(30, 4), torch.randint(0, 3, (30,))
    stream = from_datasets([((x, y), (x, y))])
    model = Sized(7)
    acc, loss = Evaluator(stream).full(model, stream[0])
    assert model.seen == [7, 7, 7, 7, 2]
    model.seen = []
    assert (acc, loss) == evaluate(model, *stream[0].test_data())
