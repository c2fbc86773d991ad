// Oja-subspace iterations of several lateral banks as ONE dispatched op: spiking_oja::oja_iterations.
//
// Per bank (H_new [M, N] learning rows, m [M, N] momentum, X [B, N] inputs, X_res [B, N] = X − X̂_old,
// rate lr) and per iteration, in place:
//
//   (X_res absent: X_res = X − (X Pᵀ) P from the frozen basis P [n, N], or X − q(X Pᵀ) P when
//    quantised; X itself when there is no basis either: computed once, before the iterations)
//   Y = X H_newᵀ                       (q(Y) = round(clamp(Y, ±s) / s · Ts) / Ts · s  when quantised)
//   R = X_res − Y H_new
//   ΔH = clip(Yᵀ R / B, ±clip)
//   m ← momentum·m + (1 − momentum)·ΔH
//   H_new ← H_new + lr·m
//
// The arithmetic is the Python reference's (spiking/plasticity/hebbian.py, oja_iterations_reference):
// the same at:: ops in the same order, so the results are equal; only the host work differs (one
// op call per training step instead of ~90 Python dispatches). at:: calls run on whatever device
// the tensors live on, so this one kernel (registered for CompositeExplicitAutograd) serves the CPU
// and CUDA alike. The banks are independent: each runs its iterations in turn, its products
// written into three buffers allocated once per call.
#include <torch/extension.h>

#include <optional>
#include <vector>

namespace {

void check_bank(int64_t i, const at::Tensor& H, const at::Tensor& m, const at::Tensor& X, const at::Tensor& X_res,
                const std::optional<at::Tensor>& basis, const at::Tensor& first) {
  TORCH_CHECK_VALUE(H.dim() == 2, "oja_iterations: H_new[", i, "] must be [M, N], got shape ", H.sizes());
  TORCH_CHECK_VALUE(X.dim() == 2 && X.size(1) == H.size(1), "oja_iterations: X[", i, "] must be [B, ", H.size(1),
                    "] (the columns of H_new[", i, "]), got shape ", X.sizes());
  TORCH_CHECK_VALUE(X.size(0) > 0, "oja_iterations: X[", i, "] has no rows");
  TORCH_CHECK_VALUE(m.sizes() == H.sizes(), "oja_iterations: m_new[", i, "] must have the shape of H_new[", i, "] ",
                    H.sizes(), ", got ", m.sizes());
  TORCH_CHECK_VALUE(X_res.sizes() == X.sizes(), "oja_iterations: X_res[", i, "] must have the shape of X[", i, "] ",
                    X.sizes(), ", got ", X_res.sizes());
  if (basis.has_value())
    TORCH_CHECK_VALUE(basis->dim() == 2 && basis->size(1) == H.size(1), "oja_iterations: basis[", i, "] must be [n, ",
                      H.size(1), "] (the columns of H_new[", i, "]), got shape ", basis->sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(H.scalar_type()), "oja_iterations: H_new[", i,
                   "] must be floating point, got ", H.scalar_type());
  const at::Tensor& P = basis.has_value() ? *basis : H;
  for (const at::Tensor* t : {&m, &X, &X_res, &P}) {
    TORCH_CHECK_TYPE(t->scalar_type() == H.scalar_type(), "oja_iterations: bank ", i,
                     " mixes dtypes: H_new, m_new, X, X_res, basis are ", H.scalar_type(), ", ", m.scalar_type(), ", ",
                     X.scalar_type(), ", ", X_res.scalar_type(), ", ", P.scalar_type());
    TORCH_CHECK_VALUE(t->device() == first.device() && H.device() == first.device(), "oja_iterations: bank ", i,
                      " has tensors on ", H.device(), ", ", m.device(), ", ", X.device(), ", ", X_res.device(), ", ",
                      P.device(), "; every tensor must be on ", first.device());
  }
}

// Y ← q(Y) in place: round(clamp(Y, ±s) / s · Ts) / Ts · s (lateral spiking neurons).
void quantise_(at::Tensor& Y, double scale, double steps) {
  Y.clamp_(-scale, scale).div_(scale).mul_(steps).round_().div_(steps).mul_(scale);
}

// The frozen rows' residual of X: X_res when given, else X − q(X Pᵀ) P for the basis P, else X.
at::Tensor residual(const at::Tensor& X, const std::optional<at::Tensor>& X_res, const std::optional<at::Tensor>& basis,
                    bool quantised, double scale, double steps) {
  if (X_res.has_value()) return *X_res;
  if (!basis.has_value()) return X;
  at::Tensor Z = at::mm(X, basis->t());
  if (!quantised) return at::addmm(X, Z, *basis, 1.0, -1.0);  // Projector.input's factored form
  quantise_(Z, scale, steps);
  return X - at::mm(Z, *basis);  // LateralBank.residual's quantised form
}

void oja_iterations(at::TensorList H_new, at::TensorList m_new, at::TensorList X,
                    const c10::List<std::optional<at::Tensor>>& X_res, const c10::List<std::optional<at::Tensor>>& basis,
                    at::ArrayRef<double> lr, int64_t iters, double clip, double momentum,
                    std::optional<at::ArrayRef<double>> quantise) {
  const auto n = static_cast<int64_t>(H_new.size());
  TORCH_CHECK_VALUE(static_cast<int64_t>(m_new.size()) == n && static_cast<int64_t>(X.size()) == n &&
                        static_cast<int64_t>(X_res.size()) == n && static_cast<int64_t>(basis.size()) == n &&
                        static_cast<int64_t>(lr.size()) == n,
                    "oja_iterations: H_new, m_new, X, X_res, basis and lr must list one entry per bank, got ", n, ", ",
                    m_new.size(), ", ", X.size(), ", ", X_res.size(), ", ", basis.size(), " and ", lr.size());
  TORCH_CHECK_VALUE(iters >= 0, "oja_iterations: iters must be >= 0, got ", iters);
  TORCH_CHECK_VALUE(clip >= 0, "oja_iterations: clip must be >= 0, got ", clip);
  double scale = 0, steps = 0;
  if (quantise.has_value()) {
    TORCH_CHECK_VALUE(quantise->size() == 2, "oja_iterations: quantise must be (scale, timesteps), got ",
                      quantise->size(), " values");
    scale = (*quantise)[0];
    steps = (*quantise)[1];
    TORCH_CHECK_VALUE(scale > 0 && steps > 0, "oja_iterations: quantise scale and timesteps must be > 0, got (",
                      scale, ", ", steps, ")");
  }
  for (int64_t i = 0; i < n; ++i) {
    const std::optional<at::Tensor> res = X_res[i];
    check_bank(i, H_new[i], m_new[i], X[i], res.has_value() ? *res : X[i], basis[i], H_new[0]);
  }
  if (iters == 0) return;
  for (int64_t i = 0; i < n; ++i) {
    at::Tensor H = H_new[i], m = m_new[i];
    const at::Tensor& x = X[i];
    const at::Tensor x_res = residual(x, X_res[i], basis[i], quantise.has_value(), scale, steps);
    const at::Tensor Ht = H.t();
    at::Tensor Y = at::empty({x.size(0), H.size(0)}, H.options());
    at::Tensor R = at::empty_like(x, at::MemoryFormat::Contiguous);
    at::Tensor D = at::empty_like(H, at::MemoryFormat::Contiguous);
    const at::Tensor Yt = Y.t();
    const double inv_rows = 1.0 / static_cast<double>(x.size(0));
    for (int64_t it = 0; it < iters; ++it) {
      at::mm_out(Y, x, Ht);
      if (quantise.has_value()) quantise_(Y, scale, steps);
      at::addmm_out(R, x_res, Y, H, 1.0, -1.0);  // X − X̂_old − Y H_new
      at::addmm_out(D, D, Yt, R, 0.0, inv_rows);     // ΔH = Yᵀ R / B (β = 0: D's old values are ignored)
      D.clamp_min_(-clip).clamp_max_(clip);
      m.mul_(momentum).add_(D, 1.0 - momentum);
      H.add_(m, lr[i]);
    }
  }
}

}  // namespace

TORCH_LIBRARY(spiking_oja, m) {
  m.def("oja_iterations(Tensor(a!)[] H_new, Tensor(b!)[] m_new, Tensor[] X, Tensor?[] X_res, Tensor?[] basis, "
        "float[] lr, int iters, float clip, float momentum, float[]? quantise) -> ()");
}

TORCH_LIBRARY_IMPL(spiking_oja, CompositeExplicitAutograd, m) { m.impl("oja_iterations", &oja_iterations); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Registers torch.ops.spiking_oja.oja_iterations (the Oja-subspace iterations of several banks).";
}
