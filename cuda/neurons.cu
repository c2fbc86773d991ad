// Fused multi-step neurons on the GPU, instantiated from the neuron template
// (cuda/neuron_template.cuh): one thread per neuron, the loop over T inside the kernel. Loaded by
// spiking/kernels/neuron_cuda.py through CuPy RawModule (NVRTC, -fmad=false, -I cuda/) with name
// expressions such as "nrn_forward<nrn::ALIF,float>".
//
// Layout as on the CPU (spiking/kernels/neuron_cpu.cpp): x, out [T, N]; state [NS, N];
// params [NP, N]; saved [NSAVE, T, N]; thread i touches x[t*N + i] (coalesced).
#include "neuron_template.cuh"

template <typename C>
__device__ __forceinline__ nrn::Flags<C> nrn_flags(int hard, int detach, int decay_input, int sg, double sg_param) {
  nrn::Flags<C> f;
  f.hard = hard != 0; f.detach = detach != 0; f.decay_input = decay_input != 0;
  f.sg.sg_param = (C)sg_param;
  f.sg.sg_k = (C)(sg == lif::SG_ATAN ? 3.141592653589793 / 2.0 * sg_param : 0.0);
  return f;
}

// saved: [NSAVE, T, N] or nullptr (inference).
template <class D, typename C>
__global__ void nrn_forward(const C* __restrict__ x, const C* __restrict__ state0, const C* __restrict__ params,
                            C* __restrict__ out, C* __restrict__ state_last, C* __restrict__ saved, long long n,
                            int steps, int hard, int decay_input) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const nrn::Flags<C> f = nrn_flags<C>(hard, 0, decay_input, 0, 1.0);
  C s[D::NS], p[D::NP], v[D::NSAVE > 0 ? D::NSAVE : 1];
  for (int k = 0; k < D::NS; ++k) s[k] = state0[k * n + i];
  for (int k = 0; k < D::NP; ++k) p[k] = params[k * n + i];
  for (int t = 0; t < steps; ++t) {
    const long long off = (long long)t * n + i;
    out[off] = D::forward(x[off], s, p, f, v);
    if (saved)
      for (int k = 0; k < D::NSAVE; ++k) saved[((long long)k * steps + t) * n + i] = v[k];
  }
  for (int k = 0; k < D::NS; ++k) state_last[k * n + i] = s[k];
}

// g_out: dL/dout [T, N] or nullptr; g_last: dL/dstate_last [NS, N] or nullptr. Parameter
// gradients are summed over T in double per neuron and written to g_params [NP, N].
template <class D, int SG, typename C>
__global__ void nrn_backward(const C* __restrict__ x, const C* __restrict__ saved, const C* __restrict__ params,
                             const C* __restrict__ g_out, const C* __restrict__ g_last, C* __restrict__ g_x,
                             C* __restrict__ g_state0, C* __restrict__ g_params, long long n, int steps, int hard,
                             int detach, int decay_input, double sg_param) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const nrn::Flags<C> f = nrn_flags<C>(hard, detach, decay_input, SG, sg_param);
  C gs[D::NS], p[D::NP], v[D::NSAVE > 0 ? D::NSAVE : 1], g[D::NP];
  double gp[D::NP];
  for (int k = 0; k < D::NS; ++k) gs[k] = g_last ? g_last[k * n + i] : (C)0;
  for (int k = 0; k < D::NP; ++k) { p[k] = params[k * n + i]; gp[k] = 0.0; }
  for (int t = steps - 1; t >= 0; --t) {
    const long long off = (long long)t * n + i;
    for (int k = 0; k < D::NSAVE; ++k) v[k] = saved[((long long)k * steps + t) * n + i];
    g_x[off] = D::template backward<SG>(x[off], v, g_out ? g_out[off] : (C)0, gs, p, f, g);
    for (int k = 0; k < D::NP; ++k) gp[k] += (double)g[k];
  }
  for (int k = 0; k < D::NS; ++k) g_state0[k * n + i] = gs[k];
  for (int k = 0; k < D::NP; ++k) g_params[k * n + i] = (C)gp[k];
}

#ifndef NRN_NO_INSTANTIATE
// Every neuron x dtype (x surrogate for backward), for the nvcc -ptx check in
// tests/test_cuda_compile.py; the CuPy loader defines NRN_NO_INSTANTIATE and names what it uses.
#define NRN_FWD(D, C) template __global__ void nrn_forward<D, C>( \
    const C*, const C*, const C*, C*, C*, C*, long long, int, int, int);
#define NRN_BWD(D, SG, C) template __global__ void nrn_backward<D, SG, C>( \
    const C*, const C*, const C*, const C*, const C*, C*, C*, C*, long long, int, int, int, int, double);
#define NRN_ALL(name, D) NRN_FWD(D, float) NRN_FWD(D, double) \
    NRN_BWD(D, 0, float) NRN_BWD(D, 1, float) NRN_BWD(D, 2, float) NRN_BWD(D, 3, float) \
    NRN_BWD(D, 0, double) NRN_BWD(D, 1, double) NRN_BWD(D, 2, double) NRN_BWD(D, 3, double)
NRN_FOR_EACH(NRN_ALL)
#endif
