// The neuron template: what every neuron's dynamics definition provides, and the pieces they
// share. The multi-step loops that are instantiated from a definition live in
// spiking/kernels/neuron_cpu_loops.h (host: chunks of neurons, OpenMP) and cuda/neurons.cu (device:
// one thread per neuron); both walk t = 0..T-1 forward and T-1..0 backward calling the
// definition's step, so one definition gives the CPU and the CUDA path.
//
// A dynamics definition D (see cuda/neurons/*.cuh, and docs/neurons.md for a worked example):
//   enum { NS = states, NP = parameters, NSAVE = values saved per step for backward };
//   template <typename C, typename F> static C forward(C x, C* s, const C* p, const F& f, C* save);
//       one step: updates the state s[NS] in place, writes save[NSAVE], returns the output
//       (the spike 0/1, or the membrane for non-spiking neurons);
//   template <int SG, typename C, typename F> static C backward(C x, const C* save, C g_out, C* g_s,
//                                                               const C* p, const F& f, C* g_p);
//       the local derivatives of that step: g_s holds dL/ds_t on entry and dL/ds_{t-1} on return,
//       g_out is dL/d(output_t), g_p receives this step's dL/dp (not accumulated), returns dL/dx_t.
//   Optional traits (nrn::traits<D> supplies the defaults):
//     SCALAR_PARAMS = 1: the parameters are one value per layer (params [NP, 1]); the loops keep
//       them in registers, so values derived from them (1/tau, ...) are loop invariants;
//     STORAGE16 = 1: the step rounds every operation to the storage type with F::round, so the
//       loops may also be instantiated for fp16/bf16 tensors (compute in float);
//     BWD_X = 0: backward ignores x (callers need not keep x for the backward pass);
//     GRAD_PARAMS = bit mask of the parameters backward gives gradients for (default: all); the
//       loops sum only those over time (the others' g_p are written and ignored).
// F is Flags<T> (runtime options; CUDA) or FixedFlags<T, ...> (options fixed at compile time;
// host loops): both give hard, detach, decay_input, the surrogate constants sg and round(c), the
// value a tensor of storage type T holds after c is written to it (the identity for float/double).
// Parameters arrive per neuron (p[k] = params[k, i]) or per layer (SCALAR_PARAMS); the registry at
// the end of this file gives each definition its name and dispatch index (the order of
// spiking.neuron.registry is checked against it when the extension loads).
//
// Arithmetic: only +, -, * in the order of the torch reference (spiking/neuron/<name>.py; every
// 1/tau precomputed as a parameter, except LIF, whose reference divides by tau); compiled without
// FMA contraction, so float32/float64 forward results are bit-identical to the reference on both
// host and device.
#pragma once

#include "lif_step.cuh"  // storage types and rounding, lif::surrogate_grad, LIF_HD

namespace nrn {

// Static configuration of one call (same for every neuron); T is the storage type.
template <typename T> struct Flags {
  typedef typename lif::Store<T>::C C;
  bool hard;         // hard reset (to v_reset) or soft reset (subtract the threshold)
  bool detach;       // no gradient through the spike in the reset term
  bool decay_input;  // LIF charge: H = V + (X - (V - V_rest)) k  or  H = V - (V - V_rest) k + X
  lif::Params<C> sg;  // surrogate parameter and atan's π/2·alpha
  static LIF_HD C round(C c) { return lif::Store<T>::round(c); }
};

// The same with every flag fixed at compile time: the host loops are instantiated with it, which
// lets them vectorise (with runtime flags GCC does not vectorise the sigmoid surrogate's exp).
template <typename T, bool HARD, bool DETACH, bool DECAY> struct FixedFlags {
  typedef typename lif::Store<T>::C C;
  static constexpr bool hard = HARD;
  static constexpr bool detach = DETACH;
  static constexpr bool decay_input = DECAY;
  lif::Params<C> sg;
  static LIF_HD C round(C c) { return lif::Store<T>::round(c); }
};

// Optional traits of a definition with their defaults (see the header comment).
template <class D, class = void> struct scalar_params { enum { value = 0 }; };
template <class D> struct scalar_params<D, decltype(void(D::SCALAR_PARAMS))> { enum { value = D::SCALAR_PARAMS }; };
template <class D, class = void> struct storage16 { enum { value = 0 }; };
template <class D> struct storage16<D, decltype(void(D::STORAGE16))> { enum { value = D::STORAGE16 }; };
template <class D, class = void> struct bwd_x { enum { value = 1 }; };
template <class D> struct bwd_x<D, decltype(void(D::BWD_X))> { enum { value = D::BWD_X }; };
template <class D, class = void> struct grad_params { enum { value = (1 << D::NP) - 1 }; };
template <class D> struct grad_params<D, decltype(void(D::GRAD_PARAMS))> { enum { value = D::GRAD_PARAMS }; };
template <class D> struct traits {
  enum { SCALAR_PARAMS = scalar_params<D>::value, STORAGE16 = storage16<D>::value, BWD_X = bwd_x<D>::value,
         GRAD_PARAMS = grad_params<D>::value };
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

#include "neurons/lif.cuh"
#include "neurons/if.cuh"
#include "neurons/plif.cuh"
#include "neurons/alif.cuh"
#include "neurons/cuba_lif.cuh"
#include "neurons/li.cuh"

// Registry: NEURON(name, definition). Adding a neuron = its header above + one line here + its
// torch reference and registry entry in Python (spiking/neuron/registry.py).
#define NRN_FOR_EACH(NEURON) \
  NEURON(lif, nrn::LIF)      \
  NEURON(if, nrn::IF)        \
  NEURON(plif, nrn::PLIF)    \
  NEURON(alif, nrn::ALIF)    \
  NEURON(cuba_lif, nrn::CubaLIF) \
  NEURON(li, nrn::LI)
