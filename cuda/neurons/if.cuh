// IF: integrate and fire (no leak).  H_t = V_{t-1} + X_t;  S_t = Θ(H_t - V_th);  reset.
// State (v); parameters (v_th, v_reset), a gradient for v_th only; saved H_t (the backward needs no x).
#pragma once
namespace nrn {
struct IF {
  enum { NS = 1, NP = 2, NSAVE = 1, BWD_X = 0, GRAD_PARAMS = 1 };
  template <typename C, typename F> static LIF_HD C forward(C x, C* s, const C* p, const F& f, C* save) {
    const C h = s[0] + x;
    save[0] = h;
    return fire_reset(h, p[0], p[1], f.hard, &s[0]);
  }
  template <int SG, typename C, typename F>
  static LIF_HD C backward(C, const C* save, C g_out, C* g_s, const C* p, const F& f, C* g_p) {
    C g_th;
    const C g_h = fire_reset_backward<SG>(save[0], p[0], p[1], g_out, g_s[0], f, &g_th);
    g_s[0] = g_h;  // dH/dV_{t-1} = 1
    g_p[0] = g_th;
    g_p[1] = (C)0;
    return g_h;    // dH/dX = 1
  }
};
}  // namespace nrn
