// CubaLIF: a current-based synapse feeding a LIF membrane.
//   I_t = α I_{t-1} + X_t   (α = 1 - 1/tau_syn);   H_t = LIF charge of I_t (k = 1/tau_mem)
//   S_t = Θ(H_t - V_th);  reset
// State (i, v); parameters (alpha, k, v_th, v_reset), a gradient for v_th only (GRAD_PARAMS: the
// others requiring grad are refused on the fused path); saved H_t.
#pragma once
namespace nrn {
struct CubaLIF {
  enum { NS = 2, NP = 4, NSAVE = 1, GRAD_PARAMS = 0b0100 };
  template <typename C, typename F> static LIF_HD C forward(C x, C* s, const C* p, const F& f, C* save) {
    const C i = p[0] * s[0] + x;
    s[0] = i;
    const C h = charge(i, s[1], p[1], p[3], f.decay_input);
    save[0] = h;
    return fire_reset(h, p[2], p[3], f.hard, &s[1]);
  }
  template <int SG, typename C, typename F>
  static LIF_HD C backward(C, const C* save, C g_out, C* g_s, const C* p, const F& f, C* g_p) {
    C g_th;
    const C g_h = fire_reset_backward<SG>(save[0], p[2], p[3], g_out, g_s[1], f, &g_th);
    const C g_i = g_s[0] + (f.decay_input ? g_h * p[1] : g_h);   // dL/dI_t
    g_s[0] = g_i * p[0];
    g_s[1] = g_h * ((C)1 - p[1]);
    g_p[0] = (C)0; g_p[1] = (C)0; g_p[2] = g_th; g_p[3] = (C)0;
    return g_i;
  }
};
}  // namespace nrn
