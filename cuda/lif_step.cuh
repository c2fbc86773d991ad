// Numerics shared by the neuron template's host and device loops (cuda/neuron_template.cuh,
// cuda/neurons.cu, spiking/kernels/neuron_cpu_loops.h), compiled by nvcc, NVRTC and the host C++
// compiler alike: the storage types (fp16/bf16 carried as raw bits) with torch's rounding
// (Store<T>), the surrogate slopes σ'(z) of the four surrogate shapes, a vectorisable host exp,
// and the NaN/inf probe of the forward loops.
//
// Bit-exactness with torch: a step that rounds the result of every operation to the storage
// type with Store<T>::round (as torch stores each intermediate tensor; fp16/bf16 are computed in
// float and rounded per op) and is compiled without FMA contraction (-ffp-contract=off for g++,
// -fmad=false for nvcc and NVRTC) reproduces the torch reference bit for bit
// (cuda/neurons/lif.cuh).
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
// Surrogate constants of one call: the parameter (alpha / slope / width) and, for atan, π/2·alpha
// (computed in double like the Python reference).
template <typename C> struct Params {
  C sg_param;
  C sg_k;
};

template <typename C> LIF_HD Params<C> make_sg(int sg, double sg_param) {
  Params<C> p;
  p.sg_param = (C)sg_param;
  p.sg_k = (C)(sg == SG_ATAN ? 3.141592653589793 / 2.0 * sg_param : 0.0);
  return p;
}

// Input check folded into the forward pass: a - a is 0 for every finite a and NaN for NaN and
// ±inf (no build uses -ffinite-math-only / fast math, so the compilers keep it). The kernels
// accumulate it in a register while they read x (CUDA: a per-thread sum that stays 0 unless some
// x was not finite; CPU: an OR of probe_failed, vectorised), so the check adds no memory traffic.
template <typename C> LIF_HD C finite_probe(C a) { return a - a; }
template <typename C> LIF_HD bool probe_failed(C acc) { return !(acc == (C)0); }

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

// Steps whose parameter gradients the loops sum in the compute type before moving the partial sum
// into a double (a float32 running sum over T = 1000 steps drifts by ~2e-5 relative).
#define LIF_VTH_FLUSH 32

}  // namespace lif
