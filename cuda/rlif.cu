// Fused recurrent LIF (RLIF) on the GPU: the element-wise step kernels of cuda/rlif_step.cuh, one
// thread per neuron of the [B, N] layer. The host loop (spiking/kernels/rlif_cuda.py) runs, per
// step, R_t = S_{t-1} W^T + b by one cuBLAS matmul (torch.addmm) and then rlif_forward_step; the
// backward runs rlif_backward_step and then dL/dS_{t-1} = (dL/dI_t) W. Loaded through CuPy
// RawModule (NVRTC, -fmad=false, -I cuda/) with name expressions such as
// "rlif_backward_step<1,float>".
#include "rlif_step.cuh"

// x, rec, out, h: step t's [B*N] slices; v: V_{t-1} in, V_t out; h may be nullptr (inference).
template <typename C>
__global__ void rlif_forward_step(const C* __restrict__ x, const C* __restrict__ rec, C* __restrict__ v,
                                  C* __restrict__ out, C* __restrict__ h, long long n, double k, double rest,
                                  double theta, double v_reset, int hard, int decay_input) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const nrn::RLIFParams<C> p{(C)k, (C)rest, (C)theta, (C)v_reset};
  nrn::Flags<C> f;
  f.hard = hard != 0; f.detach = false; f.decay_input = decay_input != 0;
  C vi = v[i], hi;
  out[i] = nrn::RLIF::forward(x[i], rec[i], &vi, p, f, &hi);
  v[i] = vi;
  if (h) h[i] = hi;
}

// g_out: dL/dS_t from outside (nullptr: none); g_s: dL/dS_t through the recurrence; g_v: dL/dV_t
// in, dL/dV_{t-1} out; g_x: dL/dX_t (= dL/dI_t).
template <int SG, typename C>
__global__ void rlif_backward_step(const C* __restrict__ h, const C* __restrict__ g_out, const C* __restrict__ g_s,
                                   C* __restrict__ g_v, C* __restrict__ g_x, long long n, double k, double rest,
                                   double theta, double v_reset, int hard, int detach, int decay_input,
                                   double sg_param) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const nrn::RLIFParams<C> p{(C)k, (C)rest, (C)theta, (C)v_reset};
  nrn::Flags<C> f;
  f.hard = hard != 0; f.detach = detach != 0; f.decay_input = decay_input != 0;
  f.sg = nrn::surrogate_params<C>(SG, sg_param);
  C gv = g_v[i];
  g_x[i] = nrn::RLIF::template backward<SG>(h[i], g_out ? g_out[i] + g_s[i] : g_s[i], &gv, p, f);
  g_v[i] = gv;
}

#ifndef NRN_NO_INSTANTIATE
// Both dtypes x every surrogate, for the nvcc -ptx check in tests/test_cuda_compile.py; the CuPy
// loader defines NRN_NO_INSTANTIATE and names what it uses.
#define RLIF_FWD(C) template __global__ void rlif_forward_step<C>( \
    const C*, const C*, C*, C*, C*, long long, double, double, double, double, int, int);
#define RLIF_BWD(SG, C) template __global__ void rlif_backward_step<SG, C>( \
    const C*, const C*, const C*, C*, C*, long long, double, double, double, double, int, int, int, double);
RLIF_FWD(float) RLIF_FWD(double)
RLIF_BWD(0, float) RLIF_BWD(1, float) RLIF_BWD(2, float) RLIF_BWD(3, float)
RLIF_BWD(0, double) RLIF_BWD(1, double) RLIF_BWD(2, double) RLIF_BWD(3, double)
#endif
