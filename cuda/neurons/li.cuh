// LI: leaky integrator (readout, no spikes); the output is the membrane.
//   V_t = V_{t-1} + (X_t - (V_{t-1} - V_leak)) k   (decay_input)   or   V_{t-1} - (V_{t-1} - V_leak) k + X_t
// State (v); parameters (k, v_leak), without gradients (GRAD_PARAMS = 0: a parameter that requires
// grad is refused on the fused path); nothing saved (the step is linear).
#pragma once
namespace nrn {
struct LI {
  enum { NS = 1, NP = 2, NSAVE = 0, GRAD_PARAMS = 0 };
  template <typename C, typename F> static LIF_HD C forward(C x, C* s, const C* p, const F& f, C*) {
    s[0] = charge(x, s[0], p[0], p[1], f.decay_input);
    return s[0];
  }
  template <int SG, typename C, typename F>
  static LIF_HD C backward(C, const C*, C g_out, C* g_s, const C* p, const F& f, C* g_p) {
    const C g_v = g_out + g_s[0];
    g_s[0] = g_v * ((C)1 - p[0]);
    g_p[0] = (C)0; g_p[1] = (C)0;
    return f.decay_input ? g_v * p[0] : g_v;
  }
};
}  // namespace nrn
