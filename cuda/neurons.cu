// Fused multi-step neurons on the GPU, instantiated from the neuron template
// (cuda/neuron_template.cuh): one thread per neuron, the loop over T inside the kernel (one launch
// per sequence). Loaded by spiking/kernels/neuron_cuda.py and (LIF) spiking/kernels/cuda.py through
// CuPy RawModule (NVRTC, -fmad=false, -I cuda/) with name expressions such as
// "nrn_forward<nrn::ALIF,float>" or "nrn_backward<nrn::LIF,1,lif::f16>".
//
// Layout as on the CPU (spiking/kernels/neuron_cpu_loops.h): x, out [T, N]; state [NS, N];
// params [NP, p_n] with p_n = N (per neuron) or 1 (per layer) in the compute type C;
// saved [NSAVE, T, N]; thread i touches x[t*N + i] (coalesced). Storage types: float, double and,
// for STORAGE16 definitions (LIF), lif::f16 / lif::bf16 (compute in float, rounded per op).
#include "neuron_template.cuh"

template <typename T>
__device__ __forceinline__ nrn::Flags<T> nrn_flags(int hard, int detach, int decay_input, int sg, double sg_param) {
  typedef typename lif::Store<T>::C C;
  nrn::Flags<T> f;
  f.hard = hard != 0; f.detach = detach != 0; f.decay_input = decay_input != 0;
  f.sg = lif::make_sg<C>(sg, sg_param);
  return f;
}

// saved: [NSAVE, T, N] or nullptr (inference); seq: [T, N] state 0 after every step, or nullptr;
// nonfinite: device int set to 1 when some x is NaN or ±inf (checked while x is read: x - x is 0
// only for finite x), or nullptr (no check).
template <class D, typename T>
__global__ void nrn_forward(const T* __restrict__ x, const T* __restrict__ state0,
                            const typename lif::Store<T>::C* __restrict__ params, T* __restrict__ out,
                            T* __restrict__ state_last, T* __restrict__ saved, T* __restrict__ seq,
                            int* __restrict__ nonfinite, long long n, long long s_n, long long p_n, int steps,
                            int hard, int decay_input) {
  typedef lif::Store<T> S;
  typedef typename S::C C;
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const nrn::Flags<T> f = nrn_flags<T>(hard, 0, decay_input, 0, 1.0);
  C s[D::NS], p[D::NP], v[D::NSAVE > 0 ? D::NSAVE : 1];
  for (int k = 0; k < D::NS; ++k) s[k] = S::load(state0[k * s_n + (s_n == 1 ? 0 : i)]);
  for (int k = 0; k < D::NP; ++k) p[k] = params[k * p_n + (p_n == 1 ? 0 : i)];
  C probe = (C)0;
#pragma unroll 4  // independent x loads of later steps can be issued early (latency hiding)
  for (int t = 0; t < steps; ++t) {
    const long long off = (long long)t * n + i;
    const C xt = S::load(x[off]);
    probe += lif::finite_probe(xt);
    out[off] = S::store(D::forward(xt, s, p, f, v));
    if (saved)
      for (int k = 0; k < D::NSAVE; ++k) saved[((long long)k * steps + t) * n + i] = S::store(v[k]);
    if (seq) seq[off] = S::store(s[0]);
  }
  for (int k = 0; k < D::NS; ++k) state_last[k * n + i] = S::store(s[k]);
  if (nonfinite && lif::probe_failed(probe)) *nonfinite = 1;  // benign race: every writer stores 1
}

// Storage type whose arithmetic the backward kernel runs: double for float32 data. The reverse-time
// recurrence carries its rounding through every step, and at T = 1000 float32 arithmetic drifted
// from float64 several times more than torch's own float32 autograd did on an H200
// (tests/test_kernels_accuracy.py); in double only the rounding of the saved float32 values and
// of the stored results remains, for little cost in a memory-bound kernel. fp16/bf16 keep float
// with per-op rounding (torch's), float64 is double already. (The CPU loops compute in the storage
// type: vectorised float arithmetic there passes the same test.)
template <typename T> struct BwdStore { typedef T type; };
template <> struct BwdStore<float> { typedef double type; };

// x: [T, N] or nullptr (definitions with BWD_X = 0); g_out: dL/dout [T, N] or nullptr; g_seq:
// dL/dseq [T, N] or nullptr; g_last: dL/dstate_last [NS, N] or nullptr. Parameter gradients are
// summed over T per neuron (partial sums of LIF_VTH_FLUSH steps in the compute type C, then
// double) and written to g_params [NP, N] (float64), or not at all when g_params is nullptr. The loads of step t-1
// are issued before the math of step t (two steps of loads in flight per thread: the recurrence
// serialises the math, and with one step in flight the loop is latency-bound).
template <class D, int SG, typename T>
__global__ void nrn_backward(const T* __restrict__ x, const T* __restrict__ saved,
                             const typename lif::Store<T>::C* __restrict__ params, const T* __restrict__ g_out,
                             const T* __restrict__ g_seq, const T* __restrict__ g_last, T* __restrict__ g_x,
                             T* __restrict__ g_state0, double* __restrict__ g_params, long long n, long long p_n,
                             int steps, int hard, int detach, int decay_input, double sg_param) {
  typedef lif::Store<T> S;
  typedef typename BwdStore<T>::type TB;
  typedef typename lif::Store<TB>::C C;  // compute type: double for float32 data
  typedef typename S::C CS;              // the storage's compute type (float for fp16/bf16/float32)
  enum { NV = D::NSAVE > 0 ? D::NSAVE : 1 };
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const nrn::Flags<TB> f = nrn_flags<TB>(hard, detach, decay_input, SG, sg_param);
  C gs[D::NS], p[D::NP], g[D::NP], gpf[D::NP];
  double gp[D::NP];
  for (int k = 0; k < D::NS; ++k) gs[k] = g_last ? (C)S::load(g_last[k * n + i]) : (C)0;
  for (int k = 0; k < D::NP; ++k) { p[k] = (C)params[k * p_n + (p_n == 1 ? 0 : i)]; gp[k] = 0.0; gpf[k] = (C)0; }
  // values of step t: saved v, x, dL/dout, dL/dseq (zero where absent)
  C v[NV], xt, go, gq;
  long long off = (long long)(steps - 1) * n + i;
  for (int k = 0; k < D::NSAVE; ++k) v[k] = S::load(saved[((long long)k * steps + steps - 1) * n + i]);
  xt = x ? S::load(x[off]) : (C)0;
  go = g_out ? S::load(g_out[off]) : (C)0;
  gq = g_seq ? S::load(g_seq[off]) : (C)0;
  for (int t = steps - 1; t >= 0; --t, off -= n) {
    C v_prev[NV], x_prev = (C)0, go_prev = (C)0, gq_prev = (C)0;
    for (int k = 0; k < NV; ++k) v_prev[k] = (C)0;
    if (t > 0) {
      for (int k = 0; k < D::NSAVE; ++k) v_prev[k] = S::load(saved[((long long)k * steps + t - 1) * n + i]);
      if (x) x_prev = S::load(x[off - n]);
      if (g_out) go_prev = S::load(g_out[off - n]);
      if (g_seq) gq_prev = S::load(g_seq[off - n]);
    }
    if (g_seq) gs[0] = gs[0] + gq;
    g_x[off] = S::store((CS)D::template backward<SG>(xt, v, go, gs, p, f, g));
    for (int k = 0; k < D::NP; ++k) gpf[k] += g[k];
    if (t % LIF_VTH_FLUSH == 0)
      for (int k = 0; k < D::NP; ++k) { gp[k] += (double)gpf[k]; gpf[k] = (C)0; }
    for (int k = 0; k < NV; ++k) v[k] = v_prev[k];
    xt = x_prev; go = go_prev; gq = gq_prev;
  }
  for (int k = 0; k < D::NS; ++k) g_state0[k * n + i] = S::store((CS)gs[k]);
  if (g_params)
    for (int k = 0; k < D::NP; ++k) g_params[k * n + i] = gp[k];
}

#ifndef NRN_NO_INSTANTIATE
// Every neuron x storage type (x surrogate for backward), for the nvcc -ptx check in
// tests/test_cuda_compile.py; the CuPy loaders define NRN_NO_INSTANTIATE and name what they use.
#define NRN_FWD(D, T) template __global__ void nrn_forward<D, T>( \
    const T*, const T*, const lif::Store<T>::C*, T*, T*, T*, T*, int*, long long, long long, long long, int, int, int);
#define NRN_BWD(D, SG, T) template __global__ void nrn_backward<D, SG, T>( \
    const T*, const T*, const lif::Store<T>::C*, const T*, const T*, const T*, T*, T*, double*, long long, \
    long long, int, int, int, int, double);
#define NRN_TYPE(D, T) NRN_FWD(D, T) NRN_BWD(D, 0, T) NRN_BWD(D, 1, T) NRN_BWD(D, 2, T) NRN_BWD(D, 3, T)
#define NRN_ALL(name, D) NRN_TYPE(D, float) NRN_TYPE(D, double)
NRN_FOR_EACH(NRN_ALL)
NRN_TYPE(nrn::LIF, lif::f16) NRN_TYPE(nrn::LIF, lif::bf16)  // the STORAGE16 definitions
#endif
