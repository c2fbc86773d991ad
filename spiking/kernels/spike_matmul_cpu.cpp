// Event-driven synaptic input on the CPU: out = scale · (s @ w) + shift for a mostly-zero s.
//
//   out[m, :] = scale · Σ_{k : s[m,k] ≠ 0} s[m,k] · w[k, :] + shift    s [M, K], w [K, N] (row-major)
//
// A spike row activates only the weight rows of the inputs that fired, so the work is
// nnz(s)·N instead of M·K·N. Per group of RG rows: one pass collects each row's active inputs
// (branch-free), then for each block of NB output columns every row of the group sums its active
// weight rows in registers (GCC vector extensions: 8 float / 4 double lanes per 32-byte vector,
// lowered to AVX2, SSE or scalar code as the target allows). Within the group the same column
// block of w is reused from cache. A group whose nonzeros are all 1 (binary spikes) skips the
// multiply (x·1 is exact, so both forms give the same result). Each output element is a plain
// left-to-right sum over k in increasing order, independent of the thread count (deterministic).
// Above a density limit the dense product is faster, and at::mm is used instead.
//
// transpose(w) gives the rows such a product reads from a weight stored [out, in] (nn.Linear's
// layout): Wᵀ contiguous, in 8 × 8 blocks transposed in registers (AVX2; one element at a time
// at the edges and elsewhere), 32 × 32 tiles at a time so reads and writes stay in cache.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cstring>
#include <vector>

#ifdef __AVX2__
#include <immintrin.h>
#endif

namespace {

constexpr int64_t RG = 32;      // rows sharing one column block of w
constexpr int64_t VBYTES = 32;  // bytes per vector
constexpr int NV = 8;           // vectors per column block (NB = NV · lanes columns)

template <typename C> struct Vec { typedef C type __attribute__((vector_size(VBYTES))); };

template <typename C> inline typename Vec<C>::type load(const C* p) {
  typename Vec<C>::type r;
  std::memcpy(&r, p, VBYTES);
  return r;
}

// Accumulate rows [g0, g1) of the output from the active inputs collected in idx/val/nnz.
template <typename C, bool BINARY>
void accumulate(const int32_t* idx, const C* val, const int64_t* nnz, const C* w, C* out, int64_t g0, int64_t g1,
                int64_t K, int64_t N, C scale, C shift) {
  using V = typename Vec<C>::type;
  constexpr int64_t LANES = VBYTES / sizeof(C), NB = NV * LANES;
  for (int64_t c0 = 0; c0 < N; c0 += NB) {
    const int64_t len = std::min(NB, N - c0);
    for (int64_t m = g0; m < g1; ++m) {
      const int32_t* ix = idx + (m - g0) * K;
      const C* vx = val + (m - g0) * K;
      const int64_t n = nnz[m - g0];
      C* o = out + m * N + c0;
      if (len == NB) {  // a full block: the sums live in NV vector registers
        V acc[NV];
        for (int q = 0; q < NV; ++q) acc[q] = V{};
        for (int64_t j = 0; j < n; ++j) {
          const C* wr = w + (int64_t)ix[j] * N + c0;
          if (BINARY) {
            for (int q = 0; q < NV; ++q) acc[q] += load(wr + q * LANES);
          } else {
            const C v = vx[j];
            for (int q = 0; q < NV; ++q) acc[q] += v * load(wr + q * LANES);
          }
        }
        for (int q = 0; q < NV; ++q) {
          const V r = acc[q] * scale + shift;
          std::memcpy(o + q * LANES, &r, VBYTES);
        }
      } else {  // the last, partial block
        C acc[NB] = {};
        for (int64_t j = 0; j < n; ++j) {
          const C* wr = w + (int64_t)ix[j] * N + c0;
          for (int64_t q = 0; q < len; ++q) acc[q] += BINARY ? wr[q] : vx[j] * wr[q];
        }
        for (int64_t q = 0; q < len; ++q) o[q] = acc[q] * scale + shift;
      }
    }
  }
}

constexpr int64_t SKIP = 32 / sizeof(float);  // inputs tested at once for "all zero" (32 bytes of floats)

// True when the 32 bytes at p are all zero bits (+0.0 values; a -0.0 counts as active and adds 0).
template <typename C> inline bool all_zero_bits(const C* p) {
  uint64_t w[32 * sizeof(C) / sizeof(float) / 8];
  std::memcpy(w, p, sizeof(w));
  uint64_t any = 0;
  for (uint64_t x : w) any |= x;
  return any == 0;
}

// Rows [m0, m1): per group of RG rows, collect the active inputs (runs of SKIP zeros skipped,
// the rest branch-free), then sum.
template <typename C>
void rows(const C* s, const C* w, C* out, int64_t m0, int64_t m1, int64_t K, int64_t N, C scale, C shift) {
  std::vector<int32_t> idx(RG * K);
  std::vector<C> val(RG * K);
  int64_t nnz[RG];
  for (int64_t g0 = m0; g0 < m1; g0 += RG) {
    const int64_t g1 = std::min(m1, g0 + RG);
    bool binary = true;  // every nonzero is 1: the multiply can be skipped
    for (int64_t m = g0; m < g1; ++m) {
      const C* sm = s + m * K;
      int32_t* ix = idx.data() + (m - g0) * K;
      C* vx = val.data() + (m - g0) * K;
      int64_t c = 0;
      for (int64_t k0 = 0; k0 < K; k0 += SKIP) {
        const int64_t k1 = std::min(K, k0 + SKIP);
        if (k1 - k0 == SKIP && all_zero_bits(sm + k0)) continue;  // most runs of a sparse row are empty
        for (int64_t k = k0; k < k1; ++k) {
          const C v = sm[k];
          ix[c] = (int32_t)k;
          vx[c] = v;
          binary &= (v == (C)0) | (v == (C)1);
          c += v != (C)0;
        }
      }
      nnz[m - g0] = c;
    }
    if (binary) accumulate<C, true>(idx.data(), val.data(), nnz, w, out, g0, g1, K, N, scale, shift);
    else accumulate<C, false>(idx.data(), val.data(), nnz, w, out, g0, g1, K, N, scale, shift);
  }
}

template <typename C> int64_t count_nonzero(const C* s, int64_t n) {
  return at::parallel_reduce(0, n, int64_t(1) << 16, int64_t(0), [&](int64_t a, int64_t b, int64_t acc) {
    for (int64_t i = a; i < b; ++i) acc += s[i] != (C)0;
    return acc;
  }, std::plus<int64_t>());
}

template <typename C> void run(const at::Tensor& s, const at::Tensor& w, at::Tensor& out, C scale, C shift) {
  const int64_t M = s.size(0), K = s.size(1), N = w.size(1);
  const C* sp = s.data_ptr<C>();
  const C* wp = w.data_ptr<C>();
  C* op = out.data_ptr<C>();
  at::parallel_for(0, (M + RG - 1) / RG, 1, [&](int64_t a, int64_t b) {
    rows<C>(sp, wp, op, a * RG, std::min(M, b * RG), K, N, scale, shift);
  });
}

// scale · (s @ w) + shift: event-driven when at most max_density of s is nonzero, else a dense
// product (at::mm, then the scale and shift). scale is a 0-dim CPU tensor of s's dtype (read from memory: the
// caller's device scalar needs no host read). Returns (out, used_event_driven).
std::tuple<at::Tensor, bool> spike_matmul(const at::Tensor& s, const at::Tensor& w, const at::Tensor& scale,
                                          double shift, double max_density) {
  RECORD_FUNCTION("spiking::spike_matmul", std::vector<c10::IValue>({s, w}));  // named in profiles
  TORCH_CHECK(s.dim() == 2 && w.dim() == 2 && s.size(1) == w.size(0), "spike_matmul: shapes ", s.sizes(), " and ",
              w.sizes(), " do not multiply");
  TORCH_CHECK(s.scalar_type() == w.scalar_type(), "spike_matmul: dtypes differ");
  TORCH_CHECK(s.is_contiguous() && w.is_contiguous(), "spike_matmul: inputs must be contiguous");
  TORCH_CHECK(s.size(1) < (int64_t(1) << 31), "spike_matmul: too many inputs");
  TORCH_CHECK(scale.numel() == 1 && scale.device().is_cpu() && scale.scalar_type() == s.scalar_type(),
              "spike_matmul: scale must be one value on the CPU in the dtype of s");
  const bool f32 = s.scalar_type() == at::kFloat;
  TORCH_CHECK(f32 || s.scalar_type() == at::kDouble, "spike_matmul: float32 or float64 only, got ", s.scalar_type());
  const int64_t nz = f32 ? count_nonzero(s.data_ptr<float>(), s.numel()) : count_nonzero(s.data_ptr<double>(), s.numel());
  if ((double)nz > max_density * (double)s.numel()) {
    auto out = at::mm(s, w).mul_(scale);
    return {shift != 0.0 ? out.add_(shift) : out, false};
  }
  auto out = at::empty({s.size(0), w.size(1)}, s.options());
  if (f32) run<float>(s, w, out, *scale.data_ptr<float>(), (float)shift);
  else run<double>(s, w, out, *scale.data_ptr<double>(), shift);
  return {out, true};
}

#ifdef __AVX2__
// d[j·ld + i] = s[i·ls + j] for i, j < 8.
inline void transpose8(const float* s, int64_t ls, float* d, int64_t ld) {
  __m256 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(s + i * ls);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4)
    for (int h = 0; h < 2; ++h) {
      u[i + 2 * h] = _mm256_shuffle_ps(t[i + h], t[i + h + 2], _MM_SHUFFLE(1, 0, 1, 0));
      u[i + 2 * h + 1] = _mm256_shuffle_ps(t[i + h], t[i + h + 2], _MM_SHUFFLE(3, 2, 3, 2));
    }
  for (int j = 0; j < 4; ++j) {
    _mm256_storeu_ps(d + j * ld, _mm256_permute2f128_ps(u[j], u[j + 4], 0x20));
    _mm256_storeu_ps(d + (j + 4) * ld, _mm256_permute2f128_ps(u[j], u[j + 4], 0x31));
  }
}
#endif

// out [n, m] = wᵀ for w [m, n] (contiguous float32); tile rows split over threads.
at::Tensor transpose(const at::Tensor& w) {
  TORCH_CHECK(w.dim() == 2 && w.scalar_type() == at::kFloat && w.device().is_cpu(),
              "transpose: a 2-d float32 CPU tensor needed, got ", w.sizes(), " ", w.scalar_type());
  const at::Tensor src = w.contiguous();
  const int64_t m = src.size(0), n = src.size(1);
  at::Tensor out = at::empty({n, m}, src.options());
  const float* s = src.data_ptr<float>();
  float* d = out.data_ptr<float>();
  constexpr int64_t TILE = 32;
  at::parallel_for(0, (m + TILE - 1) / TILE, 1, [&](int64_t a0, int64_t a1) {
    for (int64_t i0 = a0 * TILE; i0 < std::min(m, a1 * TILE); i0 += TILE)
      for (int64_t j0 = 0; j0 < n; j0 += TILE) {
        const int64_t i1 = std::min(m, i0 + TILE), j1 = std::min(n, j0 + TILE);
        int64_t i = i0;
#ifdef __AVX2__
        for (; i + 8 <= i1; i += 8) {
          int64_t j = j0;
          for (; j + 8 <= j1; j += 8) transpose8(s + i * n + j, n, d + j * m + i, m);
          for (; j < j1; ++j)
            for (int64_t q = i; q < i + 8; ++q) d[j * m + q] = s[q * n + j];
        }
#endif
        for (; i < i1; ++i)
          for (int64_t j = j0; j < j1; ++j) d[j * m + i] = s[i * n + j];
      }
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Event-driven synaptic input: scale * (s @ w) + shift for mostly-zero s";
  m.def("spike_matmul", &spike_matmul, "(scale * (s @ w) + shift, event_driven): only the rows of w where s is nonzero "
        "are summed when at most max_density of s is nonzero");
  m.def("transpose", &transpose, "w^T as a new contiguous float32 tensor (tiled)");
}
