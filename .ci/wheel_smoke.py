"""Smoke test of an installed (non-editable) wheel, run from outside the repository by .ci/run.

Fails unless: spiking is imported from site-packages (not a checkout), ``backend="auto"`` picks the
fused CPU LIF, the event-driven spike matmul, the fused DSR stack, HLOP's Oja op and the fused RLIF
build from the packaged sources, the CUDA sources are found in the package, and a tiny
``spiking.runner.run`` job writes its PNG plots.
"""
import sys
import tempfile
import warnings
from pathlib import Path

import torch

warnings.simplefilter("error", RuntimeWarning)  # a fallback to the torch reference fails the test

import spiking  # noqa: E402
from spiking import LIF  # noqa: E402
from spiking.data import from_datasets  # noqa: E402
from spiking.kernels import auto_backend, rlif_cpu  # noqa: E402
from spiking.kernels.cuda import kernel_source  # noqa: E402
from spiking.kernels.spike_matmul import extension as spike_matmul_ext  # noqa: E402
from spiking.kernels.spike_matmul import spike_matmul  # noqa: E402
from spiking.models import SpikingMLP  # noqa: E402
from spiking.native_sources import cuda_source  # noqa: E402
from spiking.runner import run  # noqa: E402

where = Path(spiking.__file__).resolve()
assert "site-packages" in where.parts, f"spiking imported from {where}, not from the installed wheel"
x = torch.rand(4, 2, 8) * 3
assert auto_backend(x) == "cpu", f"backend 'auto' chose {auto_backend(x)!r}, not the fused CPU path"
assert LIF()(x).sum() > 0
assert "nrn_forward" in kernel_source() and cuda_source("sparsey.cu").stat().st_size > 0
assert "struct LIF" in cuda_source("neurons/lif.cuh").read_text()  # LIF's template definition is packaged
spikes = (torch.rand(64, 100, generator=torch.Generator().manual_seed(1)) < 0.05).float()
assert spike_matmul_ext().available(), f"event-driven spike matmul unavailable: {spike_matmul_ext().error()}"
assert torch.allclose(spike_matmul(spikes, torch.ones(100, 7)), spikes.sum(1, keepdim=True).expand(64, 7))
# the fused DSR stack builds from the packaged source and runs the DSR network's hidden layers
from spiking.kernels import dsr_stack  # noqa: E402
from spiking.plasticity.networks import HLOPMLP  # noqa: E402

assert dsr_stack.extension().available(), f"fused DSR stack unavailable: {dsr_stack.extension().error()}"
assert HLOPMLP((8, 6, 6, 3), method="dsr").eval()._fused_dsr(torch.rand(2, 8))
# HLOP's Oja op builds from the packaged source and equals the Python reference
from spiking.kernels import oja_iterations as oja  # noqa: E402
from spiking.plasticity.hebbian import oja_iterations_many, oja_iterations_reference  # noqa: E402

assert oja.available(), f"native Oja op unavailable: {oja.extension().error()}"
H, X = torch.rand(3, 8), torch.rand(16, 8)
H_ref, H_before = H.clone(), H.clone()
oja_iterations_many([(H, torch.zeros(3, 8), X, None, 0.1)], iters=3)
oja_iterations_reference([(H_ref, torch.zeros(3, 8), X, None, 0.1)], iters=3)
assert torch.equal(H, H_ref) and not torch.equal(H, H_before)
# the fused RLIF builds from the packaged sources (the template's headers under _cuda/neurons/)
assert rlif_cpu.extension().available(), f"fused RLIF unavailable: {rlif_cpu.extension().error()}"
rlif, rlif_ref = spiking.RLIF(8), spiking.RLIF(8, backend="torch")
rlif_ref.load_state_dict(rlif.state_dict())
assert torch.equal(rlif(x), rlif_ref(x))

g = torch.Generator().manual_seed(0)
W = torch.randn(8, 3, generator=g)
parts = []
for _ in range(2):
    xs = torch.randn(64, 8, generator=g)
    parts.append(((xs[:48], (xs[:48] @ W).argmax(1)), (xs[48:], (xs[48:] @ W).argmax(1))))
stream = from_datasets(parts, scenario="domain", name="smoke")
with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "run"
    run({"epochs": 1, "batch_size": 16, "lr": 0.1, "threads": 1, "out": str(out), "progress": False},
        stream=stream, model_fn=lambda s: SpikingMLP([8, 16, s.n_outputs], T=3, v_threshold=0.5))
    pngs = sorted(p.name for p in out.rglob("*.png"))
    assert pngs, f"no PNG written under {out}: {sorted(p.name for p in out.rglob('*'))}"
print(f"wheel smoke test ok: spiking {spiking.__version__} from {where.parent}, fused CPU LIF, "
      f"CUDA sources packaged, plots {pngs}", file=sys.stderr)
