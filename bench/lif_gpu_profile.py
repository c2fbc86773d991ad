"""Where the time of one fused LIF fwd+bwd step goes on a GPU: kernel time vs host overhead.

Runs our LIF (backend cupy) on x [100, 64, 4096] float32 with a given upstream gradient, prints
the wall time per step, CUDA-event times of forward and backward, the host cost per call (the
same module on a tiny input), and torch.profiler tables
(the CUPTI kernel durations of nrn_forward<nrn::LIF,..> / nrn_backward<nrn::LIF,..> give the kernels' achieved memory
bandwidth: 12 bytes per neuron-update each way). Output: bench/results/lif_gpu_profile_h200.txt.

Usage (GPU machine): python bench/lif_gpu_profile.py
"""
import time, torch
from torch.profiler import profile, ProfilerActivity
from spiking.neuron.module import LIF
x = (torch.randn(100, 64, 4096, device="cuda") * 0.8 + 0.6).requires_grad_()
g = torch.randn_like(x)
m = LIF(tau=2.0, v_threshold=1.0, v_reset=0.0, backend="cupy", check_inputs=False)
def step():
    x.grad = None
    m(x).backward(g)
for _ in range(5): step()
torch.cuda.synchronize()
for label, fn in [("fwd+bwd", step)]:
    t0 = time.perf_counter()
    for _ in range(50): fn()
    torch.cuda.synchronize(); print(label, (time.perf_counter() - t0) / 50 * 1e3, "ms/step")
e0, e1, e2 = (torch.cuda.Event(enable_timing=True) for _ in range(3))
x.grad = None; e0.record(); s = m(x); e1.record(); s.backward(g); e2.record(); torch.cuda.synchronize()
print("events fwd", e0.elapsed_time(e1), "ms  bwd", e1.elapsed_time(e2), "ms")
# Host cost per call: the same module on a tiny input (GPU work negligible, launches async).
xs = torch.randn(4, 1, 32, device="cuda").requires_grad_()
gs = torch.randn_like(xs)
def tiny_fwd():
    with torch.no_grad():
        m(xs)
def tiny_step():
    xs.grad = None
    m(xs).backward(gs)
def tiny_empty():
    torch.empty_like(x)
def tiny_stream():
    torch.cuda.current_stream(0).cuda_stream
for label, fn in [("host: fwd (no_grad)", tiny_fwd), ("host: fwd+bwd", tiny_step),
                  ("host: empty_like", tiny_empty), ("host: current_stream", tiny_stream)]:
    for _ in range(50): fn()
    torch.cuda.synchronize(); t0 = time.perf_counter()
    for _ in range(1000): fn()
    torch.cuda.synchronize(); print(f"{label}: {(time.perf_counter() - t0) * 1e3:.1f} us/call")
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    for _ in range(10): step()
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))
print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=14, max_name_column_width=60))
