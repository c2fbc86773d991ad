// OTTT's online LIF layer on the GPU (spiking/kernels/online_lif_cuda.py): the CUDA twin of the CPU
// ops in spiking/kernels/online_lif_cpu.cpp, one thread per neuron. Loaded through CuPy RawModule
// (NVRTC, -fmad=false, -I cuda/) with name expressions such as "online_backward<1,float>".
//
// online_forward: the soft-reset LIF step of cuda/neurons/lif.cuh (as nrn_forward<nrn::LIF> runs it)
// from rest over x [steps, n]:
//   S_t = Θ(H_t − V_th),  V_t = H_t − V_th S_t,  Z_t = V_t + V_th S_t − V_th   (H_t − V_th, recovered
//   from V_t as the reference path does), and with a trace (a, r not null):
//   A_t = λ A_{t−1} + S_t,  R[2t] = S_t,  R[2t+1] = A_t   (the Hebbian rows (s_t, â_t) per step).
// nonfinite: device int set to 1 when some x is NaN or ±inf, or nullptr (no check).
// online_backward: gX = g σ'(Z) (/ τ with decay_input), element-wise over n values.
#include "neuron_template.cuh"

template <typename C>
__global__ void online_forward(const C* __restrict__ x, C* __restrict__ s, C* __restrict__ z, C* __restrict__ a,
                               C* __restrict__ r, int* __restrict__ nonfinite, long long n, int steps, double v_th,
                               double tau, int decay_input, double lam) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  nrn::Flags<C> f;
  f.hard = false; f.detach = false; f.decay_input = decay_input != 0;
  const C vth = (C)v_th, trace_lambda = (C)lam;
  const C p[3] = {vth, (C)tau, (C)0};
  C v = (C)0, tr = (C)0, probe = (C)0;
  for (int t = 0; t < steps; ++t) {
    const long long off = (long long)t * n + i;
    const C xt = x[off];
    probe += lif::finite_probe(xt);
    C st[1] = {v}, h[1];
    const C o = nrn::LIF::forward(xt, st, p, f, h);
    v = st[0];
    s[off] = o;
    z[off] = o != (C)0 ? (v + vth) - vth : v - vth;
    if (a) {
      tr = trace_lambda * tr + o;
      a[off] = tr;
      r[(2LL * t) * n + i] = o;
      r[(2LL * t + 1) * n + i] = tr;
    }
  }
  if (nonfinite && lif::probe_failed(probe)) *nonfinite = 1;  // benign race: every writer stores 1
}

template <int SG, typename C>
__global__ void online_backward(const C* __restrict__ g, const C* __restrict__ z, C* __restrict__ gx, long long n,
                                double sg_param, double tau, int decay_input) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const lif::Params<C> prm = lif::make_sg<C>(SG, sg_param);
  const C d = g[i] * lif::surrogate_grad<SG>(z[i], prm);
  gx[i] = decay_input ? d / (C)tau : d;
}

#ifndef NRN_NO_INSTANTIATE
// Both dtypes x every surrogate, for the nvcc -ptx check in tests/test_cuda_compile.py; the CuPy
// loader defines NRN_NO_INSTANTIATE and names what it uses.
#define ONLINE_FWD(C) template __global__ void online_forward<C>( \
    const C*, C*, C*, C*, C*, int*, long long, int, double, double, int, double);
#define ONLINE_BWD(SG, C) template __global__ void online_backward<SG, C>( \
    const C*, const C*, C*, long long, double, double, int);
ONLINE_FWD(float) ONLINE_FWD(double)
ONLINE_BWD(0, float) ONLINE_BWD(1, float) ONLINE_BWD(2, float) ONLINE_BWD(3, float)
ONLINE_BWD(0, double) ONLINE_BWD(1, double) ONLINE_BWD(2, double) ONLINE_BWD(3, double)
#endif
