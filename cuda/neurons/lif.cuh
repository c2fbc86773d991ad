// LIF: leaky integrate-and-fire (spiking.LIF, spiking.lif_multistep, DSR's neurons).
//   decay_input: H_t = V_{t-1} + (X_t - (V_{t-1} - V_rest)) / tau   else   H_t = V_{t-1} - (V_{t-1} - V_rest) / tau + X_t
//   S_t = Θ(H_t - V_th);  V_t = H_t (1 - S_t) + V_reset S_t (hard)  or  H_t - V_th S_t (soft);  V_rest = V_reset or 0
// State (v); parameters (v_th, tau, v_reset), one value per layer; saved H_t; gradient for v_th only.
//
// Bit-exact with the torch reference (spiking/neuron/functional.py::lif_step) in float32/float64
// and in fp16/bf16 storage: every operation is rounded to the storage type (F::round) as torch
// stores each intermediate tensor, and "/ tau" by a Python float follows torch: the host divides,
// the device multiplies by the float reciprocal (ATen div_true_kernel_cuda). Scalars in
// "tensor ± python float" (V - V_rest, H - V_th) are rounded to the storage type first on the host
// (torch CPU) and used unrounded on the device (torch CUDA); a tensor threshold is always rounded
// to the input dtype first, which the caller does before passing it (spiking/kernels/cuda.py).
//
// Backward (σ' = surrogate slope at z = H - V_th; dH/dV = 1 - 1/tau; dH/dX = 1/tau or 1):
//   gH_t = gS_t σ' + gV_t dV_t/dH_t;  dV/dH = (1 - S) + (V_reset - H) σ' (hard) or 1 - V_th σ' (soft)
//   dL/dV_th += gV_t dV_t/dV_th - gS_t σ';  dV/dV_th = -(V_reset - H) σ' (hard) or V_th σ' - S (soft)
//   (the σ' terms of the reset vanish with detach_reset); gX_t = gH_t dH/dX; gV_{t-1} = gH_t dH/dV.
#pragma once
namespace nrn {
struct LIF {
  enum { NS = 1, NP = 3, NSAVE = 1, SCALAR_PARAMS = 1, STORAGE16 = 1, BWD_X = 0, GRAD_PARAMS = 1 };

  // a scalar of "tensor ± python float": rounded to the storage type on the host only
  template <class F, typename C> static LIF_HD C add_scalar(C a) {
#if defined(__CUDA_ARCH__)
    return a;
#else
    return F::round(a);
#endif
  }
  template <typename C> static LIF_HD C div_tau(C a, C tau) {
#if defined(__CUDA_ARCH__)
    return a * ((C)1 / tau);
#else
    return a / tau;
#endif
  }

  template <typename C, typename F> static LIF_HD C forward(C x, C* s, const C* p, const F& f, C* save) {
    const C v = s[0];
    const C a = F::round(v - add_scalar<F>(f.hard ? p[2] : (C)0));  // V - V_rest
    C h;
    if (f.decay_input) {
      const C b = F::round(x - a);
      const C c = F::round(div_tau(b, p[1]));
      h = F::round(v + c);
    } else {
      const C c = F::round(div_tau(a, p[1]));
      const C d = F::round(v - c);
      h = F::round(d + x);
    }
    save[0] = h;
    const bool fired = F::round(h - add_scalar<F>(p[0])) >= (C)0;
    if (fired) s[0] = f.hard ? F::round(p[2]) : F::round(h - F::round(p[0]));  // V_reset·S, H - V_th·S
    else s[0] = h;
    return fired ? (C)1 : (C)0;
  }

  template <int SG, typename C, typename F>
  static LIF_HD C backward(C, const C* save, C g_out, C* g_s, const C* p, const F& f, C* g_p) {
    const C h = save[0];
    const C vth = add_scalar<F>(p[0]);
    const C z = F::round(h - vth);
    const C s = z >= (C)0 ? (C)1 : (C)0;
    const C sg = lif::surrogate_grad<SG>(z, f.sg);
    C dvdh, dvdth;
    if (f.hard) {
      const C m = F::round(p[2]) - h;  // d/dS of H(1 - S) + V_reset S
      dvdh = ((C)1 - s) + (f.detach ? (C)0 : m * sg);
      dvdth = f.detach ? (C)0 : -(m * sg);
    } else {
      dvdh = f.detach ? (C)1 : (C)1 - vth * sg;
      dvdth = f.detach ? -s : vth * sg - s;
    }
    const C gv = g_s[0];
    g_p[0] = gv * dvdth - g_out * sg;
    g_p[1] = (C)0;
    g_p[2] = (C)0;
    const C gh = g_out * sg + gv * dvdh;
    const double inv_tau = 1.0 / (double)p[1];
    g_s[0] = gh * (C)(1.0 - inv_tau);
    return gh * (f.decay_input ? (C)inv_tau : (C)1);
  }
};
}  // namespace nrn
