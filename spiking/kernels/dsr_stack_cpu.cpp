// A stack of DSR LIF layers on the CPU, nothing [T, B, N]-sized in memory.
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
// The layers run one after the other for a block of samples: the first from its constant drive,
// writing the lists of its active neurons for every step; every later one a panel of Wᵀ's columns
// at a time, so the panel stays in L2 while every sample and step of the block reads its active
// rows (a neuron's drive needs only its own column). What leaves the kernel is per layer the
// spike count Σ_t S_t [B, N_l] and, for l > 1, the weighted drive Σ_t ŵ_t X^l_t [B, N_l] (ŵ: the
// normalised DSR weights, summed in t order), which is all the DSR rate graph reads. Samples are
// split over threads; float32 only.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#ifdef __AVX2__
#include <immintrin.h>
#endif

namespace {

struct Layer {
  const float* wt = nullptr;  // Wᵀ [n_in, n] (rows: the weights leaving one input), layer > 1
  float scale = 0.f;
  int64_t n = 0;
  float* count = nullptr;     // [B, n]
  float* what = nullptr;      // [B, n], layer > 1 (none: not asked for)
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

#ifdef __AVX2__
// The 256 ways to left-pack 8 lanes: lanes[m] lists the set bits of m, lowest first.
struct PackTable {
  alignas(32) int32_t lanes[256][8];
  constexpr PackTable() : lanes{} {
    for (int m = 0; m < 256; ++m)
      for (int b = 0, k = 0; b < 8; ++b)
        if (m >> b & 1) lanes[m][k++] = b;
  }
};
constexpr PackTable PACK{};
#endif

// Appends base + j for the nonzeros j of s [n] (0.0f or 1.0f) to idx, in increasing order; returns
// how many. Eight at a time without branches (the bit mask of the nonzeros picks their packed lane
// numbers); idx needs room for 8 more entries than it receives.
inline int64_t active(const float* s, int64_t n, int32_t base, int32_t* idx) {
  int64_t m = 0, j = 0;
#ifdef __AVX2__
  for (; j + 8 <= n; j += 8) {
    const int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(s + j), _mm256_setzero_ps(), _CMP_NEQ_UQ));
    const __m256i lanes = _mm256_load_si256(reinterpret_cast<const __m256i*>(PACK.lanes[mask]));
    const __m256i at = _mm256_add_epi32(lanes, _mm256_set1_epi32(base + (int32_t)j));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx + m), at);
    m += __builtin_popcount((unsigned)mask);
  }
#endif
  for (; j < n; ++j) {
    idx[m] = base + (int32_t)j;
    m += s[j] != 0.0f;
  }
  return m;
}

constexpr int NV = 8;                        // vectors of 8 floats per register block (64 columns)
constexpr int64_t NB = NV * 8;
constexpr int64_t PANEL_BYTES = 512 * 1024;  // a panel of Wᵀ's columns, read from L2 for a whole sample block
constexpr int64_t LIST_BYTES = 8 << 20;      // the spike lists of a sample block (all steps), in and out
constexpr int64_t MAX_SB = 32;               // samples per block
typedef float V8 __attribute__((vector_size(32)));

inline V8 load8(const float* p) {
  V8 r;
  std::memcpy(&r, p, sizeof(r));
  return r;
}

// x[0..8·nv) = scale · Σ_j row_j[0..8·nv) + shift, row_j = base + idx[j]·n, summed in j order.
template <int nv>
inline void drive_block(const float* base, const int32_t* idx, int64_t fired, int64_t n, float scale, float shift,
                        float* x) {
  V8 acc[nv];
  for (int q = 0; q < nv; ++q) acc[q] = V8{};
  for (int64_t j = 0; j < fired; ++j) {
    const float* row = base + (int64_t)idx[j] * n;
    for (int q = 0; q < nv; ++q) acc[q] += load8(row + q * 8);
  }
  for (int q = 0; q < nv; ++q) {
    const V8 r = acc[q] * scale + shift;
    std::memcpy(x + q * 8, &r, sizeof(r));
  }
}

// x[0..len) = scale · Σ_j wt[idx[j], c0 + q] + shift for q < len, each element summed in j order
// (as spiking/kernels/spike_matmul_cpu.cpp); n: the row length of wt. Blocks of 64 columns, then
// one of the remaining whole vectors, then single columns.
void drive(const float* wt, const int32_t* idx, int64_t fired, int64_t n, int64_t c0, int64_t len, float scale,
           float shift, float* x) {
  int64_t b0 = 0;
  for (; b0 + NB <= len; b0 += NB) drive_block<NV>(wt + c0 + b0, idx, fired, n, scale, shift, x + b0);
  const float* base = wt + c0 + b0;
  switch ((len - b0) / 8) {
    case 1: drive_block<1>(base, idx, fired, n, scale, shift, x + b0); break;
    case 2: drive_block<2>(base, idx, fired, n, scale, shift, x + b0); break;
    case 3: drive_block<3>(base, idx, fired, n, scale, shift, x + b0); break;
    case 4: drive_block<4>(base, idx, fired, n, scale, shift, x + b0); break;
    case 5: drive_block<5>(base, idx, fired, n, scale, shift, x + b0); break;
    case 6: drive_block<6>(base, idx, fired, n, scale, shift, x + b0); break;
    case 7: drive_block<7>(base, idx, fired, n, scale, shift, x + b0); break;
    default: break;
  }
  b0 += (len - b0) / 8 * 8;
  for (; b0 < len; ++b0) {
    float acc = 0.0f;
    for (int64_t j = 0; j < fired; ++j) acc += wt[(int64_t)idx[j] * n + c0 + b0];
    x[b0] = acc * scale + shift;
  }
}

// The active inputs of one layer for a block of samples and all steps: list (t, k) holds
// fired[t·ns + k] indices from idx + (t·ns + k)·stride, increasing (stride = width + 8: room for
// active()'s packed stores).
struct Lists {
  std::vector<int32_t> idx;
  std::vector<int64_t> fired;
  int64_t stride = 0, ns = 0;
  int32_t* at(int64_t t, int64_t k) { return idx.data() + (t * ns + k) * stride; }
  int64_t& count(int64_t t, int64_t k) { return fired[t * ns + k]; }
};

// Samples [b0, b1) in blocks of sb. Layer by layer: the first from its constant drive, every later
// one panel of Wᵀ's columns at a time (the panel stays in L2 while all the block's samples and
// steps read it; the neurons of a panel do not depend on other columns), from the lists of the
// previous layer's spikes.
void rows(const float* x1, const std::vector<Layer>& layers, const float* wn, int64_t steps, float tau, float w0,
          float shift, int64_t b0, int64_t b1) {
  const int64_t L = (int64_t)layers.size();
  int64_t width = 0;
  for (const Layer& l : layers) width = std::max(width, l.n);
  const int64_t sb = std::max<int64_t>(1, std::min({MAX_SB, b1 - b0, LIST_BYTES / (2 * 4 * steps * width)}));
  std::vector<float> state(width), x(width), s(width);
  // the lists live on between calls (a training step's small batch would otherwise pay for
  // allocating and clearing them each time); only grown (to at most LIST_BYTES per thread), never
  // cleared: every count is set before the indices it covers are read
  static thread_local Lists in, out;
  for (Lists* li : {&in, &out}) {
    li->stride = width + 8;
    const size_t need = L > 1 ? (size_t)(steps * sb * li->stride) : 0;
    if (li->idx.size() < need) li->idx.resize(need);
    if (li->fired.size() < (size_t)(steps * sb)) li->fired.resize(steps * sb);
  }
  for (int64_t g0 = b0; g0 < b1; g0 += sb) {
    const int64_t ns = std::min(sb, b1 - g0);
    in.ns = out.ns = ns;
    const Layer& first = layers[0];
    std::fill(first.count + g0 * first.n, first.count + (g0 + ns) * first.n, 0.0f);
    for (int64_t k = 0; k < ns; ++k) {
      std::fill(state.begin(), state.begin() + first.n, w0);
      for (int64_t t = 0; t < steps; ++t) {
        lif_step(state.data(), x1 + (g0 + k) * first.n, first.n, tau, s.data(), first.count + (g0 + k) * first.n);
        if (L > 1) out.count(t, k) = active(s.data(), first.n, 0, out.at(t, k));
      }
    }
    for (int64_t l = 1; l < L; ++l) {
      const Layer& ly = layers[l];
      const int64_t n_in = layers[l - 1].n, n = ly.n;
      const bool listed = l + 1 < L;
      std::swap(in, out);
      if (listed) std::fill(out.fired.begin(), out.fired.end(), 0);
      std::fill(ly.count + g0 * n, ly.count + (g0 + ns) * n, 0.0f);
      if (ly.what) std::fill(ly.what + g0 * n, ly.what + (g0 + ns) * n, 0.0f);
      const int64_t panel = std::max<int64_t>(NB, PANEL_BYTES / (4 * n_in) / NB * NB);
      for (int64_t c0 = 0; c0 < n; c0 += panel) {
        const int64_t len = std::min(panel, n - c0);
        for (int64_t k = 0; k < ns; ++k) {
          const int64_t b = g0 + k;
          float* wh = ly.what ? ly.what + b * n + c0 : nullptr;
          std::fill(state.begin(), state.begin() + len, w0);
          for (int64_t t = 0; t < steps; ++t) {
            drive(ly.wt, in.at(t, k), in.count(t, k), n, c0, len, ly.scale, shift, x.data());
            if (wh)
              for (int64_t q = 0; q < len; ++q) wh[q] += wn[t] * x[q];
            lif_step(state.data(), x.data(), len, tau, s.data(), ly.count + b * n + c0);
            if (listed) out.count(t, k) += active(s.data(), len, (int32_t)c0, out.at(t, k) + out.count(t, k));
          }
        }
      }
    }
  }
}

// counts[l] [B, n_l] = Σ_t S^l_t; whats[l - 1] [B, n_l] = Σ_t ŵ_t X^l_t (l > 1), only if weighted.
std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>> dsr_stack(
    const at::Tensor& x1, const std::vector<at::Tensor>& wts, const at::Tensor& scales, const at::Tensor& wn,
    double tau, double w0, double shift, bool weighted) {
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
    if (l > 0 && weighted) {
      whats.push_back(at::empty({B, layers[l].n}, x1.options()));
      layers[l].what = whats.back().data_ptr<float>();
    }
  }
  const float* xp = x1.data_ptr<float>();
  const float* wp = wn.data_ptr<float>();
  at::parallel_for(0, B, 8, [&](int64_t b0, int64_t b1) {
    rows(xp, layers, wp, steps, (float)tau, (float)w0, (float)shift, b0, b1);
  });
  return {counts, whats};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "A stack of DSR LIF layers in one native pass (spike counts and weighted drives out)";
  m.def("dsr_stack", &dsr_stack, "(counts per layer, weighted drives of layers 2..L)");
}
