// OTTT's online LIF layer as two dispatched ops (spiking/kernels/online_lif.py):
//
//   spiking_online::forward(x, steps, v_th, tau, decay_input, trace_lambda, check_finite) -> (S, Z, A, R)
//     the soft-reset LIF of cuda/neurons/lif.cuh over x [steps·…] from rest (the same step code as the
//     fused CPU and CUDA kernels), in one pass per neuron chunk:
//       S_t = Θ(H_t − V_th),  V_t = H_t − V_th S_t
//       Z_t = V_t + V_th S_t − V_th          (H_t − V_th as the reference recovers it from V_t: equal values)
//     and, when trace_lambda ≥ 0, the presynaptic trace and the Hebbian rows (empty tensors otherwise):
//       A_t = λ A_{t−1} + S_t                (A_1 = S_1)
//       R = [S_1; A_1; S_2; A_2; …]          (rows (s_t, â_t) per step: R [2·steps·…])
//   spiking_online::backward(g, z, surrogate, param, tau, decay_input) -> gX = g σ'(Z) (/ τ with decay_input)
//     σ' from cuda/lif_step.cuh (the float exp of the fused kernels: within a few ulp of torch's sigmoid).
//
// Outputs are allocated inside the op; x, g, z may be any shape [steps·…] (the leading steps of x
// and z are split into the T time steps: [T, B, N] and rows [T·B, N] alike). CPU float32/float64.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>

#include "lif_step.cuh"
#include "neurons/lif.cuh"

namespace {

constexpr int64_t CHUNK = 512;

// The flags nrn::LIF::forward reads: soft reset, float32/float64 storage (no per-op rounding).
template <typename C> struct SoftReset {
  static C round(C c) { return c; }
  bool hard = false;
  bool decay_input = false;
};

void check_cpu_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), "online LIF: ", name, " must be a CPU tensor, got one on ", t.device());
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, "online LIF: ", name,
                   " must be float32 or float64, got ", t.scalar_type());
}

template <typename C, bool TRACE>
bool forward_loop(const C* x, C* s, C* z, C* a, C* r, int64_t steps, int64_t n, C vth, C tau, bool decay, C lam) {
  std::atomic<bool> nonfinite(false);
  const int64_t chunks = (n + CHUNK - 1) / CHUNK;
  at::parallel_for(0, chunks, std::max<int64_t>(1, (int64_t(1) << 20) / std::max<int64_t>(1, steps * CHUNK)),
                   [&](int64_t c0, int64_t c1) {
    SoftReset<C> f;
    f.decay_input = decay;
    const C p[3] = {vth, tau, (C)0};
    alignas(64) C v[CHUNK];
    alignas(64) C tr[CHUNK];
    for (int64_t ch = c0; ch < c1; ++ch) {
      const int64_t n0 = ch * CHUNK, len = std::min(CHUNK, n - n0);
      std::fill(v, v + len, (C)0);
      std::fill(tr, tr + len, (C)0);
      C bad = 0;
      for (int64_t t = 0; t < steps; ++t) {
        const int64_t off = t * n + n0;
        for (int64_t j = 0; j < len; ++j) {
          const C xj = x[off + j];
          bad += lif::finite_probe(xj);
          C st[1] = {v[j]}, h[1];
          const C o = nrn::LIF::forward(xj, st, p, f, h);
          v[j] = st[0];
          s[off + j] = o;
          z[off + j] = o != (C)0 ? (st[0] + vth) - vth : st[0] - vth;
          if (TRACE) {
            tr[j] = lam * tr[j] + o;
            a[off + j] = tr[j];
            r[(2 * t) * n + n0 + j] = o;
            r[(2 * t + 1) * n + n0 + j] = tr[j];
          }
        }
      }
      if (lif::probe_failed(bad)) nonfinite.store(true, std::memory_order_relaxed);
    }
  });
  return nonfinite.load();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward(const at::Tensor& x_in, int64_t steps,
                                                                   double v_threshold, double tau, bool decay_input,
                                                                   double trace_lambda, bool check_finite) {
  check_cpu_float(x_in, "x");
  TORCH_CHECK_VALUE(x_in.dim() >= 1 && steps >= 1 && x_in.size(0) % steps == 0 && x_in.numel() > 0,
                    "online LIF: x must be non-empty with a leading dimension divisible by steps = ", steps,
                    ", got shape ", x_in.sizes());
  TORCH_CHECK_VALUE(tau > 0, "online LIF: tau must be > 0, got ", tau);
  const at::Tensor x = x_in.contiguous();
  const int64_t n = x.numel() / steps;
  const bool trace = trace_lambda >= 0;
  at::Tensor s = at::empty_like(x), z = at::empty_like(x);
  at::Tensor a = trace ? at::empty_like(x) : at::empty({0}, x.options());
  std::vector<int64_t> rows_shape(x.sizes().begin(), x.sizes().end());
  rows_shape[0] *= 2;
  at::Tensor r = trace ? at::empty(rows_shape, x.options()) : at::empty({0}, x.options());
  bool bad = false;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "online_lif_forward", [&] {
    typedef scalar_t C;
    const C* px = x.data_ptr<C>();
    if (trace)
      bad = forward_loop<C, true>(px, s.data_ptr<C>(), z.data_ptr<C>(), a.data_ptr<C>(), r.data_ptr<C>(), steps, n,
                                  (C)v_threshold, (C)tau, decay_input, (C)trace_lambda);
    else
      bad = forward_loop<C, false>(px, s.data_ptr<C>(), z.data_ptr<C>(), nullptr, nullptr, steps, n,
                                   (C)v_threshold, (C)tau, decay_input, (C)0);
  });
  TORCH_CHECK_VALUE(!(check_finite && bad), "x contains NaN or inf");
  return {s, z, a, r};
}

template <int SG, typename C> void backward_loop(const C* g, const C* z, C* gx, int64_t n, double param, C tau,
                                                 bool decay) {
  const lif::Params<C> prm = lif::make_sg<C>(SG, param);
  at::parallel_for(0, n, int64_t(1) << 16, [&](int64_t i0, int64_t i1) {
    if (decay)
      for (int64_t i = i0; i < i1; ++i) gx[i] = (g[i] * lif::surrogate_grad<SG>(z[i], prm)) / tau;
    else
      for (int64_t i = i0; i < i1; ++i) gx[i] = g[i] * lif::surrogate_grad<SG>(z[i], prm);
  });
}

at::Tensor backward(const at::Tensor& g_in, const at::Tensor& z_in, int64_t surrogate, double param, double tau,
                    bool decay_input) {
  check_cpu_float(g_in, "g");
  check_cpu_float(z_in, "z");
  TORCH_CHECK_VALUE(g_in.sizes() == z_in.sizes() && g_in.scalar_type() == z_in.scalar_type(),
                    "online LIF: g and z must match, got ", g_in.sizes(), " ", g_in.scalar_type(), " and ",
                    z_in.sizes(), " ", z_in.scalar_type());
  TORCH_CHECK_VALUE(surrogate >= lif::SG_SIGMOID && surrogate <= lif::SG_TRIANGLE,
                    "online LIF: surrogate id must be 0..3, got ", surrogate);
  const at::Tensor g = g_in.contiguous(), z = z_in.contiguous();
  at::Tensor gx = at::empty_like(z);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "online_lif_backward", [&] {
    typedef scalar_t C;
    const C* pg = g.data_ptr<C>();
    const C* pz = z.data_ptr<C>();
    C* out = gx.data_ptr<C>();
    const int64_t n = z.numel();
    switch (surrogate) {
      case lif::SG_SIGMOID: backward_loop<lif::SG_SIGMOID>(pg, pz, out, n, param, (C)tau, decay_input); break;
      case lif::SG_ATAN: backward_loop<lif::SG_ATAN>(pg, pz, out, n, param, (C)tau, decay_input); break;
      case lif::SG_FAST_SIGMOID: backward_loop<lif::SG_FAST_SIGMOID>(pg, pz, out, n, param, (C)tau, decay_input); break;
      default: backward_loop<lif::SG_TRIANGLE>(pg, pz, out, n, param, (C)tau, decay_input); break;
    }
  });
  return gx;
}

}  // namespace

TORCH_LIBRARY(spiking_online, m) {
  m.def("forward(Tensor x, int steps, float v_threshold, float tau, bool decay_input, float trace_lambda, "
        "bool check_finite) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("backward(Tensor g, Tensor z, int surrogate, float param, float tau, bool decay_input) -> Tensor");
}

TORCH_LIBRARY_IMPL(spiking_online, CPU, m) {
  m.impl("forward", &forward);
  m.impl("backward", &backward);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Registers torch.ops.spiking_online.forward / backward (OTTT's online LIF layer on the CPU).";
}
