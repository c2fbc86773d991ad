// The fused CUDA neurons' call as a C++ autograd node: nrn_forward / nrn_backward of cuda/neurons.cu
// (compiled by CuPy's NVRTC; their CUfunction handles come from Python) launched with the CUDA
// driver's cuLaunchKernel on torch's current stream, with the outputs allocated, the NaN/inf flag
// read and the gradients reduced here. A recorded call costs one C++ node and two launches, with no
// Python in the forward or the backward (a Python autograd.Function plus CuPy's launcher cost several
// times the host time of a small layer's kernels).
//
// Built like the CPU extensions (no CUDA headers: the driver functions are passed in as addresses,
// the stream comes from c10's device-guard interface), so it builds wherever torch does.
// Kernel parameters (cuda/neurons.cu):
//   nrn_forward(x, state0, params, out, state_last, saved, seq, nonfinite, long long n, s_n, p_n,
//               int steps, hard, decay_input)
//   nrn_backward(x, saved, params, g_out, g_seq, g_last, g_x, g_state0, double* g_params,
//                long long n, p_n, int steps, hard, detach, decay_input, double sg_param)
// Layout: x, out, seq [T, N]; state0 [NS, S] (S = N or 1); params [NP, P] (P = N or 1);
// state_last [NS, N]; saved [NSAVE, T, N]; g_params [NP, N] (double).
#include <torch/extension.h>

#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <map>
#include <mutex>
#include <utility>
#include <vector>

namespace {

// CUresult cuLaunchKernel(CUfunction, grid xyz, block xyz, shared bytes, CUstream, void** params, void** extra)
typedef int (*LaunchFn)(void*, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void*, void**,
                        void**);
// CUresult cuStreamIsCapturing(CUstream, CUstreamCaptureStatus*)
typedef int (*CapturingFn)(void*, int*);
constexpr unsigned BLOCK = 256;

// The driver functions a call uses (addresses from libcuda, or the test emulation's stand-ins, which
// also take CPU tensors); no global state, so a test's driver never outlives it.
struct Driver {
  int64_t launch, capturing;
  bool cpu_tensors;
  Driver(int64_t l, int64_t c, bool cpu) : launch(l), capturing(c), cpu_tensors(cpu) {}
};

void* current_stream(const Driver& d, const at::Tensor& like) {
  if (!like.is_cuda()) {
    TORCH_CHECK(d.cpu_tensors, "the CUDA neuron node needs CUDA tensors, got one on ", like.device());
    return nullptr;
  }
  const auto* impl = c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA);
  return impl->getStreamNativeHandle(impl->getStream(like.device()));
}

void launch(const Driver& d, int64_t function, void* stream, int64_t n, void** args) {
  TORCH_CHECK(d.launch != 0, "the CUDA neuron node has no cuLaunchKernel");
  const unsigned grid = static_cast<unsigned>(std::max<int64_t>(1, (n + BLOCK - 1) / BLOCK));
  const int rc = reinterpret_cast<LaunchFn>(d.launch)(reinterpret_cast<void*>(function), grid, 1, 1, BLOCK, 1, 1, 0,
                                                      stream, args, nullptr);
  TORCH_CHECK(rc == 0, "cuLaunchKernel failed with CUresult ", rc,
              " (set SPIKING_CUDA_LAUNCH=cupy to launch through CuPy instead)");
}

// The int32 flag the forward kernel sets on NaN/inf x, one per device and stream, kept at 0; none
// (no check) while the stream is being captured into a CUDA graph, whose replays cannot read it.
at::Tensor nonfinite_flag(const Driver& d, const at::Tensor& x, void* stream) {
  if (d.capturing != 0) {
    int status = 0;
    if (reinterpret_cast<CapturingFn>(d.capturing)(stream, &status) != 0 || status != 0) return at::Tensor();
  }
  static std::mutex lock;
  // never destroyed: freeing device memory from a static destructor at exit may outlive the allocator
  static auto* flags = new std::map<std::pair<int64_t, void*>, at::Tensor>();
  std::lock_guard<std::mutex> guard(lock);
  auto& flag = (*flags)[{x.device().index(), stream}];
  if (!flag.defined()) {
    c10::InferenceMode normal(false);  // zeroed in place later, also outside inference mode
    flag = at::zeros({}, x.options().dtype(at::kInt));
  }
  return flag;
}

void* ptr(const at::Tensor& t) { return t.defined() && t.numel() > 0 ? t.data_ptr() : nullptr; }

std::vector<int64_t> stacked(int64_t k, at::IntArrayRef sizes) {
  std::vector<int64_t> r;
  if (k != 1) r.push_back(k);
  for (auto d : sizes) r.push_back(d);
  return r;
}

void check(const at::Tensor& t, const char* name, const at::Tensor& x) {
  TORCH_CHECK(t.device() == x.device(), name, " must be on ", x.device(), ", got ", t.device());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

struct Forward {
  at::Tensor out, state, saved;
};

// out [T, ...]; state: state_last [NS, ...] (no leading dim when NS == 1) or, with return_seq, the
// state after every step [T, ...]; saved [NSAVE, T, ...] when save (else undefined).
Forward launch_forward(const Driver& d, int64_t function, const at::Tensor& x, const at::Tensor& state0, const at::Tensor& params, int64_t ns,
                int64_t nsave, bool hard, bool decay_input, bool save, bool return_seq, bool check_x) {
  TORCH_CHECK(x.dim() >= 2 && x.numel() > 0, "x must be a non-empty [T, batch, ...] tensor");
  check(x, "x", x); check(state0, "state0", x); check(params, "params", x);
  TORCH_CHECK(state0.scalar_type() == x.scalar_type(), "state0 must have the dtype of x");
  TORCH_CHECK(params.scalar_type() == (x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat),
              "params must be float64 for float64 x, else float32");
  const int64_t steps = x.size(0), n = x.numel() / steps;
  TORCH_CHECK(state0.numel() == ns * n || state0.numel() == ns, "state0 must be [", ns, ", N] or [", ns, ", 1]");
  TORCH_CHECK(params.dim() == 2 && (params.size(1) == n || params.size(1) == 1), "params must be [NP, N] or [NP, 1]");
  c10::OptionalDeviceGuard device(x.device());
  Forward r;
  r.out = at::empty_like(x);
  at::Tensor last = at::empty(stacked(ns, x.sizes().slice(1)), x.options());
  at::Tensor seq = return_seq ? at::empty_like(x) : at::Tensor();
  if (save && nsave > 0) r.saved = at::empty(stacked(nsave, x.sizes()), x.options());
  void* stream = current_stream(d, x);
  at::Tensor flag = check_x ? nonfinite_flag(d, x, stream) : at::Tensor();
  void *px = ptr(x), *ps = ptr(state0), *pp = ptr(params), *po = ptr(r.out), *pl = ptr(last), *pv = ptr(r.saved),
       *pq = ptr(seq), *pf = ptr(flag);
  long long n_ = n, s_n = state0.numel() / ns, p_n = params.size(1);
  int steps_ = static_cast<int>(steps), hard_ = hard, decay_ = decay_input;
  void* args[] = {&px, &ps, &pp, &po, &pl, &pv, &pq, &pf, &n_, &s_n, &p_n, &steps_, &hard_, &decay_};
  launch(d, function, stream, n, args);
  if (flag.defined() && flag.item<int>() != 0) {  // the one host sync of the check
    flag.zero_();
    throw pybind11::value_error("x contains NaN or inf");
  }
  r.state = return_seq ? seq : last;
  return r;
}

std::tuple<at::Tensor, at::Tensor> forward_only(const Driver& d, int64_t function, const at::Tensor& x,
                                                const at::Tensor& state0, const at::Tensor& params, int64_t ns,
                                                bool hard, bool decay_input, bool return_seq, bool check_x) {
  auto r = launch_forward(d, function, x, state0, params, ns, 0, hard, decay_input, false, return_seq, check_x);
  return {r.out, r.state};
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor grad_in(const at::Tensor& g, const at::Tensor& like) {
  return g.defined() ? g.to(like.scalar_type()).contiguous() : at::Tensor();
}

// Forward saving what nrn_backward reads (saved values; x where keep_x), backward launching it.
// Gradients of state0 and params come back in their own shapes: [NS, 1] / [NP, 1] are summed over
// the neurons (one value per layer), the parameters' from the kernel's float64 per-neuron sums.
struct CudaNeuronNode : public torch::autograd::Function<CudaNeuronNode> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& state0,
                               const at::Tensor& params, const Driver& d, int64_t fwd, int64_t bwd, int64_t ns,
                               int64_t nsave, bool hard, bool decay_input, bool detach, double sg_param,
                               bool return_seq, bool check_x, bool keep_x) {
    auto r = launch_forward(d, fwd, x, state0, params, ns, nsave, hard, decay_input, true, return_seq, check_x);
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({keep_x ? x : at::Tensor(), r.saved, params});
    ctx->saved_data["bwd"] = bwd;
    ctx->saved_data["driver"] = std::vector<int64_t>{d.launch, d.capturing, d.cpu_tensors};
    ctx->saved_data["flags"] = std::vector<bool>{hard, detach, decay_input, return_seq};
    ctx->saved_data["sg_param"] = sg_param;
    ctx->saved_data["x_sizes"] = x.sizes().vec();
    ctx->saved_data["state_sizes"] = state0.sizes().vec();
    ctx->saved_data["ns"] = ns;
    return {r.out, r.state};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &kept = saved[1], &params = saved[2];
    const at::Tensor& like = x.defined() ? x : kept;
    TORCH_CHECK(like.defined(), "the CUDA neuron node kept neither x nor saved values for backward");
    const auto flags = ctx->saved_data["flags"].toBoolList();
    const bool hard = flags[0], detach = flags[1], decay_input = flags[2], return_seq = flags[3];
    const auto x_sizes = ctx->saved_data["x_sizes"].toIntVector();
    const int64_t ns = ctx->saved_data["ns"].toInt(), steps = x_sizes[0];
    const int64_t n = c10::multiply_integers(x_sizes) / steps;
    const bool need_state = ctx->needs_input_grad(1), need_params = ctx->needs_input_grad(2);
    const at::Tensor g_out = grad_in(grads[0], like), g_state = grad_in(grads[1], like);
    const at::Tensor g_seq = return_seq ? g_state : at::Tensor(), g_last = return_seq ? at::Tensor() : g_state;
    c10::OptionalDeviceGuard device(like.device());
    const auto opts = like.options();
    at::Tensor g_x = at::empty(x_sizes, opts);
    at::Tensor g_st0 = at::empty(stacked(ns, at::IntArrayRef(x_sizes).slice(1)), opts);
    at::Tensor g_prm = need_params ? at::empty({params.size(0), n}, opts.dtype(at::kDouble)) : at::Tensor();
    void *px = ptr(x), *pv = ptr(kept), *pp = ptr(params), *po = ptr(g_out), *pq = ptr(g_seq), *pl = ptr(g_last),
         *pgx = ptr(g_x), *pgs = ptr(g_st0), *pgp = ptr(g_prm);
    long long n_ = n, p_n = params.size(1);
    int steps_ = static_cast<int>(steps), hard_ = hard, detach_ = detach, decay_ = decay_input;
    double sg = ctx->saved_data["sg_param"].toDouble();
    void* args[] = {&px, &pv, &pp, &po, &pq, &pl, &pgx, &pgs, &pgp, &n_, &p_n, &steps_, &hard_, &detach_, &decay_, &sg};
    const auto dv = ctx->saved_data["driver"].toIntVector();
    const Driver d(dv[0], dv[1], dv[2] != 0);
    launch(d, ctx->saved_data["bwd"].toInt(), current_stream(d, like), n, args);
    at::Tensor g_state0, g_params;
    if (need_state) {
      const auto sizes = ctx->saved_data["state_sizes"].toIntVector();
      g_state0 = g_st0.reshape({ns, -1});
      if (g_state0.size(1) * ns != c10::multiply_integers(sizes)) g_state0 = g_state0.sum(1, true);
      g_state0 = g_state0.view(sizes);
    }
    if (need_params) {
      g_params = params.size(1) == 1 ? g_prm.sum(1, true) : g_prm;
      g_params = g_params.to(params.scalar_type()).view(params.sizes());
    }
    variable_list out(16);
    out[0] = g_x;
    out[1] = g_state0;
    out[2] = g_params;
    return out;
  }
};

std::tuple<at::Tensor, at::Tensor> apply(const Driver& d, int64_t fwd, int64_t bwd, const at::Tensor& x,
                                         const at::Tensor& state0, const at::Tensor& params, int64_t ns, int64_t nsave,
                                         bool hard, bool decay_input, bool detach, double sg_param, bool return_seq,
                                         bool check_x, bool keep_x) {
  auto r = CudaNeuronNode::apply(x, state0, params, d, fwd, bwd, ns, nsave, hard, decay_input, detach, sg_param,
                                 return_seq, check_x, keep_x);
  return {r[0], r[1]};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "The fused CUDA neurons (cuda/neurons.cu) launched from a C++ autograd node";
  pybind11::class_<Driver>(m, "Driver", "addresses of cuLaunchKernel and cuStreamIsCapturing (0: none), and "
                                         "whether CPU tensors are accepted (the test emulation only)")
      .def(pybind11::init<int64_t, int64_t, bool>());
  m.def("forward", &forward_only, "nrn_forward alone (no graph, nothing saved): (out, state)");
  m.def("apply", &apply, "nrn_forward as a C++ autograd node whose backward launches nrn_backward: (out, state)");
}
