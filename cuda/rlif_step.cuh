// RLIF: the element-wise part of one step of a recurrent LIF layer, built from the neuron
// template's LIF pieces (nrn::charge, nrn::fire_reset, nrn::fire_reset_backward, and through them
// lif::surrogate_grad). The recurrent term is not per-neuron: the host loops
// (spiking/kernels/rlif_cpu.cpp, spiking/kernels/rlif_cuda.py) compute R_t = S_{t-1} W^T + b for
// the whole layer by one matmul per step and hand each neuron its own R_t:
//   I_t = X_t + R_t;  H_t = LIF charge of I_t;  S_t = Θ(H_t - θ);  V_t = reset(H_t, S_t)
// Backward, per step from T-1 down to 0 (the host adds the recurrent matmuls around it):
//   dL/dS_t = g_out_t + (dL/dI_{t+1}) W;   dL/dH_t from fire_reset_backward;
//   dL/dI_t = dL/dH_t k (decay_input) or dL/dH_t;   dL/dV_{t-1} = dL/dH_t (1 - k)
// and dL/dX_t = dL/dI_t, dL/dW = Σ_t (dL/dI_t)^T S_{t-1}, dL/db = Σ_t dL/dI_t.
#pragma once

#include "neuron_template.cuh"

namespace nrn {

// The surrogate's width parameters (lif::Params: sg_param, and atan's π/2·alpha in sg_k).
template <typename C> LIF_HD lif::Params<C> surrogate_params(int sg, double sg_param) {
  lif::Params<C> p;
  p.sg_param = (C)sg_param;
  p.sg_k = (C)(sg == lif::SG_ATAN ? 3.141592653589793 / 2.0 * sg_param : 0.0);
  return p;
}

// Per-layer constants of RLIF: k = 1/tau, V_rest, θ, V_reset.
template <typename C> struct RLIFParams {
  C k, rest, theta, v_reset;
};

struct RLIF {
  // One step of one neuron: updates *v (V_{t-1} -> V_t), writes H_t to *h, returns S_t.
  template <typename C, typename F>
  static LIF_HD C forward(C x, C rec, C* v, const RLIFParams<C>& p, const F& f, C* h) {
    const C i = x + rec;
    *h = charge(i, *v, p.k, p.rest, f.decay_input);
    return fire_reset(*h, p.theta, p.v_reset, f.hard, v);
  }
  // Its derivatives: g_s = dL/dS_t (output and recurrent), *g_v = dL/dV_t on entry and
  // dL/dV_{t-1} on return; returns dL/dI_t (= dL/dX_t).
  template <int SG, typename C, typename F>
  static LIF_HD C backward(C h, C g_s, C* g_v, const RLIFParams<C>& p, const F& f) {
    C g_th;
    const C g_h = fire_reset_backward<SG>(h, p.theta, p.v_reset, g_s, *g_v, f, &g_th);
    *g_v = g_h * ((C)1 - p.k);
    return f.decay_input ? g_h * p.k : g_h;
  }
};

}  // namespace nrn
