"""CUDA graphs of the training step: graph-safety errors and static-shape batching (CPU, with eager
stand-ins for capture), and graphed == eager accuracy matrices on a GPU."""
import copy

import pytest
import torch

from spiking.data import from_datasets
from spiking.models import SpikingMLP
from spiking.runner.cuda_graph import GraphedStep, check_cuda_graph, graph_safety
from spiking.runner.run import normalize_config, run
from spiking.runner.strategies import STRATEGIES


def _stream(n=70, tasks=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return from_datasets([((torch.rand(n, 20, generator=g), torch.arange(n) % 4),
                           (torch.rand(40, 20, generator=g), torch.arange(40) % 4)) for _ in range(tasks)],
                         scenario="domain", name="synth")


def test_graph_safety_classifies_every_method():
    safe = {m for m, cls in STRATEGIES.items() if graph_safety(cls, {})[0]}
    assert {"finetune", "ewc", "gpm", "hlop"} <= safe
    for method in ("replay", "joint", "multitask"):
        ok, why = graph_safety(STRATEGIES[method], {})
        assert not ok and why
    ok, why = graph_safety(STRATEGIES["hlop"], {"train_method": "ottt"})
    assert not ok and "ottt" in why
    assert graph_safety(STRATEGIES["hlop"], {"train_method": "dsr"})[0]


def test_cuda_graph_errors_name_the_setting():
    with pytest.raises(ValueError, match="cuda_graph needs a CUDA device"):
        normalize_config({"cuda_graph": True})
    with pytest.raises((ValueError, TypeError), match="cuda_graph"):
        normalize_config({"cuda_graph": 1})
    with pytest.raises(ValueError, match="method 'replay' cannot be captured.*replay buffer"):
        check_cuda_graph({"cuda_graph": True, "device": "cuda", "method": "replay", "options": {}},
                         STRATEGIES["replay"])
    check_cuda_graph({"cuda_graph": True, "device": "cuda", "method": "gpm", "options": {}}, STRATEGIES["gpm"])


def _eager_capture(log):
    """Stand-in for capture_cuda_graph: 'recording' does not run the step; replay runs it eagerly
    on whatever the static buffers hold at that time (as a CUDA graph would)."""
    def capture(step):
        log.append("capture")
        out = torch.zeros(())
        def replay():
            log.append("replay")
            out.copy_(step())
        return replay, out
    return capture


def test_graphed_step_trains_every_batch_once_like_eager():
    stream = _stream()
    task0, task1 = stream[0], stream[1]
    torch.manual_seed(0)
    model = SpikingMLP([20, 16, 4], T=3)
    cfg = normalize_config({"lr": 0.05, "hidden": [16], "T": 3}, custom_stream=True)
    eager, graphed = (STRATEGIES["finetune"]() for _ in range(2))
    eager.setup(model, stream, cfg)
    graphed.setup(copy.deepcopy(model), stream, cfg)
    log = []
    step = GraphedStep(graphed, batch_size=16, warmup=2, warm=lambda fn: (log.append("warm"), fn())[1],
                       capture=_eager_capture(log))
    losses_e, losses_g = [], []
    for task in (task0, task1):
        step.reset()
        for x, y in eager.batches(task, 16, torch.Generator().manual_seed(task.index)):
            losses_e.append(float(eager.train_step(x, y, task)))
            losses_g.append(float(step(x, y, task)))
    # 70 samples = 4 full batches + 6: per task 2 warm-up, 1 capture + 2 replays, the partial one eager
    assert log == ["warm", "warm", "capture", "replay", "replay"] * 2
    assert step.captures == 2
    assert losses_g == pytest.approx(losses_e, rel=0, abs=0)
    for pe, pg in zip(eager.model.parameters(), graphed.model.parameters()):
        assert torch.equal(pe, pg)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method,options", [("finetune", {}), ("hlop", {"train_method": "dsr", "lateral": "4,4,4"}),
                                            ("gpm", {})])
def test_graphed_run_matches_eager_on_gpu(method, options):
    cfg = dict(method=method, options=options, hidden=[32, 32], batch_size=16, lr=0.05, device="cuda",
               progress=False)
    eager = run(cfg, stream=_stream(n=100, tasks=3))
    graphed = run({**cfg, "cuda_graph": True}, stream=_stream(n=100, tasks=3))
    assert torch.allclose(torch.tensor(graphed["acc_matrix"]), torch.tensor(eager["acc_matrix"]), atol=0.03)
