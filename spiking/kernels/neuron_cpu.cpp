// Fused multi-step neurons on the CPU, instantiated from the neuron template
// (cuda/neuron_template.cuh): the extension's entry points. The loops are in neuron_cpu_loops.h
// (one forward and one backward loop per dynamics definition of the registry NRN_FOR_EACH, every
// flag a compile-time constant), instantiated in neuron_cpu_float.cpp (float32) and
// neuron_cpu_double.cpp (float64, and fp16/bf16 for the definitions that round every operation
// to the storage type, STORAGE16: LIF).
//
// Layout: x, out [T, N]; state [NS, N]; params [NP, N]; saved [NSAVE, T, N] (all contiguous);
// the initial state and the parameters may also be [NS, 1] / [NP, 1] (one value per layer).
// Storage type T (the tensors' dtype) and compute type C (float for fp16/bf16; lif::Store<T>);
// parameters are passed in C. Compiled with -O3 -ffp-contract=off (every operation rounds like
// the torch reference), -fno-trapping-math (the selects of fire/reset are if-converted so the
// step loops vectorise), -fno-math-errno, -fopenmp, and -mavx2 where the CPU has it (cpu.py).
// Outputs of 256 KiB and more come from the recycled (huge-page) buffers of cpu_buffers.h, those
// of 32 MiB and more are written with streaming stores; the forward pass also probes x for NaN/inf
// (x - x is 0 only for finite x), so no separate scan of x is needed.
#include <string>
#include <tuple>
#include <vector>

#include "neuron_cpu_loops.h"  // the loops and the Forward / Backward jobs

namespace {

using namespace nrn_cpu;

struct Shape { int ns, np, nsave, scalar_params, storage16, bwd_x, grad_params; int64_t chunk; };

template <class D> Shape shape_of() {
  typedef nrn::traits<D> Tr;
  return Shape{D::NS, D::NP, D::NSAVE, Tr::SCALAR_PARAMS, Tr::STORAGE16, Tr::BWD_X, Tr::GRAD_PARAMS, chunk<D>()};
}

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
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(t.scalar_type() == dtype, name, " must have dtype ", dtype, ", got ", t.scalar_type());
}

// The compute dtype of a storage dtype (float for fp16/bf16): the dtype of params.
at::ScalarType compute_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// Runs the job for dynamics id in the storage dtype of the call (instantiated per dtype in
// neuron_cpu_float.cpp / neuron_cpu_double.cpp).
template <class Job> void dispatch_dtype(int64_t id, at::ScalarType dtype, Job& job) {
  switch (dtype) {
    case at::kFloat: return run_float(id, job);
    case at::kDouble: return run_double(id, job);
    case at::kHalf: return run_half(id, job);
    case at::kBFloat16: return run_bfloat16(id, job);
    default: TORCH_CHECK(false, "x: unsupported dtype ", dtype);
  }
}

at::Tensor opt(const c10::optional<at::Tensor>& t) { return t.has_value() ? *t : at::Tensor(); }

// [k, *sizes], or sizes itself when k == 1: a single state / saved value needs no leading dim,
// so callers get tensors of the shapes of x and x[0] without a view op (per-call host cost).
std::vector<int64_t> stacked(int64_t k, at::IntArrayRef sizes) {
  std::vector<int64_t> r;
  if (k != 1) r.push_back(k);
  for (auto d : sizes) r.push_back(d);
  return r;
}

}  // namespace

// x [T, ...]; state0 [NS, ...] or [NS, 1]; params [NP, ...] or [NP, 1] in the compute dtype.
// Returns (out [T, ...], state, saved [NSAVE, T, ...] (empty unless save), x_nonfinite): state is
// state_last [NS, ...], or with return_seq (one-state definitions) the state after every step
// [T, ...], whose last row is state_last; the leading NS / NSAVE dim is left out when it is 1
// (see stacked).
std::tuple<at::Tensor, at::Tensor, at::Tensor, bool> neuron_forward(
    int64_t id, const at::Tensor& x, const at::Tensor& state0, const at::Tensor& params, bool hard, bool decay_input,
    bool save, bool return_seq) {
  const Shape sh = shape(id);
  const auto dtype = x.scalar_type();
  check(x, "x", dtype); check(state0, "state0", dtype); check(params, "params", compute_dtype(dtype));
  TORCH_CHECK(x.dim() >= 2, "x must have shape [T, batch, ...]");
  const int64_t steps = x.size(0), n = x.numel() / steps;
  TORCH_CHECK(state0.numel() == sh.ns * n || state0.numel() == sh.ns, "state0 must be [", sh.ns, ", N] or [", sh.ns, ", 1]");
  TORCH_CHECK(params.numel() == sh.np * n || params.numel() == sh.np, "params must be [", sh.np, ", N] or [", sh.np, ", 1]");
  TORCH_CHECK(!sh.scalar_params || params.numel() == sh.np, "params must be [", sh.np, ", 1] (one value per layer)");
  TORCH_CHECK(!return_seq || sh.ns == 1, "return_seq: only for neurons with one state value");
  at::Tensor out = empty_big(x.sizes(), x.options());
  at::Tensor seq = return_seq ? empty_big(x.sizes(), x.options()) : at::Tensor();
  at::Tensor st_last = return_seq ? at::Tensor() : empty_big(stacked(sh.ns, x.sizes().slice(1)), x.options());
  at::Tensor saved = (save && sh.nsave > 0) ? empty_big(stacked(sh.nsave, x.sizes()), x.options()) : at::Tensor();
  Forward job{x, state0, params, out, st_last, saved, seq, steps, n, Options{hard, false, decay_input, 0, 1.0}};
  dispatch_dtype(id, dtype, job);
  return {out, return_seq ? seq : st_last, saved.defined() ? saved : at::empty({0}, x.options()), job.nonfinite};
}

// x [T, ...] or None (definitions with BWD_X = 0; saved, as the forward returned it, then gives
// the shape). Returns (grad_x [T, ...], grad_state0 [NS, ...] ([...] when NS == 1), grad_params
// float64: [NP, N], [NP, chunks] for one-per-layer parameters (sum over dim 1), or empty unless
// need_params).
std::vector<at::Tensor> neuron_backward(int64_t id, const c10::optional<at::Tensor>& x_opt, const at::Tensor& saved,
                                        const at::Tensor& params, const c10::optional<at::Tensor>& g_out_opt,
                                        const c10::optional<at::Tensor>& g_seq_opt,
                                        const c10::optional<at::Tensor>& g_last_opt, bool hard, bool detach,
                                        bool decay_input, int64_t sg, double sg_param, bool need_params) {
  const Shape sh = shape(id);
  const at::Tensor x = opt(x_opt), g_out = opt(g_out_opt), g_seq = opt(g_seq_opt), g_last = opt(g_last_opt);
  TORCH_CHECK(x.defined() || !sh.bwd_x, "x: this neuron's backward needs the input");
  TORCH_CHECK(x.defined() || sh.nsave > 0, "x or saved must give the shape");
  const at::Tensor& like = x.defined() ? x : saved;
  const auto dtype = like.scalar_type();
  const auto sizes = x.defined() ? x.sizes() : sh.nsave == 1 ? saved.sizes() : saved.sizes().slice(1);
  TORCH_CHECK(sizes.size() >= 2, "x must have shape [T, batch, ...]");
  const int64_t steps = sizes[0], n = c10::multiply_integers(sizes) / steps;
  if (x.defined()) check(x, "x", dtype);
  check(params, "params", compute_dtype(dtype));
  TORCH_CHECK(params.numel() == sh.np * n || params.numel() == sh.np, "params: bad shape");
  if (sh.nsave > 0) {
    check(saved, "saved", dtype);
    TORCH_CHECK(saved.numel() == sh.nsave * steps * n, "saved: the forward saved no state for backward");
  }
  if (g_out.defined()) { check(g_out, "grad_out", dtype); TORCH_CHECK(g_out.numel() == steps * n, "grad_out: bad shape"); }
  if (g_seq.defined()) { check(g_seq, "grad_seq", dtype); TORCH_CHECK(g_seq.numel() == steps * n, "grad_seq: bad shape"); }
  if (g_last.defined()) { check(g_last, "grad_state", dtype); TORCH_CHECK(g_last.numel() == sh.ns * n, "grad_state: bad shape"); }
  const auto st_sizes = stacked(sh.ns, sizes.slice(1));
  const auto opts = like.options();
  at::Tensor g_x = empty_big(sizes, opts);
  at::Tensor g_st0 = empty_big(st_sizes, opts);
  const int64_t g_cols = sh.scalar_params ? (n + sh.chunk - 1) / sh.chunk : n;
  at::Tensor g_prm = need_params ? at::empty({sh.np, g_cols}, opts.dtype(at::kDouble)) : at::Tensor();
  Backward job{x, saved, params, g_out, g_seq, g_last, g_x, g_st0, need_params ? g_prm.data_ptr<double>() : nullptr,
               steps, n, Options{hard, detach, decay_input, (int)sg, sg_param}};
  dispatch_dtype(id, dtype, job);
  return {g_x, g_st0, g_prm.defined() ? g_prm : at::empty({0}, opts.dtype(at::kDouble))};
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

c10::optional<at::Tensor> grad_or_none(const at::Tensor& g, at::ScalarType dtype) {
  if (!g.defined()) return c10::nullopt;
  return g.to(dtype).contiguous();
}

// The forward and backward above as one C++ autograd node: a call that records a gradient costs
// one node, with no Python on the way in or back (a Python autograd.Function costs more host time
// per call than a small layer's loops). Inputs x [T, ...], state0 and params as for neuron_forward;
// outputs (out, state_last) or, with return_seq, (out, state after every step). Gradients: the
// state's and parameters' are reduced back to their own shapes ([NS, 1] / [NP, 1]: summed over
// the neurons); x is kept for backward only when keep_x (definitions that read it, BWD_X = 1).
struct FusedNeuronFunction : public torch::autograd::Function<FusedNeuronFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& state0,
                               const at::Tensor& params, int64_t id, bool hard, bool decay_input, bool detach,
                               int64_t sg, double sg_param, bool return_seq, bool check_x, bool keep_x) {
    auto r = neuron_forward(id, x, state0, params, hard, decay_input, true, return_seq);
    if (check_x && std::get<3>(r)) throw pybind11::value_error("x contains NaN or inf");
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({keep_x ? x : at::Tensor(), std::get<2>(r), params});
    ctx->saved_data["id"] = id;
    ctx->saved_data["flags"] = std::vector<bool>{hard, detach, decay_input, return_seq};
    ctx->saved_data["sg"] = sg;
    ctx->saved_data["sg_param"] = sg_param;
    ctx->saved_data["state_sizes"] = state0.sizes().vec();
    return {std::get<0>(r), std::get<1>(r)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &kept = saved[1], &params = saved[2];
    const auto flags = ctx->saved_data["flags"].toBoolList();
    const bool hard = flags[0], detach = flags[1], decay_input = flags[2], return_seq = flags[3];
    const auto dtype = x.defined() ? x.scalar_type() : kept.scalar_type();
    const bool need_state = ctx->needs_input_grad(1), need_params = ctx->needs_input_grad(2);
    const auto g_out = grad_or_none(grads[0], dtype), g_state = grad_or_none(grads[1], dtype);
    auto g = neuron_backward(ctx->saved_data["id"].toInt(), x.defined() ? c10::optional<at::Tensor>(x) : c10::nullopt,
                             kept, params, g_out, return_seq ? g_state : c10::nullopt,
                             return_seq ? c10::nullopt : g_state, hard, detach, decay_input,
                             ctx->saved_data["sg"].toInt(), ctx->saved_data["sg_param"].toDouble(), need_params);
    at::Tensor g_state0, g_params;
    if (need_state) {
      const auto sizes = ctx->saved_data["state_sizes"].toIntVector();
      g_state0 = g[1].reshape({sizes[0], -1});
      if (g_state0.size(1) != c10::multiply_integers(sizes.begin() + 1, sizes.end()))
        g_state0 = g_state0.sum(1, true);  // one value per layer: summed over the neurons
      g_state0 = g_state0.view(sizes);
    }
    if (need_params) {
      g_params = params.numel() == params.size(0) ? g[2].sum(1, true) : g[2];  // [NP, 1]: one per layer
      g_params = g_params.to(params.scalar_type()).view(params.sizes());
    }
    variable_list out(12);
    out[0] = g[0];
    out[1] = g_state0;
    out[2] = g_params;
    return out;
  }
};

std::tuple<at::Tensor, at::Tensor> neuron_apply(int64_t id, const at::Tensor& x, const at::Tensor& state0,
                                                const at::Tensor& params, bool hard, bool decay_input, bool detach,
                                                int64_t sg, double sg_param, bool return_seq, bool check_x,
                                                bool keep_x) {
  auto r = FusedNeuronFunction::apply(x, state0, params, id, hard, decay_input, detach, sg, sg_param, return_seq,
                                      check_x, keep_x);
  return {r[0], r[1]};
}

}  // namespace

std::vector<int64_t> layout(int64_t id) {
  const Shape sh = shape(id);
  return {sh.ns, sh.np, sh.nsave};
}

std::vector<int64_t> traits(int64_t id) {
  const Shape sh = shape(id);
  return {sh.scalar_params, sh.storage16, sh.bwd_x, sh.grad_params};
}

int64_t cached_bytes() { return cpubuf::cached_bytes(); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Fused multi-step neurons on the CPU, instantiated from cuda/neuron_template.cuh";
  m.def("names", &names, "dynamics names in dispatch order");
  m.def("layout", &layout, "(states, parameters, saved values) of a dynamics id");
  m.def("traits", &traits,
        "(one value per layer for each parameter, fp16/bf16, backward reads x, bit mask of the parameters with "
        "gradients) of a dynamics id");
  m.def("forward", &neuron_forward, "fused neuron forward");
  m.def("backward", &neuron_backward, "fused neuron backward");
  m.def("apply", &neuron_apply, "fused neuron forward as a C++ autograd node (backward without Python)");
  m.def("empty_cache", &cpubuf::release_cache, "free the recycled output buffers; returns bytes freed");
  m.def("cached_bytes", &cached_bytes, "bytes held by the output-buffer cache");
}
