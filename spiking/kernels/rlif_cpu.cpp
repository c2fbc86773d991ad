// Fused recurrent LIF (RLIF) on the CPU: the whole multi-step forward and its BPTT backward in one
// native call each, no per-step Python or autograd graph.
//
// Forward, t = 0..T-1: R_t = S_{t-1} W^T + b (at::addmm_out, the call nn.Linear makes, so R_t is
// bit-identical to the torch reference), then the element-wise step of cuda/rlif_step.cuh
// (the neuron template's charge / fire_reset) over the B x N neurons.
// Backward, t = T-1..0: the element-wise derivatives (fire_reset_backward, the surrogate), then
// dL/dS_{t-1} = (dL/dI_t) W by one matmul per step; dL/dW = Σ_t (dL/dI_t)^T S_{t-1} is a single
// matmul over all steps after the loop, dL/db a single sum.
// Layout: x, out, h [T, B, N]; W [N, N]; v, s [B, N] (all contiguous). Compiled like the other
// extensions (-O3 -ffp-contract=off): every element-wise operation rounds like the reference.
// The [T, B, N] outputs come from the recycled huge-page buffers of cpu_buffers.h.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>

#include <atomic>
#include <tuple>
#include <type_traits>
#include <vector>

#include "rlif_step.cuh"
#include "cpu_buffers.h"

namespace {

constexpr int64_t GRAIN = int64_t(1) << 17;  // neurons per task of the element-wise passes (a parallel
                                              // region per step costs more than it saves below this)

// fn(nrn::FixedFlags<C, HARD, DETACH, DECAY>) with the flags fixed at compile time (vectorisable).
template <typename C, typename Fn> void with_flags(bool hard, bool detach, bool decay, const lif::Params<C>& sg, Fn&& fn) {
  auto pick = [](bool v, auto&& k) { if (v) k(std::true_type{}); else k(std::false_type{}); };
  pick(hard, [&](auto H) { pick(detach, [&](auto D) { pick(decay, [&](auto Y) {
    nrn::FixedFlags<C, decltype(H)::value, decltype(D)::value, decltype(Y)::value> f;
    f.sg = sg;
    fn(f);
  }); }); });
}

// fn(std::integral_constant<int, SG>) for the surrogate kernel id sg.
template <typename Fn> void with_surrogate(int64_t sg, Fn&& fn) {
  switch (sg) {
    case lif::SG_SIGMOID: fn(std::integral_constant<int, lif::SG_SIGMOID>{}); break;
    case lif::SG_ATAN: fn(std::integral_constant<int, lif::SG_ATAN>{}); break;
    case lif::SG_FAST_SIGMOID: fn(std::integral_constant<int, lif::SG_FAST_SIGMOID>{}); break;
    case lif::SG_TRIANGLE: fn(std::integral_constant<int, lif::SG_TRIANGLE>{}); break;
    default: TORCH_CHECK(false, "surrogate: unknown kernel id ", sg);
  }
}

void check(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t numel) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(), "rlif: ", name, " must be a contiguous CPU tensor");
  TORCH_CHECK(t.scalar_type() == dtype, "rlif: ", name, " must have dtype ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.numel() == numel, "rlif: ", name, " has ", t.numel(), " elements, expected ", numel);
}

template <typename C>
bool forward_typed(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& bias, at::Tensor& v,
                   const at::Tensor& s0, at::Tensor& out, at::Tensor& h, const nrn::RLIFParams<C>& p, bool hard,
                   bool decay_input) {
  const int64_t steps = x.size(0), batch = x.size(1), n = x.size(2), bn = batch * n;
  // R_t, S_{t-1} and (inference) H_t in buffers made once: S_{t-1} is copied, because MKL's gemm
  // rounds differently for an operand at an odd offset and the reference multiplies a freshly
  // allocated (aligned) tensor; no tensor is created per step.
  at::Tensor rec = at::empty({batch, n}, x.options()), s_prev = at::empty({batch, n}, x.options());
  at::Tensor h_tmp = h.defined() ? h : at::empty({batch, n}, x.options());
  const at::Tensor wt = w.t();
  std::atomic<bool> nonfinite(false);
  with_flags<C>(hard, false, decay_input, lif::Params<C>{}, [&](const auto& f) {
    for (int64_t t = 0; t < steps; ++t) {
      if (t > 0) std::copy(out.data_ptr<C>() + (t - 1) * bn, out.data_ptr<C>() + t * bn, s_prev.data_ptr<C>());
      const at::Tensor& sp = t == 0 ? s0 : s_prev;
      if (bias.has_value()) at::addmm_out(rec, *bias, sp, wt);  // R_t = b + S_{t-1} W^T, as nn.Linear
      else at::mm_out(rec, sp, wt);
      at::parallel_for(0, bn, GRAIN, [&](int64_t j0, int64_t j1) {
        const C* __restrict__ xt = x.data_ptr<C>() + t * bn;
        const C* __restrict__ rt = rec.data_ptr<C>();
        C* __restrict__ vt = v.data_ptr<C>();
        C* __restrict__ ot = out.data_ptr<C>() + t * bn;
        C* __restrict__ ht = h.defined() ? h.data_ptr<C>() + t * bn : h_tmp.data_ptr<C>();
        const nrn::RLIFParams<C> pl = p;  // locals: stores through the C* above cannot alias them
        const auto fl = f;
        int bad = 0;
        for (int64_t j = j0; j < j1; ++j) {
          const C xj = xt[j];
          bad |= !(xj - xj == (C)0);  // only NaN/inf give a nonzero (or NaN) x - x
          C vj = vt[j], hj;
          ot[j] = nrn::RLIF::forward(xj, rt[j], &vj, pl, fl, &hj);
          vt[j] = vj;
          ht[j] = hj;
        }
        if (bad) nonfinite.store(true, std::memory_order_relaxed);
      });
    }
  });
  return nonfinite.load();
}

template <typename C>
void backward_typed(const at::Tensor& h, const at::Tensor& w, const at::Tensor& g_out, at::Tensor& g_v,
                    at::Tensor& g_s, at::Tensor& g_x, const nrn::RLIFParams<C>& p, bool hard, bool detach,
                    bool decay_input, int64_t sg, double sg_param, bool need_s0) {
  const int64_t steps = h.size(0), batch = h.size(1), n = h.size(2), bn = batch * n;
  const at::Tensor zeros = g_out.defined() ? at::Tensor() : at::zeros({bn}, h.options());
  at::Tensor g_i = at::empty({batch, n}, h.options());  // dL/dI_t, aligned (see forward_typed)
  with_surrogate(sg, [&](auto SG) {
    with_flags<C>(hard, detach, decay_input, nrn::surrogate_params<C>((int)sg, sg_param), [&](const auto& f) {
      for (int64_t t = steps - 1; t >= 0; --t) {
        at::parallel_for(0, bn, GRAIN, [&](int64_t j0, int64_t j1) {
          const C* __restrict__ ht = h.data_ptr<C>() + t * bn;
          const C* __restrict__ got = g_out.defined() ? g_out.data_ptr<C>() + t * bn : zeros.data_ptr<C>();
          const C* __restrict__ gs = g_s.data_ptr<C>();
          C* __restrict__ gv = g_v.data_ptr<C>();
          C* __restrict__ gx = g_x.data_ptr<C>() + t * bn;
          const nrn::RLIFParams<C> pl = p;  // locals: stores through the C* above cannot alias them
          const auto fl = f;
          for (int64_t j = j0; j < j1; ++j) {
            C gvj = gv[j];
            gx[j] = nrn::RLIF::template backward<decltype(SG)::value>(ht[j], got[j] + gs[j], &gvj, pl, fl);
            gv[j] = gvj;
          }
        });
        if (t > 0 || need_s0) {  // dL/dS_{t-1} = (dL/dI_t) W
          std::copy(g_x.data_ptr<C>() + t * bn, g_x.data_ptr<C>() + (t + 1) * bn, g_i.data_ptr<C>());
          at::mm_out(g_s, g_i, w);
        }
      }
    });
  });
}

nrn::RLIFParams<double> params_of(double k, double rest, double theta, double v_reset) {
  return nrn::RLIFParams<double>{k, rest, theta, v_reset};
}

template <typename C> nrn::RLIFParams<C> cast(const nrn::RLIFParams<double>& p) {
  return nrn::RLIFParams<C>{(C)p.k, (C)p.rest, (C)p.theta, (C)p.v_reset};
}

}  // namespace

// x [T, B, N], weight [N, N], bias [N] or None, v0 / s0 [B, N]. Returns (spikes [T, B, N], V_T,
// H [T, B, N] (empty unless save), x_nonfinite).
std::tuple<at::Tensor, at::Tensor, at::Tensor, bool> rlif_forward(
    const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias, const at::Tensor& v0,
    const at::Tensor& s0, double k, double rest, double theta, double v_reset, bool hard, bool decay_input,
    bool save) {
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "rlif: x must be float32 or float64, got ", dtype);
  TORCH_CHECK(x.dim() == 3, "rlif: x must be [T, B, N]");
  const int64_t steps = x.size(0), batch = x.size(1), n = x.size(2);
  check(x, "x", dtype, steps * batch * n);
  check(weight, "weight", dtype, n * n);
  if (bias.has_value()) check(*bias, "bias", dtype, n);
  check(v0, "v0", dtype, batch * n);
  check(s0, "s0", dtype, batch * n);
  at::Tensor out = cpubuf::empty_big(x.sizes(), x.options());
  at::Tensor h = save ? cpubuf::empty_big(x.sizes(), x.options()) : at::Tensor();
  at::Tensor v = v0.clone();
  const auto p = params_of(k, rest, theta, v_reset);
  const bool bad = dtype == at::kFloat
      ? forward_typed<float>(x, weight, bias, v, s0.view({batch, n}), out, h, cast<float>(p), hard, decay_input)
      : forward_typed<double>(x, weight, bias, v, s0.view({batch, n}), out, h, cast<double>(p), hard, decay_input);
  return {out, v.view(v0.sizes()), h.defined() ? h : at::empty({0}, x.options()), bad};
}

// Returns (dL/dx, dL/dv0, dL/ds0, dL/dW, dL/db); dL/dW and dL/db are empty unless asked for.
std::vector<at::Tensor> rlif_backward(
    const at::Tensor& h, const at::Tensor& out, const at::Tensor& s0, const at::Tensor& weight,
    const c10::optional<at::Tensor>& g_out_opt, const c10::optional<at::Tensor>& g_v_opt,
    const c10::optional<at::Tensor>& g_s_opt, double k, double rest, double theta, double v_reset, bool hard,
    bool detach, bool decay_input, int64_t sg, double sg_param, bool need_s0, bool need_w, bool need_b) {
  const auto dtype = h.scalar_type();
  TORCH_CHECK(h.dim() == 3, "rlif: saved H must be [T, B, N] (the forward saved nothing for backward)");
  const int64_t steps = h.size(0), batch = h.size(1), n = h.size(2), bn = batch * n;
  check(h, "h", dtype, steps * bn);
  check(out, "out", dtype, steps * bn);
  check(s0, "s0", dtype, bn);
  check(weight, "weight", dtype, n * n);
  at::Tensor g_out = g_out_opt.has_value() ? *g_out_opt : at::Tensor();
  if (g_out.defined()) check(g_out, "grad_out", dtype, steps * bn);
  at::Tensor g_v = g_v_opt.has_value() ? g_v_opt->clone() : at::zeros({batch, n}, h.options());
  at::Tensor g_s = g_s_opt.has_value() ? g_s_opt->clone() : at::zeros({batch, n}, h.options());
  check(g_v, "grad_v", dtype, bn);
  check(g_s, "grad_s", dtype, bn);
  g_v = g_v.view({batch, n});
  g_s = g_s.view({batch, n});
  at::Tensor g_x = cpubuf::empty_big(h.sizes(), h.options());
  const auto p = params_of(k, rest, theta, v_reset);
  if (dtype == at::kFloat)
    backward_typed<float>(h, weight, g_out, g_v, g_s, g_x, cast<float>(p), hard, detach, decay_input, sg, sg_param, need_s0);
  else
    backward_typed<double>(h, weight, g_out, g_v, g_s, g_x, cast<double>(p), hard, detach, decay_input, sg, sg_param, need_s0);
  at::Tensor g_w, g_b;
  if (need_w) {  // Σ_t (dL/dI_t)^T S_{t-1}: steps 1.. against out[0..T-2] in one matmul, step 0 against s0
    const at::Tensor gi = g_x.view({steps * batch, n});
    g_w = at::mm(gi.narrow(0, 0, batch).t(), s0.view({batch, n}));
    if (steps > 1) g_w.addmm_(gi.narrow(0, batch, (steps - 1) * batch).t(), out.view({steps * batch, n}).narrow(0, 0, (steps - 1) * batch));
  }
  if (need_b) g_b = g_x.view({steps * batch, n}).sum(0);
  const auto none = at::empty({0}, h.options());
  return {g_x, g_v, need_s0 ? g_s : none, need_w ? g_w : none, need_b ? g_b : none};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Fused recurrent LIF (RLIF) on the CPU: per-step matmul + the neuron template's LIF step";
  m.def("forward", &rlif_forward, "fused RLIF forward over T steps");
  m.def("backward", &rlif_backward, "fused RLIF backward (BPTT) over T steps");
  m.def("empty_cache", &cpubuf::release_cache, "free the recycled output buffers; returns bytes freed");
}
