// PLIF: LIF with a learnable decay k = 1/tau (Fang et al. 2021).
//   H_t = V_{t-1} + (X_t - (V_{t-1} - V_rest)) k   (decay_input)   or   V_{t-1} - (V_{t-1} - V_rest) k + X_t
//   S_t = Θ(H_t - V_th);  reset;  V_rest = v_reset (0 for soft reset)
// State (v); parameters (k, v_th, v_reset), gradients for k and v_th (GRAD_PARAMS: v_reset requiring
// grad is refused on the fused path); saved H_t and V_{t-1} (for dL/dk).
#pragma once
namespace nrn {
struct PLIF {
  enum { NS = 1, NP = 3, NSAVE = 2, GRAD_PARAMS = 0b011 };
  template <typename C, typename F> static LIF_HD C forward(C x, C* s, const C* p, const F& f, C* save) {
    const C h = charge(x, s[0], p[0], p[2], f.decay_input);
    save[0] = h;
    save[1] = s[0];
    return fire_reset(h, p[1], p[2], f.hard, &s[0]);
  }
  template <int SG, typename C, typename F>
  static LIF_HD C backward(C x, const C* save, C g_out, C* g_s, const C* p, const F& f, C* g_p) {
    C g_th;
    const C g_h = fire_reset_backward<SG>(save[0], p[1], p[2], g_out, g_s[0], f, &g_th);
    const C a = save[1] - p[2];                            // V_{t-1} - V_rest
    g_p[0] = g_h * (f.decay_input ? x - a : -a);           // dH/dk
    g_p[1] = g_th;
    g_p[2] = (C)0;
    g_s[0] = g_h * ((C)1 - p[0]);                          // dH/dV_{t-1} = 1 - k
    return f.decay_input ? g_h * p[0] : g_h;               // dH/dX
  }
};
}  // namespace nrn
