// Per-neuron LIF step shared by the CUDA kernels (cuda/lif.cu, nvcc or NVRTC) and the CPU
// extension (spiking/kernels/lif_cpu.cpp, plain C++ compiler), so both run the SAME step code.
//
// Canonical equations (docs/design.md), z = H - V_th:
//   decay_input=True :  H_t = V_{t-1} + (X_t - (V_{t-1} - V_rest)) / tau
//   decay_input=False:  H_t = V_{t-1} - (V_{t-1} - V_rest) / tau + X_t
//   S_t = Θ(z)                 (Θ(z) = 1 if z >= 0)
//   hard reset: V_t = H_t (1 - S_t) + V_reset S_t        soft reset: V_t = H_t - V_th S_t
//   V_rest = V_reset (hard) or 0 (soft)
//
// Bit-exactness with the torch reference (spiking/neuron/functional.py::lif_step):
//   * every operation is done in the same order as the reference, and the result of every
//     operation is rounded to the storage type (Store<T>::round) exactly as torch stores each
//     intermediate tensor (fp16/bf16 tensors are computed in float and rounded per op);
//   * "/ tau" by a Python float: torch CPU divides, torch CUDA multiplies by the float reciprocal
//     (ATen div_true_kernel_cuda); device code (__CUDA_ARCH__) therefore multiplies by inv_tau
//     and host code divides;
//   * no FMA contraction: compile with -ffp-contract=off (g++) / -fmad=false (nvcc, NVRTC).
//
// Backward (surrogate σ'(z) replaces dS/dz; dH/dV = 1 - 1/tau; dH/dX = 1/tau or 1):
//   gV_t   = dL/dV_t (external) + gH_{t+1} dH/dV
//   gH_t   = gS_t σ'(z_t) + gV_t dV_t/dH_t
//   dV/dH  = (1 - S) + (V_reset - H) σ'    (hard)      1 - V_th σ'   (soft)
//   dV/dVth= -(V_reset - H) σ'             (hard)     -S + V_th σ'   (soft)
//   (the σ' terms of dV/dH and dV/dVth vanish with detach_reset)
//   gX_t = gH_t dH/dX;  gV_0 = gH_1 dH/dV;  gVth = Σ_t (-gS_t σ'(z_t) + gV_t dV_t/dVth)
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define LIF_HD __host__ __device__ __forceinline__
#else
#define LIF_HD inline
#endif

#if !defined(__CUDACC_RTC__)
#include <math.h>
#include <string.h>
#endif

namespace lif {

// Surrogate ids (spiking.neuron.surrogate.SURROGATES[...][3]).
enum { SG_SIGMOID = 0, SG_ATAN = 1, SG_FAST_SIGMOID = 2, SG_TRIANGLE = 3 };

#if defined(__CUDA_ARCH__)
LIF_HD float lif_exp(float a) { return expf(a); }
#else
// Host float exp that the compiler can vectorise (libm expf is an opaque call): Cody-Waite
// range reduction a = k ln2 + r, |r| <= ln2/2, degree-7 polynomial for e^r (Cephes
// coefficients), 2^k via the exponent bits; within 2 ulp of expf over the clamped range.
inline float lif_exp(float a) {
  a = a > 88.3762626647949f ? 88.3762626647949f : a;
  a = a < -87.3365447505531f ? -87.3365447505531f : a;
  const float magic = 12582912.0f;                  // 1.5·2^23: adding it rounds to an integer
  float k = (a * 1.44269504088896341f + magic) - magic;
  float r = a - k * 0.693359375f;
  r = r - k * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  const int e = ((int)k + 127) << 23;
  float scale; memcpy(&scale, &e, 4);
  return y * scale;
}
#endif
LIF_HD double lif_exp(double a) { return exp(a); }
LIF_HD float lif_abs(float a) { return fabsf(a); }
LIF_HD double lif_abs(double a) { return fabs(a); }

// ---------------------------------------------------------------------------------------------
// Storage types. fp16 and bf16 are carried as raw 16-bit patterns so that this header needs no
// cuda_fp16.h (NVRTC include paths differ between installs) and also compiles for the host.
struct f16 { unsigned short bits; };
struct bf16 { unsigned short bits; };

LIF_HD unsigned int lif_f2u(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  unsigned int u; memcpy(&u, &f, 4); return u;
#endif
}
LIF_HD float lif_u2f(unsigned int u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f; memcpy(&f, &u, 4); return f;
#endif
}

// bf16 <-> float, round to nearest even (NaN kept quiet), identical on host and device.
LIF_HD float bf16_to_float(unsigned short b) { return lif_u2f(((unsigned int)b) << 16); }
LIF_HD unsigned short float_to_bf16(float f) {
  unsigned int u = lif_f2u(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return (unsigned short)(u >> 16);
}

// fp16 <-> float, round to nearest even with subnormals; PTX cvt on the device.
LIF_HD float f16_to_float(unsigned short h) {
#if defined(__CUDA_ARCH__)
  float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
#else
  unsigned int sign = ((unsigned int)h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0x1fu) return lif_u2f(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {
    if (man == 0) return lif_u2f(sign);
    float f = (float)man * 5.9604644775390625e-08f;  // man * 2^-24, exact
    return sign ? -f : f;
  }
  return lif_u2f(sign | ((exp + 112u) << 23) | (man << 13));
#endif
}
LIF_HD unsigned short float_to_f16(float f) {
#if defined(__CUDA_ARCH__)
  unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
#else
  unsigned int u = lif_f2u(f);
  unsigned int sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return (unsigned short)(sign | 0x7e00u);               // NaN
  if (a >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);              // >= 65520: inf
  if (a < 0x38800000u) {                                                      // subnormal or 0
    // value * 2^24 rounded to nearest even integer gives the subnormal mantissa
    float m = lif_u2f(a) * 16777216.0f;                                       // exact (power of 2)
    unsigned int r = (unsigned int)m; float frac = m - (float)r;
    if (frac > 0.5f || (frac == 0.5f && (r & 1u))) ++r;
    return (unsigned short)(sign | r);
  }
  unsigned int e = (a >> 23) - 112u, man = a & 0x7fffffu;                     // normal
  unsigned int hbits = (e << 10) | (man >> 13), rem = man & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (hbits & 1u))) ++hbits;             // carries into exp ok
  return (unsigned short)(sign | hbits);
#endif
}

// Store<T>: compute type C, load/store, and round(c) = the value torch would hold after
// writing c to a tensor of dtype T.
template <typename T> struct Store;
template <> struct Store<float> {
  typedef float C;
  static LIF_HD C load(float a) { return a; }
  static LIF_HD float store(C c) { return c; }
  static LIF_HD C round(C c) { return c; }
};
template <> struct Store<double> {
  typedef double C;
  static LIF_HD C load(double a) { return a; }
  static LIF_HD double store(C c) { return c; }
  static LIF_HD C round(C c) { return c; }
};
template <> struct Store<f16> {
  typedef float C;
  static LIF_HD C load(f16 a) { return f16_to_float(a.bits); }
  static LIF_HD f16 store(C c) { f16 r; r.bits = float_to_f16(c); return r; }
  static LIF_HD C round(C c) { return f16_to_float(float_to_f16(c)); }
};
template <> struct Store<bf16> {
  typedef float C;
  static LIF_HD C load(bf16 a) { return bf16_to_float(a.bits); }
  static LIF_HD bf16 store(C c) { bf16 r; r.bits = float_to_bf16(c); return r; }
  static LIF_HD C round(C c) { return bf16_to_float(float_to_bf16(c)); }
};

// ---------------------------------------------------------------------------------------------
// Parameters of one configuration, in compute type C (host builds them with make_params).
template <typename C> struct Params {
  C tau;        // membrane time constant
  C inv_tau;    // 1/tau rounded to C (what torch CUDA multiplies by)
  C v_th;       // threshold used in z = H - V_th
  C v_th_r;     // threshold as stored in the input dtype (soft reset term V_th·S)
  C v_reset;    // hard reset value, as stored (V_reset·S in the input dtype)
  C v_rest;     // V_reset (hard) or 0 (soft), as used in V - V_rest (see make_params)
  C sg_param;   // surrogate parameter (alpha / slope / width)
  C sg_k;       // atan: π/2·alpha (computed in double like the Python reference)
  C dh_dv;      // 1 - 1/tau
  C dh_dx;      // 1/tau (decay_input) or 1
};

template <typename T>
LIF_HD Params<typename Store<T>::C> make_params(double tau, double v_th, bool vth_is_tensor, double v_reset,
                                                bool hard, bool decay_input, double sg_param, int sg) {
  typedef typename Store<T>::C C;
  Params<C> p;
  p.tau = (C)tau;
  p.inv_tau = (C)1 / (C)tau;
  // Scalars in "tensor ± python_float" (V - V_rest, H - V_th): torch CPU rounds the scalar to
  // the tensor dtype first, torch CUDA uses it unrounded in float (measured on CPU for fp16/bf16;
  // ATen CUDA loops use the original scalar value). A tensor threshold is always cast to the
  // input dtype first (a same-category 0-dim tensor does not promote). For float32/float64
  // inputs every round() below is the identity.
#if defined(__CUDA_ARCH__)
  const bool round_add_scalar = false;
#else
  const bool round_add_scalar = true;
#endif
  p.v_th = (vth_is_tensor || round_add_scalar) ? Store<T>::round((C)v_th) : (C)v_th;
  p.v_th_r = Store<T>::round((C)v_th);                      // V_th·S (mul: rounded product)
  p.v_reset = Store<T>::round((C)(hard ? v_reset : 0.0));   // V_reset·S
  p.v_rest = round_add_scalar ? Store<T>::round((C)(hard ? v_reset : 0.0)) : (C)(hard ? v_reset : 0.0);
  p.sg_param = (C)sg_param;
  p.sg_k = (C)(sg == SG_ATAN ? 3.141592653589793 / 2.0 * sg_param : 0.0);
  p.dh_dv = (C)(1.0 - 1.0 / tau);
  p.dh_dx = (C)(decay_input ? 1.0 / tau : 1.0);
  return p;
}

// a / tau as torch computes it for a Python-float tau (see header comment)
template <typename C> LIF_HD C div_tau(C a, const Params<C>& p) {
#if defined(__CUDA_ARCH__)
  return a * p.inv_tau;
#else
  return a / p.tau;
#endif
}

// ---------------------------------------------------------------------------------------------
// Forward: charge, fire, reset. Inputs x, v are values already representable in T.
template <typename T, bool DECAY_INPUT>
LIF_HD typename Store<T>::C charge(typename Store<T>::C x, typename Store<T>::C v,
                                   const Params<typename Store<T>::C>& p) {
  typedef Store<T> S;
  typename S::C a = S::round(v - p.v_rest);
  if (DECAY_INPUT) {  // h = v + (x - (v - rest)) / tau
    typename S::C b = S::round(x - a);
    typename S::C c = S::round(div_tau(b, p));
    return S::round(v + c);
  } else {            // h = v - (v - rest) / tau + x
    typename S::C c = S::round(div_tau(a, p));
    typename S::C d = S::round(v - c);
    return S::round(d + x);
  }
}

// Input check folded into the forward pass: a - a is 0 for every finite a and NaN for NaN and
// ±inf (no build uses -ffinite-math-only / fast math, so the compilers keep it). The kernels
// accumulate it in a register while they read x (CUDA: a per-thread sum that stays 0 unless some
// x was not finite; CPU: an OR of probe_failed, vectorised), so the check adds no memory traffic.
template <typename C> LIF_HD C finite_probe(C a) { return a - a; }
template <typename C> LIF_HD bool probe_failed(C acc) { return !(acc == (C)0); }

// z = H - V_th as stored by torch (its sign decides the spike)
template <typename T>
LIF_HD typename Store<T>::C fire_z(typename Store<T>::C h, const Params<typename Store<T>::C>& p) {
  return Store<T>::round(h - p.v_th);
}

// S = Θ(z): spike iff z >= 0
template <typename T>
LIF_HD bool fire(typename Store<T>::C h, const Params<typename Store<T>::C>& p) {
  return fire_z<T>(h, p) >= (typename Store<T>::C)0;
}

template <typename T, bool HARD>
LIF_HD typename Store<T>::C reset(typename Store<T>::C h, bool fired, const Params<typename Store<T>::C>& p) {
  if (HARD) return fired ? p.v_reset : h;                   // h(1-s) + v_reset s, s in {0,1}
  const typename Store<T>::C r = Store<T>::round(h - p.v_th_r);
  return fired ? r : h;                                     // h - v_th s
}

// ---------------------------------------------------------------------------------------------
// Surrogate σ'(z) (spiking/neuron/surrogate.py is the source of truth).
template <int SG, typename C> LIF_HD C surrogate_grad(C z, const Params<C>& p) {
  if (SG == SG_SIGMOID) {        // alpha sig(alpha z) (1 - sig(alpha z))
    C s = (C)1 / ((C)1 + lif_exp(-(p.sg_param * z)));
    return p.sg_param * s * ((C)1 - s);
  } else if (SG == SG_ATAN) {    // (alpha/2) / (1 + (π/2 alpha z)^2)
    C t = p.sg_k * z;
    return (p.sg_param / (C)2) / ((C)1 + t * t);
  } else if (SG == SG_FAST_SIGMOID) {  // 1 / (1 + slope |z|)^2
    C d = (C)1 + p.sg_param * lif_abs(z);
    return (C)1 / (d * d);
  } else {                       // max(0, 1 - |z|/width) / width
    C r = (C)1 - lif_abs(z) / p.sg_param;
    return (r > (C)0 ? r : (C)0) / p.sg_param;
  }
}

// Steps summed in the storage's compute type before the threshold-gradient partial goes to double.
#define LIF_VTH_FLUSH 32

// One reverse-time step. h: saved H_t (as stored); gs: dL/dS_t; gv: dL/dV_t (external plus
// gH_{t+1} dH/dV). Returns dL/dH_t and adds this step's threshold gradient to *gvth (callers
// move that partial sum into a double every LIF_VTH_FLUSH steps: a float32 running sum over
// T = 1000 steps drifts by ~2e-5 relative).
template <typename T, int SG, bool HARD, bool DETACH>
LIF_HD typename Store<T>::C backward_step(typename Store<T>::C h, typename Store<T>::C gs,
                                          typename Store<T>::C gv,
                                          const Params<typename Store<T>::C>& p,
                                          typename Store<T>::C* gvth) {
  typedef typename Store<T>::C C;
  C z = fire_z<T>(h, p);
  C s = z >= (C)0 ? (C)1 : (C)0;
  C sg = surrogate_grad<SG>(z, p);
  C dvdh, dvdth;
  if (HARD) {
    C m = p.v_reset - h;  // d/dS of h(1-S) + V_reset S
    dvdh = ((C)1 - s) + (DETACH ? (C)0 : m * sg);
    dvdth = DETACH ? (C)0 : -(m * sg);
  } else {
    dvdh = DETACH ? (C)1 : (C)1 - p.v_th * sg;
    dvdth = DETACH ? -s : p.v_th * sg - s;
  }
  *gvth += gv * dvdth - gs * sg;
  return gs * sg + gv * dvdh;
}

}  // namespace lif
