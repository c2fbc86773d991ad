// ALIF: LIF with an adaptive threshold, the LSNN form of Bellec et al. (2018).
//   θ_t = V_th + β a_{t-1};  H_t = LIF charge (k = 1/tau);  S_t = Θ(H_t - θ_t)
//   V_t = H_t (1 - S_t) + V_reset S_t (hard) or H_t - θ_t S_t (soft);  a_t = ρ a_{t-1} + (1 - ρ) S_t
// State (v, a); parameters (k, v_th, v_reset, beta, rho), without gradients (GRAD_PARAMS = 0: a
// parameter that requires grad is refused on the fused path); saved H_t and θ_t.
#pragma once
namespace nrn {
struct ALIF {
  enum { NS = 2, NP = 5, NSAVE = 2, GRAD_PARAMS = 0 };
  template <typename C, typename F> static LIF_HD C forward(C x, C* s, const C* p, const F& f, C* save) {
    const C theta = p[1] + p[3] * s[1];
    const C h = charge(x, s[0], p[0], p[2], f.decay_input);
    save[0] = h;
    save[1] = theta;
    const C spike = fire_reset(h, theta, p[2], f.hard, &s[0]);
    s[1] = p[4] * s[1] + ((C)1 - p[4]) * spike;
    return spike;
  }
  template <int SG, typename C, typename F>
  static LIF_HD C backward(C, const C* save, C g_out, C* g_s, const C* p, const F& f, C* g_p) {
    C g_th;
    const C g_spike = g_out + g_s[1] * ((C)1 - p[4]);      // output and adaptation paths
    const C g_h = fire_reset_backward<SG>(save[0], save[1], p[2], g_spike, g_s[0], f, &g_th);
    g_s[1] = g_s[1] * p[4] + g_th * p[3];                  // dL/da_{t-1}
    g_s[0] = g_h * ((C)1 - p[0]);
    g_p[0] = (C)0; g_p[1] = (C)0; g_p[2] = (C)0; g_p[3] = (C)0; g_p[4] = (C)0;
    return f.decay_input ? g_h * p[0] : g_h;
  }
};
}  // namespace nrn
