"""End-to-end GPU paths against their CPU twins: the memory, the HLOP runner and the LIF module.

The kernel-level checks live in test_kernels_cuda.py and test_memory_cuda.py; these run the
public APIs on a CUDA device. Skipped without CUDA + CuPy.
"""

import pytest
import torch

from spiking.kernels import cuda as lif_cuda
from spiking.memory import Macrocolumn

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not lif_cuda.available()[0], reason="needs a CUDA GPU and CuPy")]


def _patterns(M, n, a, seed):
    g = torch.Generator().manual_seed(seed)
    idx = torch.rand(M, n, generator=g).argsort(1)[:, :a]
    return torch.zeros(M, n).scatter_(1, idx, 1.0)


def test_macrocolumn_on_cuda_matches_cpu():
    X = _patterns(150, 784, 40, seed=0)
    cpu = Macrocolumn(784, 32, 16, seed=3)
    gpu = Macrocolumn(784, 32, 16, seed=3, device="cuda")
    c_cpu, _ = cpu.store(X)
    c_gpu, _ = gpu.store(X.cuda())
    # same seeded draws; float32 (GPU) vs float64 rounding may flip a winner at a rho edge
    assert (c_gpu.cpu() == c_cpu).float().mean() > 0.99
    code, G = gpu.recall(X.cuda())
    assert torch.equal(code.cpu(), c_gpu.cpu())            # stored traces come back exactly
    assert float(G.min()) > 0.99
    novel = _patterns(100, 784, 40, seed=1).cuda()
    assert float(gpu.familiarity(novel).mean()) < float(gpu.familiarity(X.cuda()).mean()) - 0.3


def test_lif_module_on_cuda_uses_kernel_and_matches_reference():
    from spiking.neuron.module import LIF

    x = (torch.randn(50, 8, 300, device="cuda") + 0.5).requires_grad_()
    fast, ref = LIF(tau=2.0), LIF(tau=2.0, backend="torch")
    s1 = fast(x)
    g1, = torch.autograd.grad(s1.sum(), x)
    s2 = ref(x)
    g2, = torch.autograd.grad(s2.sum(), x)
    assert torch.equal(s1, s2)
    assert torch.allclose(g1, g2, atol=1e-5)


@pytest.mark.parametrize("train_method", ["dsr", "bptt", "ottt"])
def test_hlop_runner_on_cuda_matches_cpu(train_method):
    from spiking.runner.run import run

    try:
        cfg = dict(method="hlop", dataset="pmnist", tasks=2, train_subset=3000, hidden=[100, 100],
                   epochs=1, batch_size=64, lr=0.1, seed=0, eval_subset=1000,
                   options={"train_method": train_method, "lateral": "60,40,40"})
        res_gpu = run({**cfg, "device": "cuda"})
    except FileNotFoundError as exc:  # pragma: no cover
        pytest.skip(f"MNIST not available: {exc}")
    res_cpu = run({**cfg, "device": "cpu"})
    R_gpu, R_cpu = torch.tensor(res_gpu["acc_matrix"]), torch.tensor(res_cpu["acc_matrix"])
    assert float(R_gpu.diagonal().min()) > 0.4                   # both tasks learned on the GPU (chance 0.1)
    assert float((R_gpu - R_cpu).abs().max()) < 0.08             # same algorithm, float-level drift only
