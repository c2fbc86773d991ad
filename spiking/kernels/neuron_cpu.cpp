// Fused multi-step neurons on the CPU, instantiated from the neuron template
// (cuda/neuron_template.cuh): one forward and one backward loop for every dynamics definition in
// its registry (NRN_FOR_EACH), float32 and float64.
//
// Layout: x, out [T, N]; state [NS, N]; params [NP, N]; saved [NSAVE, T, N] (all contiguous);
// the initial state and the parameters may also be [NS, 1] / [NP, 1] (one value per layer).
// Work is split into chunks of CHUNK consecutive neurons (at::parallel_for); each chunk keeps its
// state, parameters and gradient accumulators in small stack buffers and walks all T steps, so
// there is no per-step tensor and no autograd graph. Compiled with -O3 -ffp-contract=off (every
// operation rounds like the torch reference). Large outputs come from the recycled huge-page
// buffers of cpu_buffers.h and are written with streaming stores; the forward pass also probes x
// for NaN/inf (x - x is 0 only for finite x), so no separate scan of x is needed.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <tuple>
#include <vector>

#include "neuron_template.cuh"
#include "cpu_buffers.h"

namespace {

using cpubuf::empty_big;
using cpubuf::write_row;

constexpr int64_t CHUNK = 256;
constexpr int64_t MIN_TASK_WORK = int64_t(1) << 20;
int64_t grain(int64_t steps) { return std::max<int64_t>(1, MIN_TASK_WORK / std::max<int64_t>(1, steps * CHUNK)); }
constexpr int at_least_1(int n) { return n > 0 ? n : 1; }

template <typename C> nrn::Flags<C> make_flags(bool hard, bool detach, bool decay_input, int sg, double sg_param) {
  nrn::Flags<C> f;
  f.hard = hard; f.detach = detach; f.decay_input = decay_input;
  f.sg.sg_param = (C)sg_param;
  f.sg.sg_k = (C)(sg == lif::SG_ATAN ? 3.141592653589793 / 2.0 * sg_param : 0.0);
  return f;
}

// rows[k][0..len) = src[k, n0..n0+len) for src [K, n], or src[k] repeated for src [K, 1] (n == 1)
template <int K, typename C>
inline void load_rows(const C* src, int64_t n, int64_t n0, int64_t len, C (*rows)[CHUNK]) {
  for (int k = 0; k < K; ++k) {
    if (n == 1) std::fill(rows[k], rows[k] + len, src[k]);
    else std::copy(src + k * n + n0, src + k * n + n0 + len, rows[k]);
  }
}

// Returns true when some x is NaN or ±inf.
template <class D, typename C>
bool forward_loop(const C* x, const C* st0, const C* prm, C* out, C* st_last, C* saved, int64_t steps, int64_t n,
                  int64_t s_n, int64_t p_n, const nrn::Flags<C>& f) {
  const int64_t nchunks = (n + CHUNK - 1) / CHUNK;
  const bool stream = size_t(steps * n) * sizeof(C) >= cpubuf::STREAM_BYTES;
  std::atomic<bool> nonfinite(false);
  at::parallel_for(0, nchunks, grain(steps), [&](int64_t c0, int64_t c1) {
    alignas(64) C st[D::NS][CHUNK];
    alignas(64) C pr[D::NP][CHUNK];
    alignas(64) C sv[at_least_1(D::NSAVE)][CHUNK];
    alignas(64) C o[CHUNK];
    alignas(64) C probe[CHUNK];
    for (int64_t ch = c0; ch < c1; ++ch) {
      const int64_t n0 = ch * CHUNK, len = std::min(CHUNK, n - n0);
      load_rows<D::NS>(st0, s_n, n0, len, st);
      load_rows<D::NP>(prm, p_n, n0, len, pr);
      std::fill(probe, probe + len, (C)0);
      for (int64_t t = 0; t < steps; ++t) {
        const C* xt = x + t * n + n0;
        for (int64_t j = 0; j < len; ++j) {
          C s[D::NS], p[D::NP], v[at_least_1(D::NSAVE)];
          for (int k = 0; k < D::NS; ++k) s[k] = st[k][j];
          for (int k = 0; k < D::NP; ++k) p[k] = pr[k][j];
          const C xj = xt[j];
          probe[j] += xj - xj;
          o[j] = D::forward(xj, s, p, f, v);
          for (int k = 0; k < D::NS; ++k) st[k][j] = s[k];
          for (int k = 0; k < D::NSAVE; ++k) sv[k][j] = v[k];
        }
        write_row<C>(out + t * n + n0, o, len, stream);
        if (saved)
          for (int k = 0; k < D::NSAVE; ++k) write_row<C>(saved + (k * steps + t) * n + n0, sv[k], len, stream);
      }
      for (int k = 0; k < D::NS; ++k) std::copy(st[k], st[k] + len, st_last + k * n + n0);
      bool bad = false;
      for (int64_t j = 0; j < len; ++j) bad |= !(probe[j] == (C)0);
      if (bad) nonfinite.store(true, std::memory_order_relaxed);
    }
    if (stream) cpubuf::stream_fence();
  });
  return nonfinite.load();
}

template <class D, int SG, bool HARD, bool DETACH, bool DECAY, typename C>
void backward_loop(const C* x, const C* saved, const C* prm, const C* g_out, const C* g_last, C* g_x, C* g_st0,
                   C* g_prm, int64_t steps, int64_t n, int64_t p_n, const nrn::Flags<C>& flags) {
  nrn::FixedFlags<C, HARD, DETACH, DECAY> f;
  f.sg = flags.sg;
  const int64_t nchunks = (n + CHUNK - 1) / CHUNK;
  const bool stream = size_t(steps * n) * sizeof(C) >= cpubuf::STREAM_BYTES;
  at::parallel_for(0, nchunks, grain(steps), [&](int64_t c0, int64_t c1) {
    alignas(64) C gst[D::NS][CHUNK];
    alignas(64) C pr[D::NP][CHUNK];
    alignas(64) C gx[CHUNK];
    alignas(64) C zeros[CHUNK] = {};
    alignas(64) C gpf[D::NP][CHUNK];      // parameter gradients: partial sums of LIF_VTH_FLUSH steps,
    alignas(64) double gp[D::NP][CHUNK];  // summed over T in double (only when g_prm is asked for)
    for (int64_t ch = c0; ch < c1; ++ch) {
      const int64_t n0 = ch * CHUNK, len = std::min(CHUNK, n - n0);
      for (int k = 0; k < D::NS; ++k)
        for (int64_t j = 0; j < len; ++j) gst[k][j] = g_last ? g_last[k * n + n0 + j] : (C)0;
      load_rows<D::NP>(prm, p_n, n0, len, pr);
      for (int k = 0; k < D::NP; ++k) {
        std::fill(gp[k], gp[k] + len, 0.0);
        std::fill(gpf[k], gpf[k] + len, (C)0);
      }
      for (int64_t t = steps - 1; t >= 0; --t) {
        const int64_t off = t * n + n0;
        const C* xt = x + off;
        const C* go = g_out ? g_out + off : zeros;
        const C* sv = saved ? saved + off : zeros;
        const int64_t ss = steps * n;
        for (int64_t j = 0; j < len; ++j) {
          C gs[D::NS], p[D::NP], v[at_least_1(D::NSAVE)], g[D::NP];
          for (int k = 0; k < D::NS; ++k) gs[k] = gst[k][j];
          for (int k = 0; k < D::NP; ++k) p[k] = pr[k][j];
          for (int k = 0; k < D::NSAVE; ++k) v[k] = sv[k * ss + j];
          gx[j] = D::template backward<SG>(xt[j], v, go[j], gs, p, f, g);
          for (int k = 0; k < D::NS; ++k) gst[k][j] = gs[k];
          for (int k = 0; k < D::NP; ++k) gpf[k][j] += g[k];
        }
        if (g_prm && t % LIF_VTH_FLUSH == 0)
          for (int k = 0; k < D::NP; ++k)
            for (int64_t j = 0; j < len; ++j) { gp[k][j] += (double)gpf[k][j]; gpf[k][j] = (C)0; }
        write_row<C>(g_x + off, gx, len, stream);
      }
      for (int k = 0; k < D::NS; ++k) std::copy(gst[k], gst[k] + len, g_st0 + k * n + n0);
      if (g_prm)
        for (int k = 0; k < D::NP; ++k)
          for (int64_t j = 0; j < len; ++j) g_prm[k * n + n0 + j] = (C)gp[k][j];
    }
    if (stream) cpubuf::stream_fence();
  });
}

// backward_loop with the surrogate, reset mode, detach and charge form fixed at compile time
template <class D, int SG, bool HARD, bool DETACH, typename C>
void backward_decay(const C* x, const C* s, const C* p, const C* go, const C* gl, C* gx, C* gs0, C* gp, int64_t steps,
                    int64_t n, int64_t p_n, const nrn::Flags<C>& f) {
  if (f.decay_input) backward_loop<D, SG, HARD, DETACH, true, C>(x, s, p, go, gl, gx, gs0, gp, steps, n, p_n, f);
  else backward_loop<D, SG, HARD, DETACH, false, C>(x, s, p, go, gl, gx, gs0, gp, steps, n, p_n, f);
}

template <class D, int SG, typename C>
void backward_modes(const C* x, const C* s, const C* p, const C* go, const C* gl, C* gx, C* gs0, C* gp, int64_t steps,
                    int64_t n, int64_t p_n, const nrn::Flags<C>& f) {
  if (f.hard && f.detach) backward_decay<D, SG, true, true, C>(x, s, p, go, gl, gx, gs0, gp, steps, n, p_n, f);
  else if (f.hard) backward_decay<D, SG, true, false, C>(x, s, p, go, gl, gx, gs0, gp, steps, n, p_n, f);
  else if (f.detach) backward_decay<D, SG, false, true, C>(x, s, p, go, gl, gx, gs0, gp, steps, n, p_n, f);
  else backward_decay<D, SG, false, false, C>(x, s, p, go, gl, gx, gs0, gp, steps, n, p_n, f);
}

struct Shape { int ns, np, nsave; };

template <class D> Shape shape_of() { return Shape{D::NS, D::NP, D::NSAVE}; }

std::vector<std::string> names() {
  std::vector<std::string> r;
#define NRN_NAME(name, D) r.push_back(#name);
  NRN_FOR_EACH(NRN_NAME)
#undef NRN_NAME
  return r;
}

Shape shape(int64_t id) {
  int64_t i = 0;
#define NRN_SHAPE(name, D) if (i++ == id) return shape_of<D>();
  NRN_FOR_EACH(NRN_SHAPE)
#undef NRN_SHAPE
  TORCH_CHECK(false, "neuron: unknown dynamics id ", id);
}

void check(const at::Tensor& t, const char* name, at::ScalarType dtype) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(), name, " must be a contiguous CPU tensor");
  TORCH_CHECK(t.scalar_type() == dtype, name, " must have dtype ", dtype, ", got ", t.scalar_type());
}

template <class D, typename C>
bool forward_typed(const at::Tensor& x, const at::Tensor& st0, const at::Tensor& prm, at::Tensor& out,
                   at::Tensor& st_last, at::Tensor& saved, int64_t steps, int64_t n, const nrn::Flags<C>& f) {
  return forward_loop<D, C>(x.data_ptr<C>(), st0.data_ptr<C>(), prm.data_ptr<C>(), out.data_ptr<C>(),
                            st_last.data_ptr<C>(), saved.defined() ? saved.data_ptr<C>() : nullptr, steps, n,
                            st0.numel() / D::NS, prm.numel() / D::NP, f);
}

template <class D, typename C>
void backward_typed(const at::Tensor& x, const at::Tensor& saved, const at::Tensor& prm, const at::Tensor& g_out,
                    const at::Tensor& g_last, at::Tensor& g_x, at::Tensor& g_st0, at::Tensor& g_prm, int64_t steps,
                    int64_t n, int sg, const nrn::Flags<C>& f) {
  const C* ps = D::NSAVE > 0 ? saved.data_ptr<C>() : nullptr;
  const C* pgo = g_out.defined() ? g_out.data_ptr<C>() : nullptr;
  const C* pgl = g_last.defined() ? g_last.data_ptr<C>() : nullptr;
  C* a[3] = {g_x.data_ptr<C>(), g_st0.data_ptr<C>(), g_prm.defined() ? g_prm.data_ptr<C>() : nullptr};
  const C* px = x.data_ptr<C>();
  const C* pp = prm.data_ptr<C>();
  const int64_t p_n = prm.numel() / D::NP;
  switch (sg) {
    case lif::SG_SIGMOID: backward_modes<D, lif::SG_SIGMOID, C>(px, ps, pp, pgo, pgl, a[0], a[1], a[2], steps, n, p_n, f); break;
    case lif::SG_ATAN: backward_modes<D, lif::SG_ATAN, C>(px, ps, pp, pgo, pgl, a[0], a[1], a[2], steps, n, p_n, f); break;
    case lif::SG_FAST_SIGMOID:
      backward_modes<D, lif::SG_FAST_SIGMOID, C>(px, ps, pp, pgo, pgl, a[0], a[1], a[2], steps, n, p_n, f); break;
    case lif::SG_TRIANGLE: backward_modes<D, lif::SG_TRIANGLE, C>(px, ps, pp, pgo, pgl, a[0], a[1], a[2], steps, n, p_n, f); break;
    default: TORCH_CHECK(false, "surrogate: unknown kernel id ", sg);
  }
}

}  // namespace

// x [T, ...]; state0 [NS, ...]; params [NP, ...]. Returns (out [T, ...], state_last [NS, ...],
// saved [NSAVE, T, ...] or empty unless save, x_nonfinite).
std::tuple<at::Tensor, at::Tensor, at::Tensor, bool> neuron_forward(int64_t id, const at::Tensor& x, const at::Tensor& state0,
                                       const at::Tensor& params, bool hard, bool decay_input, bool save) {
  const Shape sh = shape(id);
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "x: fused neurons support float32/float64, got ", dtype);
  check(x, "x", dtype); check(state0, "state0", dtype); check(params, "params", dtype);
  const int64_t steps = x.size(0), n = x.numel() / steps;
  TORCH_CHECK(state0.numel() == sh.ns * n || state0.numel() == sh.ns, "state0 must be [", sh.ns, ", N] or [", sh.ns, ", 1]");
  TORCH_CHECK(params.numel() == sh.np * n || params.numel() == sh.np, "params must be [", sh.np, ", N] or [", sh.np, ", 1]");
  at::Tensor out = empty_big(x.sizes(), x.options());
  at::Tensor st_last = at::empty({sh.ns, n}, x.options());
  at::Tensor saved = (save && sh.nsave > 0) ? empty_big({sh.nsave, steps * n}, x.options()) : at::Tensor();
  bool nonfinite = false;
  int64_t i = 0;
#define NRN_FWD(name, D)                                                                                     \
  if (i++ == id) {                                                                                           \
    if (dtype == at::kFloat)                                                                                 \
      nonfinite = forward_typed<D, float>(x, state0, params, out, st_last, saved, steps, n,                              \
                              make_flags<float>(hard, false, decay_input, 0, 1.0));                          \
    else                                                                                                     \
      nonfinite = forward_typed<D, double>(x, state0, params, out, st_last, saved, steps, n,                             \
                               make_flags<double>(hard, false, decay_input, 0, 1.0));                        \
  }
  NRN_FOR_EACH(NRN_FWD)
#undef NRN_FWD
  return {out, st_last, saved.defined() ? saved : at::empty({0}, x.options()), nonfinite};
}

// Returns (grad_x [T, ...], grad_state0 [NS, N], grad_params [NP, N] or empty unless need_params).
std::vector<at::Tensor> neuron_backward(int64_t id, const at::Tensor& x, const at::Tensor& saved,
                                        const at::Tensor& params, const c10::optional<at::Tensor>& g_out_opt,
                                        const c10::optional<at::Tensor>& g_last_opt, bool hard, bool detach,
                                        bool decay_input, int64_t sg, double sg_param, bool need_params) {
  const Shape sh = shape(id);
  const auto dtype = x.scalar_type();
  check(x, "x", dtype); check(params, "params", dtype);
  const int64_t steps = x.size(0), n = x.numel() / steps;
  if (sh.nsave > 0) {
    check(saved, "saved", dtype);
    TORCH_CHECK(saved.numel() == sh.nsave * steps * n, "saved: the forward saved no state for backward");
  }
  at::Tensor g_out = g_out_opt.has_value() ? *g_out_opt : at::Tensor();
  at::Tensor g_last = g_last_opt.has_value() ? *g_last_opt : at::Tensor();
  if (g_out.defined()) { check(g_out, "grad_out", dtype); TORCH_CHECK(g_out.numel() == steps * n, "grad_out: bad shape"); }
  if (g_last.defined()) { check(g_last, "grad_state", dtype); TORCH_CHECK(g_last.numel() == sh.ns * n, "grad_state: bad shape"); }
  at::Tensor g_x = empty_big(x.sizes(), x.options());
  at::Tensor g_st0 = at::empty({sh.ns, n}, x.options());
  TORCH_CHECK(params.numel() == sh.np * n || params.numel() == sh.np, "params: bad shape");
  at::Tensor g_prm = need_params ? at::empty({sh.np, n}, x.options()) : at::Tensor();
  int64_t i = 0;
#define NRN_BWD(name, D)                                                                                     \
  if (i++ == id) {                                                                                           \
    if (dtype == at::kFloat)                                                                                 \
      backward_typed<D, float>(x, saved, params, g_out, g_last, g_x, g_st0, g_prm, steps, n, (int)sg,       \
                               make_flags<float>(hard, detach, decay_input, (int)sg, sg_param));             \
    else                                                                                                     \
      backward_typed<D, double>(x, saved, params, g_out, g_last, g_x, g_st0, g_prm, steps, n, (int)sg,      \
                                make_flags<double>(hard, detach, decay_input, (int)sg, sg_param));           \
  }
  NRN_FOR_EACH(NRN_BWD)
#undef NRN_BWD
  return {g_x, g_st0, g_prm.defined() ? g_prm : at::empty({0}, x.options())};
}

std::vector<int64_t> layout(int64_t id) {
  const Shape sh = shape(id);
  return {sh.ns, sh.np, sh.nsave};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Fused multi-step neurons on the CPU, instantiated from cuda/neuron_template.cuh";
  m.def("names", &names, "dynamics names in dispatch order");
  m.def("layout", &layout, "(states, parameters, saved values) of a dynamics id");
  m.def("forward", &neuron_forward, "fused neuron forward");
  m.def("backward", &neuron_backward, "fused neuron backward");
  m.def("empty_cache", &cpubuf::release_cache, "free the recycled output buffers; returns bytes freed");
}
