// Fused multi-step LIF: forward and backward, one thread per neuron, the loop over T inside the
// kernel (one launch per sequence). The per-neuron step is cuda/lif_step.cuh (shared with the CPU
// extension). Loaded by spiking/kernels/cuda.py through CuPy RawModule (NVRTC, -fmad=false) with
// name expressions such as "lif_forward<float,true,true>"; every configuration is a template
// instantiation compiled on first use and cached. Storage types: float, double, lif::f16,
// lif::bf16 (compute in float for the 16-bit types, rounded per op like torch).
//
// Layout: x, spikes, h_seq, grad_x are [T, N] contiguous (N = neurons = B*...), so thread i reads
// x[t*N + i]: consecutive threads touch consecutive addresses (coalesced) at every step.
//
// Saved for backward: only h_seq (H_t, the pre-spike membrane, in the input dtype). Spikes,
// σ'(H - V_th) and the reset derivatives are recomputed from it; V_{t-1} is never needed because
// dH/dV = 1 - 1/tau is a constant. H cannot be recomputed from x without re-running the forward
// recurrence (the hard reset is not invertible), so h_seq (T·N values) is the minimum state.
// Backward is one reverse-time loop with dL/dH_{t+1} in a register.
#include "lif_step.cuh"

// Forward. v0: [N] or nullptr (start at V_rest); vth_ptr: device scalar (learnable threshold) or
// nullptr (use v_th); h_seq: [T, N] or nullptr (inference: nothing saved); v_out: [T, N] when
// return_v else [N] (the final membrane); nonfinite: device int set to 1 when some x is NaN or
// ±inf (checked while x is read: no extra pass), or nullptr (no check).
template <typename T, bool HARD, bool DECAY_INPUT>
__global__ void lif_forward(const T* __restrict__ x, const T* __restrict__ v0, const double* __restrict__ vth_ptr,
                            T* __restrict__ spike, T* __restrict__ h_seq, T* __restrict__ v_out,
                            int* __restrict__ nonfinite,
                            double tau, double v_th, double v_reset, long long n, int steps, int return_v) {
  typedef lif::Store<T> S;
  typedef typename S::C C;
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const bool vth_tensor = vth_ptr != nullptr;
  const lif::Params<C> p = lif::make_params<T>(tau, vth_tensor ? *vth_ptr : v_th, vth_tensor, v_reset,
                                               HARD, DECAY_INPUT, 1.0, -1);
  C v = v0 ? S::load(v0[i]) : S::round(p.v_rest);
  long long k = i;
  C probe = (C)0;
#pragma unroll 4  // independent x loads of later steps can be issued early (latency hiding)
  for (int t = 0; t < steps; ++t, k += n) {
    const C xk = S::load(x[k]);
    probe += lif::finite_probe(xk);
    const C h = lif::charge<T, DECAY_INPUT>(xk, v, p);
    const bool fired = lif::fire<T>(h, p);
    spike[k] = S::store(fired ? (C)1 : (C)0);
    if (h_seq) h_seq[k] = S::store(h);
    v = lif::reset<T, HARD>(h, fired, p);
    if (return_v) v_out[k] = S::store(v);
  }
  if (!return_v) v_out[i] = S::store(v);
  if (nonfinite && lif::probe_failed(probe)) *nonfinite = 1;  // benign race: every writer stores 1
}

// Block-wide sum of one double per thread, added to *out by thread 0 (one atomic per block).
__device__ __forceinline__ void lif_block_sum_atomic(double a, double* out) {
  __shared__ double warp_sums[32];
  for (int o = 16; o > 0; o >>= 1) a += __shfl_down_sync(0xffffffffu, a, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = a;
  __syncthreads();
  if (warp == 0) {
    const int nw = (blockDim.x + 31) >> 5;
    a = lane < nw ? warp_sums[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) a += __shfl_down_sync(0xffffffffu, a, o);
    if (lane == 0) atomicAdd(out, a);
  }
}

// Backward. grad_s: dL/dspikes [T, N] or nullptr; grad_v: dL/dv_seq [T, N] (return_v) or
// dL/dv_last [N], or nullptr; grad_v0: [N] or nullptr; grad_vth: device double accumulator or
// nullptr (threshold not learnable).
template <typename T, int SG, bool HARD, bool DETACH>
__global__ void lif_backward(const T* __restrict__ h_seq, const T* __restrict__ grad_s,
                             const T* __restrict__ grad_v, const double* __restrict__ vth_ptr,
                             T* __restrict__ grad_x, T* __restrict__ grad_v0, double* __restrict__ grad_vth,
                             double tau, double v_th, double v_reset, double sg_param, int decay_input,
                             long long n, int steps, int return_v) {
  typedef lif::Store<T> S;
  typedef typename S::C C;
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const bool active = i < n;
  const bool vth_tensor = vth_ptr != nullptr;
  const lif::Params<C> p = lif::make_params<T>(tau, vth_tensor ? *vth_ptr : v_th, vth_tensor, v_reset,
                                               HARD, decay_input != 0, sg_param, SG);
  double gvth = 0.0;  // threshold gradient: float partials of LIF_VTH_FLUSH steps, summed in double
  C gvth_part = (C)0;
  if (active) {
    C gh_next = (C)0;
    long long k = (long long)(steps - 1) * n + i;
    // Software pipelining: the loads of step t-1 are issued before the math of step t, so two
    // steps of loads are in flight per thread (the recurrence in gh_next serialises the math, and
    // with one step in flight the loop is latency-bound at ~60 % of the memory bandwidth).
    C h = S::load(h_seq[k]);
    C gs = grad_s ? S::load(grad_s[k]) : (C)0;
    for (int t = steps - 1; t >= 0; --t, k -= n) {
      C h_prev = h, gs_prev = (C)0;
      if (t > 0) {
        h_prev = S::load(h_seq[k - n]);
        if (grad_s) gs_prev = S::load(grad_s[k - n]);
      }
      C gv = gh_next * p.dh_dv;
      if (grad_v) {
        if (return_v) gv += S::load(grad_v[k]);
        else if (t == steps - 1) gv += S::load(grad_v[i]);
      }
      const C gh = lif::backward_step<T, SG, HARD, DETACH>(h, gs, gv, p, &gvth_part);
      if (t % LIF_VTH_FLUSH == 0) { gvth += (double)gvth_part; gvth_part = (C)0; }
      grad_x[k] = S::store(gh * p.dh_dx);
      gh_next = gh;
      h = h_prev;
      gs = gs_prev;
    }
    if (grad_v0) grad_v0[i] = S::store(gh_next * p.dh_dv);
  }
  if (grad_vth) lif_block_sum_atomic(gvth, grad_vth);  // every thread of the block joins
}

#ifdef LIF_INSTANTIATE_ALL
// Every configuration, for the nvcc -ptx check in tests/test_cuda_compile.py.
#define LIF_FWD(T, H, D) template __global__ void lif_forward<T, H, D>( \
    const T*, const T*, const double*, T*, T*, T*, int*, double, double, double, long long, int, int);
#define LIF_FWD_T(T) LIF_FWD(T, true, true) LIF_FWD(T, true, false) LIF_FWD(T, false, true) LIF_FWD(T, false, false)
LIF_FWD_T(float) LIF_FWD_T(double) LIF_FWD_T(lif::f16) LIF_FWD_T(lif::bf16)
#define LIF_BWD(T, SG, H, D) template __global__ void lif_backward<T, SG, H, D>( \
    const T*, const T*, const T*, const double*, T*, T*, double*, double, double, double, double, int, \
    long long, int, int);
#define LIF_BWD_SG(T, SG) LIF_BWD(T, SG, true, true) LIF_BWD(T, SG, true, false) \
    LIF_BWD(T, SG, false, true) LIF_BWD(T, SG, false, false)
#define LIF_BWD_T(T) LIF_BWD_SG(T, 0) LIF_BWD_SG(T, 1) LIF_BWD_SG(T, 2) LIF_BWD_SG(T, 3)
LIF_BWD_T(float) LIF_BWD_T(double) LIF_BWD_T(lif::f16) LIF_BWD_T(lif::bf16)
#endif
