"""Packed input sums + per-CM selection: C (CPU) and CuPy (GPU) paths against the torch path."""
import shutil
import subprocess

import pytest
import torch

from spiking.memory import Macrocolumn
from spiking.memory import cpu as mem_cpu
from spiking.memory import cuda as mem_cuda
from spiking.memory.csa import CSAParams, normalise, pack_bits, select
from spiking.native_sources import cuda_source

gpu = pytest.mark.skipif(not mem_cuda.available(), reason="needs CUDA and CuPy")


def patterns(M, n, a, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    idx = torch.rand(M, n, generator=g).argsort(1)[:, :a]
    return torch.zeros(M, n).scatter_(1, idx, 1.0).to(device)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
def test_sparsey_cu_compiles_to_ptx(tmp_path):
    out = tmp_path / "sparsey.ptx"
    res = subprocess.run(["nvcc", "-ptx", str(cuda_source("sparsey.cu")), "-o", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    ptx = out.read_text()
    assert ".entry sparsey_packed_sums" in ptx and ".entry sparsey_select" in ptx


@pytest.mark.skipif(not mem_cpu.available(), reason="no C compiler")
def test_cpu_packed_recall_matches_matmul():
    mac = Macrocolumn(200, 12, 8, seed=0, n_top=16)
    X = patterns(60, 200, 20)
    T = patterns(60, 16, 3, seed=2)
    mac.store(X, top=T)
    probe = torch.cat([X, patterns(40, 200, 20, seed=9)])
    a = mac.recall(probe, sums="packed")
    b = mac.recall(probe, sums="matmul")
    assert torch.equal(a[0], b[0]) and torch.allclose(a[1], b[1], atol=1e-6)
    tp = torch.cat([T, patterns(40, 16, 3, seed=3)])
    a = mac.recall(probe, top=tp, sums="packed")
    b = mac.recall(probe, top=tp, sums="matmul")
    assert torch.equal(a[0], b[0]) and torch.allclose(a[1], b[1], atol=1e-6)


@pytest.mark.gpu
@gpu
def test_gpu_packed_sums_and_argmax_match_torch():
    dev = "cuda"
    mac = Macrocolumn(300, 16, 8, seed=0, device=dev)
    X = patterns(80, 300, 30, device=dev)
    mac.store(X)
    probe = torch.cat([X, patterns(50, 300, 30, seed=4, device=dev)])
    u = mem_cuda.packed_sums(pack_bits(probe.bool()), mac.U.packed)
    assert torch.equal(u, probe @ mac.U.dense())
    a = mac.recall(probe, sums="packed")
    b = mac.recall(probe, sums="matmul")
    assert torch.equal(a[0], b[0]) and torch.allclose(a[1], b[1], atol=1e-6)


@pytest.mark.gpu
@gpu
def test_gpu_draw_matches_torch_select():
    dev = "cuda"
    g = torch.Generator().manual_seed(0)
    B, Q, K, N = 64, 8, 8, 100
    u = torch.randint(0, 21, (B, Q * K), generator=g).float()
    n = torch.full((B,), 20.0)
    r = torch.rand(B, Q, generator=g, dtype=torch.float64)
    p = CSAParams()
    want, G = select(normalise(u, n).view(B, Q, K).double(), K, p, r)
    got, Gg = mem_cuda.select(u.to(dev), n.to(dev), Q, K, p, r.to(dev))
    assert torch.allclose(Gg.cpu().double(), G, atol=1e-6)
    assert (got.cpu() == want).float().mean() > 0.999      # float32 vs float64 rounding at ρ edges
