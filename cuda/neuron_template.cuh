// The neuron template: what every neuron's dynamics definition provides, and the pieces they
// share. The multi-step loops that are instantiated from a definition live in
// spiking/kernels/neuron_cpu.cpp (host: chunks of neurons, OpenMP) and cuda/neurons.cu (device:
// one thread per neuron); both walk t = 0..T-1 forward and T-1..0 backward calling the
// definition's step, so one definition gives the CPU and the CUDA path.
//
// A dynamics definition D (see cuda/neurons/*.cuh, and docs/neurons.md for a worked example):
//   enum { NS = states, NP = per-neuron parameters, NSAVE = values saved per step for backward };
//   template <typename C> static C forward(C x, C* s, const C* p, const nrn::Flags<C>& f, C* save);
//       one step: updates the state s[NS] in place, writes save[NSAVE], returns the output
//       (the spike 0/1, or the membrane for non-spiking neurons);
//   template <int SG, typename C, typename F> static C backward(C x, const C* save, C g_out, C* g_s,
//                                                               const C* p, const F& f, C* g_p);
//       the local derivatives of that step: g_s holds dL/ds_t on entry and dL/ds_{t-1} on return,
//       g_out is dL/d(output_t), g_p receives this step's dL/dp (not accumulated), returns dL/dx_t.
// Parameters arrive per neuron (p[k] = params[k, i]); the registry at the end of this file gives
// each definition its name and dispatch index (the order of spiking.neuron.registry is checked
// against it when the extension loads).
//
// Arithmetic: only +, -, * (every 1/tau is precomputed as a parameter), in the order of the torch
// reference (spiking/neuron/<name>.py); compiled without FMA contraction, so float32/float64
// forward results are bit-identical to the reference on both host and device.
#pragma once

#include "lif_step.cuh"  // lif::surrogate_grad (the four surrogate shapes), LIF_HD

namespace nrn {

// Static configuration of one call (same for every neuron).
template <typename C> struct Flags {
  bool hard;         // hard reset (to v_reset) or soft reset (subtract the threshold)
  bool detach;       // no gradient through the spike in the reset term
  bool decay_input;  // LIF charge: H = V + (X - (V - V_rest)) k  or  H = V - (V - V_rest) k + X
  lif::Params<C> sg; // only sg_param / sg_k are used (surrogate width / atan's π/2·alpha)
};

// The same with every flag fixed at compile time: the host backward loops are instantiated with
// it, which lets them vectorise (with runtime flags GCC does not vectorise the sigmoid surrogate's
// exp).
template <typename C, bool HARD, bool DETACH, bool DECAY> struct FixedFlags {
  static constexpr bool hard = HARD;
  static constexpr bool detach = DETACH;
  static constexpr bool decay_input = DECAY;
  lif::Params<C> sg;
};

// LIF charge with k = 1/tau: decay_input ? V + (X - (V - rest)) k : V - (V - rest) k + X.
template <typename C> LIF_HD C charge(C x, C v, C k, C rest, bool decay_input) {
  const C a = v - rest;
  if (decay_input) {
    const C b = x - a;
    const C c = b * k;
    return v + c;
  }
  const C c = a * k;
  const C d = v - c;
  return d + x;
}

// Fire and reset: S = Θ(H - θ); V = H(1 - S) + V_reset S (hard) or H - θ S (soft). Returns S.
template <typename C> LIF_HD C fire_reset(C h, C theta, C v_reset, bool hard, C* v) {
  const bool fired = h - theta >= (C)0;
  *v = fired ? (hard ? v_reset : h - theta) : h;
  return fired ? (C)1 : (C)0;
}

// Backward of fire_reset. g_spike: dL/dS from outside the reset; g_v: dL/dV_t. Writes dL/dθ to
// *g_theta and returns dL/dH.
template <int SG, typename C, typename F>
LIF_HD C fire_reset_backward(C h, C theta, C v_reset, C g_spike, C g_v, const F& f, C* g_theta) {
  const C z = h - theta;
  const C s = z >= (C)0 ? (C)1 : (C)0;
  const C sg = lif::surrogate_grad<SG>(z, f.sg);
  const C dv_ds = f.hard ? v_reset - h : -theta;       // ∂V/∂S
  const C g_s = f.detach ? g_spike : g_spike + g_v * dv_ds;
  const C g_z = g_s * sg;
  const C dv_dh = f.hard ? (C)1 - s : (C)1;            // ∂V/∂H at fixed S
  const C dv_dth = f.hard ? (C)0 : -s;                 // ∂V/∂θ at fixed S
  *g_theta = g_v * dv_dth - g_z;
  return g_z + g_v * dv_dh;
}

}  // namespace nrn

#include "neurons/if.cuh"
#include "neurons/plif.cuh"
#include "neurons/alif.cuh"
#include "neurons/cuba_lif.cuh"
#include "neurons/li.cuh"

// Registry: NEURON(name, definition). Adding a neuron = its header above + one line here + its
// torch reference and registry entry in Python (spiking/neuron/registry.py).
#define NRN_FOR_EACH(NEURON) \
  NEURON(if, nrn::IF)        \
  NEURON(plif, nrn::PLIF)    \
  NEURON(alif, nrn::ALIF)    \
  NEURON(cuba_lif, nrn::CubaLIF) \
  NEURON(li, nrn::LI)
