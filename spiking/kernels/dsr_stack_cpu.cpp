// A stack of DSR LIF layers on the CPU in one pass per sample, nothing [T, B, N]-sized in memory.
//
// Layer 1 receives the constant drive X¹ (= k₁ I¹ + c, formed by the caller); layer l > 1 the
// drive of the previous layer's spikes, formed event-driven like spiking/kernels/spike_matmul:
//
//   X^l_t = scale_l · Σ_{k : S^{l-1}_t[k] = 1} Wᵀ_l[k, :] + c        (k increasing)
//
// Every layer is the fused LIF the unfused path runs (decay_input = False, soft reset, threshold
// 1, 1/τ' = 1 − β, w₀ = 1 − α; see spiking/neuron/dsr.py):
//
//   H = (w − w/τ') + X;   S = Θ(H − 1);   w ← H − S
//
// with the same float operations in the same order, so the spikes are those of the unfused path.
// Per time step the layers run in order for a block of samples in lockstep (their state stays in
// cache; the event-driven sums walk Wᵀ in column blocks shared by the block's samples);
// what leaves the kernel is per layer the spike count Σ_t S_t [B, N_l] and, for l > 1, the
// weighted drive Σ_t ŵ_t X^l_t [B, N_l] (ŵ: the normalised DSR weights, summed in t order), which
// is all the DSR rate graph reads. Samples are split over threads; float32 only.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

struct Layer {
  const float* wt = nullptr;  // Wᵀ [n_in, n] (rows: the weights leaving one input), layer > 1
  float scale = 0.f;
  int64_t n = 0;
  float* count = nullptr;     // [B, n]
  float* what = nullptr;      // [B, n], layer > 1
};

// One LIF step of the n neurons of w with drive x: s[j] = S (0 or 1), counted (vectorised).
inline void lif_step(float* w, const float* x, int64_t n, float tau, float* s, float* count) {
  for (int64_t j = 0; j < n; ++j) {
    const float v = w[j];
    const float c = v / tau;
    const float d = v - c;
    const float h = d + x[j];
    const float f = (h - 1.0f) >= 0.0f ? 1.0f : 0.0f;
    w[j] = f != 0.0f ? h - 1.0f : h;
    s[j] = f;
    count[j] += f;
  }
}

// The indices of the nonzeros of s [n] (0.0f or 1.0f) in increasing order; groups of 8 whose bits
// are all zero are skipped at once.
inline int64_t active(const float* s, int64_t n, int32_t* idx) {
  int64_t m = 0, j = 0;
  for (; j + 8 <= n; j += 8) {
    uint64_t w[4];
    std::memcpy(w, s + j, sizeof(w));
    if ((w[0] | w[1] | w[2] | w[3]) == 0) continue;
    for (int q = 0; q < 8; ++q) {
      idx[m] = (int32_t)(j + q);
      m += s[j + q] != 0.0f;
    }
  }
  for (; j < n; ++j) {
    idx[m] = (int32_t)j;
    m += s[j] != 0.0f;
  }
  return m;
}

constexpr int64_t SB = 8;  // samples run in lockstep: each column block of Wᵀ is read once for all of them
constexpr int NV = 8;       // vectors of 8 floats per column block (64 columns: the sums stay in registers)
constexpr int64_t PREFETCH = 4;  // active rows fetched ahead
typedef float V8 __attribute__((vector_size(32)));

inline V8 load8(const float* p) {
  V8 r;
  std::memcpy(&r, p, sizeof(r));
  return r;
}

// For the ns samples of a block: x_s[0..n) = scale · Σ_j wt[idx_s[j], :] + shift, each element
// summed in j order (as spiking/kernels/spike_matmul_cpu.cpp). Column block outer, so the block
// of Wᵀ (K · 64 floats) is reused from cache by every sample.
void drive(const float* wt, const int32_t* idx, const int64_t* fired, int64_t ns, int64_t n, int64_t width,
           float scale, float shift, float* x) {
  constexpr int64_t NB = NV * 8;
  for (int64_t c0 = 0; c0 < n; c0 += NB) {
    const int64_t len = std::min(NB, n - c0);
    for (int64_t s = 0; s < ns; ++s) {
      const int32_t* ix = idx + s * width;
      float* xs = x + s * width + c0;
      if (len == NB) {
        V8 acc[NV];
        for (int q = 0; q < NV; ++q) acc[q] = V8{};
        for (int64_t j = 0; j < fired[s]; ++j) {
          if (j + PREFETCH < fired[s]) {  // the rows come from cache levels far away: ask early
            const char* next = reinterpret_cast<const char*>(wt + (int64_t)ix[j + PREFETCH] * n + c0);
            for (int line = 0; line < NV * 32; line += 64) __builtin_prefetch(next + line);
          }
          const float* row = wt + (int64_t)ix[j] * n + c0;
          for (int q = 0; q < NV; ++q) acc[q] += load8(row + q * 8);
        }
        for (int q = 0; q < NV; ++q) {
          const V8 r = acc[q] * scale + shift;
          std::memcpy(xs + q * 8, &r, sizeof(r));
        }
      } else {
        float acc[NB] = {};
        for (int64_t j = 0; j < fired[s]; ++j) {
          const float* row = wt + (int64_t)ix[j] * n + c0;
          for (int64_t q = 0; q < len; ++q) acc[q] += row[q];
        }
        for (int64_t q = 0; q < len; ++q) xs[q] = acc[q] * scale + shift;
      }
    }
  }
}

// Samples [b0, b1), in blocks of SB run step by step in lockstep.
void rows(const float* x1, const std::vector<Layer>& layers, const float* wn, int64_t steps, float tau, float w0,
          float shift, int64_t b0, int64_t b1) {
  const int64_t L = (int64_t)layers.size();
  int64_t width = 0;
  for (const Layer& l : layers) width = std::max(width, l.n);
  std::vector<float> state(SB * L * width), x(SB * width), s(width);
  std::vector<int32_t> idx(SB * width);
  int64_t fired[SB];  // active inputs per sample of the layer being driven (the previous layer's spikes)
  for (int64_t g0 = b0; g0 < b1; g0 += SB) {
    const int64_t ns = std::min(SB, b1 - g0);
    for (int64_t l = 0; l < L; ++l) {
      const Layer& ly = layers[l];
      for (int64_t k = 0; k < ns; ++k)
        std::fill(state.begin() + (k * L + l) * width, state.begin() + (k * L + l) * width + ly.n, w0);
      std::fill(ly.count + g0 * ly.n, ly.count + (g0 + ns) * ly.n, 0.0f);
      if (l > 0) std::fill(ly.what + g0 * ly.n, ly.what + (g0 + ns) * ly.n, 0.0f);
    }
    for (int64_t t = 0; t < steps; ++t) {
      for (int64_t l = 0; l < L; ++l) {
        const Layer& ly = layers[l];
        if (l > 0) drive(ly.wt, idx.data(), fired, ns, ly.n, width, ly.scale, shift, x.data());
        for (int64_t k = 0; k < ns; ++k) {
          const int64_t b = g0 + k;
          const float* in = x1 + b * ly.n;
          if (l > 0) {
            in = x.data() + k * width;
            float* wh = ly.what + b * ly.n;
            for (int64_t q = 0; q < ly.n; ++q) wh[q] += wn[t] * in[q];
          }
          lif_step(state.data() + (k * L + l) * width, in, ly.n, tau, s.data(), ly.count + b * ly.n);
          if (l + 1 < L) fired[k] = active(s.data(), ly.n, idx.data() + k * width);
        }
      }
    }
  }
}

// counts[l] [B, n_l] = Σ_t S^l_t; whats[l - 1] [B, n_l] = Σ_t ŵ_t X^l_t (l > 1).
std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>> dsr_stack(
    const at::Tensor& x1, const std::vector<at::Tensor>& wts, const at::Tensor& scales, const at::Tensor& wn,
    double tau, double w0, double shift) {
  RECORD_FUNCTION("spiking::dsr_stack", std::vector<c10::IValue>({x1}));
  TORCH_CHECK(x1.dim() == 2 && x1.scalar_type() == at::kFloat && x1.is_contiguous() && x1.device().is_cpu(),
              "dsr_stack: x1 must be a contiguous float32 CPU tensor [B, N1], got ", x1.sizes(), " ", x1.scalar_type());
  TORCH_CHECK(scales.dim() == 1 && scales.size(0) == (int64_t)wts.size() && scales.scalar_type() == at::kFloat &&
              scales.is_contiguous() && scales.device().is_cpu(), "dsr_stack: one float32 CPU scale per weight");
  TORCH_CHECK(wn.dim() == 1 && wn.size(0) >= 1 && wn.scalar_type() == at::kFloat && wn.is_contiguous() && wn.device().is_cpu(),
              "dsr_stack: wn must be the float32 CPU weights [T]");
  const int64_t B = x1.size(0), steps = wn.size(0);
  const float* x1p = x1.data_ptr<float>();
  bool finite = true;  // a NaN/inf drive would silently never fire: refused (a pass over [B, N1] only)
  for (int64_t i = 0; i < x1.numel(); ++i) finite &= std::isfinite(x1p[i]);
  TORCH_CHECK_VALUE(finite, "dsr_stack: x1 contains NaN or inf");
  std::vector<Layer> layers(wts.size() + 1);
  std::vector<at::Tensor> counts, whats;
  layers[0].n = x1.size(1);
  for (size_t l = 0; l < wts.size(); ++l) {
    const at::Tensor& w = wts[l];
    TORCH_CHECK(w.dim() == 2 && w.size(0) == layers[l].n && w.scalar_type() == at::kFloat && w.is_contiguous() &&
                w.device().is_cpu(), "dsr_stack: weight ", l, " must be a contiguous float32 CPU [", layers[l].n,
                ", n], got ", w.sizes());
    TORCH_CHECK(layers[l].n < (int64_t(1) << 31), "dsr_stack: too many neurons");
    layers[l + 1].wt = w.data_ptr<float>();
    layers[l + 1].n = w.size(1);
    layers[l + 1].scale = scales.data_ptr<float>()[l];
  }
  for (size_t l = 0; l < layers.size(); ++l) {
    counts.push_back(at::empty({B, layers[l].n}, x1.options()));
    layers[l].count = counts.back().data_ptr<float>();
    if (l > 0) {
      whats.push_back(at::empty({B, layers[l].n}, x1.options()));
      layers[l].what = whats.back().data_ptr<float>();
    }
  }
  const float* xp = x1.data_ptr<float>();
  const float* wp = wn.data_ptr<float>();
  at::parallel_for(0, B, SB, [&](int64_t b0, int64_t b1) {
    rows(xp, layers, wp, steps, (float)tau, (float)w0, (float)shift, b0, b1);
  });
  return {counts, whats};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "A stack of DSR LIF layers in one pass per sample (spike counts and weighted drives out)";
  m.def("dsr_stack", &dsr_stack, "(counts per layer, weighted drives of layers 2..L)");
}
