// The neuron template's CPU loops (spiking/kernels/neuron_cpu.cpp has the extension's entry
// points): one forward and one backward multi-step loop, instantiated per dynamics definition D
// of cuda/neuron_template.cuh, storage type T and compile-time flags. Each parallel task owns a
// contiguous range of neurons (at::parallel_for over chunks of chunk<D>() neurons) and walks it
// in blocks: a block keeps its state (and per-neuron parameters, gradient sums) in a per-task
// buffer and walks all T steps row by row, chunk by chunk, so every step reads and writes long
// contiguous runs of the [T, N] tensors (prefetchers and TLB work as for a plain copy; walking
// 512 neurons through all T instead jumps a row of N every 2 KiB: 1.5-2x slower, measured) while
// a chunk's temporaries (output, saved values) stay in L1. There is no per-step tensor and no
// autograd graph. The instantiations are split by dtype over neuron_cpu_float.cpp and
// neuron_cpu_double.cpp (compiled in parallel); each defines run_<dtype>(id, job) for the
// Forward and Backward jobs below.
#pragma once

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <type_traits>

#include "neuron_template.cuh"
#include "cpu_buffers.h"

namespace nrn_cpu {

using cpubuf::empty_big;
using cpubuf::write_row;

// Neurons per chunk (the unit of parallel work, of the L1 temporaries and of the per-chunk
// parameter-gradient sums): 512 when the parameters are one value per layer, else 256.
template <class D> constexpr int64_t chunk() { return nrn::traits<D>::SCALAR_PARAMS ? 512 : 256; }
// at least ~1M neuron-steps per parallel task: below that, waking a second thread costs more
// than it saves (and on a loaded machine much more)
constexpr int64_t MIN_TASK_WORK = int64_t(1) << 20;
template <class D> int64_t grain(int64_t steps) {
  return std::max<int64_t>(1, MIN_TASK_WORK / std::max<int64_t>(1, steps * chunk<D>()));
}
template <class D> int64_t num_chunks(int64_t n) { return (n + chunk<D>() - 1) / chunk<D>(); }
constexpr int at_least_1(int n) { return n > 0 ? n : 1; }

// A block's per-neuron buffers take at most this many bytes (they stay in L2/L3 across the T
// steps; larger blocks measured faster up to a whole row per thread).
constexpr int64_t BLOCK_BYTES = int64_t(2) << 20;
// Neurons per block (a multiple of the chunk) for buffers of bytes_per_neuron.
template <class D> int64_t block_width(int64_t bytes_per_neuron) {
  const int64_t c = chunk<D>();
  return std::max<int64_t>(1, BLOCK_BYTES / std::max<int64_t>(1, bytes_per_neuron) / c) * c;
}

// rows buffers of width values each (a block's state, parameters or gradient sums).
template <typename C> struct Rows {
  std::unique_ptr<C[]> data;
  int64_t width;
  Rows(int rows, int64_t w) : data(new C[std::max<int64_t>(1, rows * w)]), width(w) {}
  C* get() { return data.get(); }
  C* operator[](int k) { return data.get() + k * width; }
};

template <typename T> struct Raw { typedef T type; };
template <> struct Raw<at::Half> { typedef lif::f16 type; };
template <> struct Raw<at::BFloat16> { typedef lif::bf16 type; };

template <typename AT> const typename Raw<AT>::type* cptr(const at::Tensor& t) {
  return t.defined() ? reinterpret_cast<const typename Raw<AT>::type*>(t.data_ptr<AT>()) : nullptr;
}
template <typename AT> typename Raw<AT>::type* mptr(at::Tensor& t) {
  return t.defined() ? reinterpret_cast<typename Raw<AT>::type*>(t.data_ptr<AT>()) : nullptr;
}

// The options of one call; the loops receive them as nrn::FixedFlags (see dispatch below).
struct Options {
  bool hard, detach, decay_input;
  int sg;
  double sg_param;
};

template <class F> F make_flags(const Options& o) {
  typedef typename F::C C;
  F f{};
  f.sg = lif::make_sg<C>(o.sg, o.sg_param);
  return f;
}

// Calls job.go<D, AT, HARD, DETACH, DECAY>() with the options as compile-time constants.
template <class D, typename AT, class Job> void with_flags(const Options& o, Job& job) {
  const int k = (o.hard ? 4 : 0) + (o.detach ? 2 : 0) + (o.decay_input ? 1 : 0);
  switch (k) {
    case 0: job.template go<D, AT, false, false, false>(); break;
    case 1: job.template go<D, AT, false, false, true>(); break;
    case 2: job.template go<D, AT, false, true, false>(); break;
    case 3: job.template go<D, AT, false, true, true>(); break;
    case 4: job.template go<D, AT, true, false, false>(); break;
    case 5: job.template go<D, AT, true, false, true>(); break;
    case 6: job.template go<D, AT, true, true, false>(); break;
    default: job.template go<D, AT, true, true, true>(); break;
  }
}

// rows[k][0..len) = src[k, n0..n0+len) for src [K, n], or src[k] repeated for src [K, 1] (n == 1)
template <int K, typename T, typename C>
inline void load_rows(const T* src, int64_t n, int64_t n0, int64_t len, Rows<C>& rows) {
  typedef lif::Store<T> S;
  for (int k = 0; k < K; ++k) {
    C* r = rows[k];
    if (n == 1) std::fill(r, r + len, S::load(src[k]));
    else for (int64_t j = 0; j < len; ++j) r[j] = S::load(src[k * n + n0 + j]);
  }
}

// The block's parameters: one value per layer (SCALAR_PARAMS: in registers), one row per
// parameter repeated for every chunk (params [NP, 1] of a per-neuron definition), or per neuron.
template <class D, typename C> struct Params {
  static constexpr bool scalar = nrn::traits<D>::SCALAR_PARAMS;
  C pu[D::NP];
  bool uniform;  // params [NP, 1]: rows of one chunk, the same for every chunk
  Rows<C> rows;
  Params(const C* prm, int64_t p_n, int64_t block)
      : uniform(p_n == 1), rows(scalar ? 0 : D::NP, scalar ? 0 : p_n == 1 ? chunk<D>() : block) {
    if (scalar) for (int k = 0; k < D::NP; ++k) pu[k] = prm[k];
    else if (uniform) load_rows<D::NP>(prm, 1, 0, chunk<D>(), rows);
  }
  void load(const C* prm, int64_t p_n, int64_t n0, int64_t len) {
    if (!scalar && !uniform) load_rows<D::NP>(prm, p_n, n0, len, rows);
  }
  // parameter rows of the chunk at offset c of the block (row stride: width())
  const C* at(int64_t c) { return scalar ? nullptr : rows.get() + (uniform ? 0 : c); }
  int64_t width() const { return rows.width; }
  // per-neuron bytes of the block buffer
  static int64_t bytes(int64_t p_n) { return scalar || p_n == 1 ? 0 : D::NP * int64_t(sizeof(C)); }
};

// One step of one chunk: o[j] = output, sv[k * CH + j] = saved values, st rows (stride sw) the
// state, pr rows (stride pw) the parameters (pu: one value per layer). Returns the OR of the
// NaN/inf probes of x.
template <class D, int64_t CH, class F, typename T, typename C>
inline unsigned forward_chunk(const T* __restrict xt, C* __restrict st, int64_t sw, const C* __restrict pr,
                              int64_t pw, const C* pu, C* __restrict o, C* __restrict sv, int64_t len, const F& f) {
  typedef lif::Store<T> S;
  constexpr bool scalar = nrn::traits<D>::SCALAR_PARAMS;
  unsigned bad = 0;
  for (int64_t j = 0; j < len; ++j) {
    C s[D::NS], p[D::NP], v[at_least_1(D::NSAVE)];
    for (int k = 0; k < D::NS; ++k) s[k] = st[k * sw + j];
    for (int k = 0; k < D::NP; ++k) p[k] = scalar ? pu[k] : pr[k * pw + j];
    const C xj = S::load(xt[j]);
    bad |= (unsigned)lif::probe_failed(lif::finite_probe(xj));
    o[j] = D::forward(xj, s, p, f, v);
    for (int k = 0; k < D::NS; ++k) st[k * sw + j] = s[k];
    for (int k = 0; k < D::NSAVE; ++k) sv[k * CH + j] = v[k];
  }
  return bad;
}

// Returns true when some x is NaN or ±inf. seq: [T, N] copy of state 0 after every step, or null.
template <class D, class F, typename T>
bool forward_loop(const T* x, const T* st0, const typename F::C* prm, T* out, T* st_last, T* saved, T* seq,
                  int64_t steps, int64_t n, int64_t s_n, int64_t p_n, const F& f) {
  typedef typename F::C C;
  typedef Params<D, C> P;
  constexpr int64_t CHUNK = chunk<D>();
  const bool stream = size_t(steps * n) * sizeof(T) >= cpubuf::STREAM_BYTES;
  const int64_t block = block_width<D>(D::NS * int64_t(sizeof(C)) + P::bytes(p_n));
  std::atomic<bool> nonfinite(false);
  at::parallel_for(0, num_chunks<D>(n), grain<D>(steps), [&, f0 = f](int64_t c0, int64_t c1) {
    const F f = f0;  // thread-local copies: no aliasing with the buffers below
    const int64_t end = std::min(n, c1 * CHUNK);
    const int64_t width = std::min(block, end - c0 * CHUNK);
    Rows<C> st(D::NS, width);
    P pr(prm, p_n, width);
    alignas(64) C sv[at_least_1(D::NSAVE) * CHUNK];
    alignas(64) C o[CHUNK];
    unsigned bad = 0;
    for (int64_t n0 = c0 * CHUNK; n0 < end; n0 += width) {
      const int64_t blen = std::min(width, end - n0);
      load_rows<D::NS>(st0, s_n, n0, blen, st);
      pr.load(prm, p_n, n0, blen);
      for (int64_t t = 0; t < steps; ++t) {
        for (int64_t c = 0; c < blen; c += CHUNK) {
          const int64_t len = std::min(CHUNK, blen - c), off = t * n + n0 + c;
          bad |= forward_chunk<D, CHUNK>(x + off, st.get() + c, width, pr.at(c), pr.width(), pr.pu, o, sv, len, f);
          write_row<T>(out + off, o, len, stream);
          if (saved)
            for (int k = 0; k < D::NSAVE; ++k) write_row<T>(saved + k * steps * n + off, sv + k * CHUNK, len, stream);
          if (seq) write_row<T>(seq + off, st[0] + c, len, stream);
        }
      }
      for (int k = 0; k < D::NS; ++k) write_row<T>(st_last + k * n + n0, st[k], blen, false);
    }
    if (bad) nonfinite.store(true, std::memory_order_relaxed);
    if (stream) cpubuf::stream_fence();
  });
  return nonfinite.load();
}

// One reverse step of one chunk: gx[j] = dL/dx; gst rows (stride sw): dL/dstate, updated; gpf
// rows (stride gw) += this step's parameter gradients (those in GRAD_PARAMS).
template <class D, int SG, class F, typename T, typename C>
inline void backward_chunk(const T* __restrict xt, const T* __restrict sv, int64_t ss, const T* __restrict go,
                           C* __restrict gst, int64_t sw, const C* __restrict pr, int64_t pw, const C* pu,
                           C* __restrict gpf, int64_t gw, C* __restrict gx, int64_t len, const F& f) {
  typedef lif::Store<T> S;
  constexpr bool scalar = nrn::traits<D>::SCALAR_PARAMS;
  constexpr int GRAD = nrn::traits<D>::GRAD_PARAMS;
  for (int64_t j = 0; j < len; ++j) {
    C gs[D::NS], p[D::NP], v[at_least_1(D::NSAVE)], g[D::NP];
    for (int k = 0; k < D::NS; ++k) gs[k] = gst[k * sw + j];
    for (int k = 0; k < D::NP; ++k) p[k] = scalar ? pu[k] : pr[k * pw + j];
    for (int k = 0; k < D::NSAVE; ++k) v[k] = S::load(sv[k * ss + j]);
    gx[j] = D::template backward<SG>(S::load(xt[j]), v, S::load(go[j]), gs, p, f, g);
    for (int k = 0; k < D::NS; ++k) gst[k * sw + j] = gs[k];
    for (int k = 0; k < D::NP; ++k)
      if (GRAD >> k & 1) gpf[k * gw + j] += g[k];
  }
}

// g_out: dL/dout [T, N] or null; g_seq: dL/dseq [T, N] (gradient of state 0 at every step) or null;
// g_last: dL/dstate_last [NS, N] or null. Parameter gradients are summed over T in double (partial
// sums of LIF_VTH_FLUSH steps in C first) into g_prm: [NP, N], or for SCALAR_PARAMS [NP, chunks]
// (each chunk's sum over its neurons, in order: deterministic), or nothing when g_prm is null
// (then the step's parameter gradients go to a chunk-wide scratch row in L1).
template <class D, int SG, class F, typename T>
void backward_loop(const T* x, const T* saved, const typename F::C* prm, const T* g_out, const T* g_seq,
                   const T* g_last, T* g_x, T* g_st0, double* g_prm, int64_t steps, int64_t n, int64_t p_n,
                   const F& f) {
  typedef lif::Store<T> S;
  typedef typename F::C C;
  typedef Params<D, C> P;
  constexpr bool scalar = nrn::traits<D>::SCALAR_PARAMS;
  constexpr int64_t CHUNK = chunk<D>();
  constexpr int GRAD = nrn::traits<D>::GRAD_PARAMS;
  const bool prm_sums = g_prm != nullptr;
  const bool stream = size_t(steps * n) * sizeof(T) >= cpubuf::STREAM_BYTES;
  const int64_t block =
      block_width<D>(D::NS * int64_t(sizeof(C)) + P::bytes(p_n) + (prm_sums ? D::NP * int64_t(sizeof(C) + 8) : 0));
  at::parallel_for(0, num_chunks<D>(n), grain<D>(steps), [&, f0 = f](int64_t c0, int64_t c1) {
    const F f = f0;
    const int64_t end = std::min(n, c1 * CHUNK);
    const int64_t width = std::min(block, end - c0 * CHUNK);
    Rows<C> gst(D::NS, width), gpf(D::NP, prm_sums ? width : CHUNK);  // gpf: partial sums of
    Rows<double> gp(prm_sums ? D::NP : 0, width);  // LIF_VTH_FLUSH steps, gp: summed over T in double
    P pr(prm, p_n, width);
    alignas(64) C gx[CHUNK];
    alignas(64) T zeros[CHUNK] = {};
    const int64_t ss = steps * n;
    for (int64_t n0 = c0 * CHUNK; n0 < end; n0 += width) {
      const int64_t blen = std::min(width, end - n0);
      for (int k = 0; k < D::NS; ++k)
        for (int64_t j = 0; j < blen; ++j) gst[k][j] = g_last ? S::load(g_last[k * n + n0 + j]) : (C)0;
      pr.load(prm, p_n, n0, blen);
      for (int k = 0; k < D::NP; ++k) {  // only the sums that are used (GRAD, g_prm)
        if (prm_sums) std::fill(gp[k], gp[k] + blen, 0.0);
        if (GRAD >> k & 1) std::fill(gpf[k], gpf[k] + std::min(blen, gpf.width), (C)0);
      }
      for (int64_t t = steps - 1; t >= 0; --t) {
        for (int64_t c = 0; c < blen; c += CHUNK) {
          const int64_t len = std::min(CHUNK, blen - c), off = t * n + n0 + c;
          if (g_seq)
            for (int64_t j = 0; j < len; ++j) gst[0][c + j] = gst[0][c + j] + S::load(g_seq[off + j]);
          backward_chunk<D, SG>(x ? x + off : zeros, saved ? saved + off : zeros, ss, g_out ? g_out + off : zeros,
                                gst.get() + c, width, pr.at(c), pr.width(), pr.pu, gpf.get() + (prm_sums ? c : 0),
                                gpf.width, gx, len, f);
          write_row<T>(g_x + off, gx, len, stream);
        }
        if (prm_sums && t % LIF_VTH_FLUSH == 0)
          for (int k = 0; k < D::NP; ++k)
            if (GRAD >> k & 1)
              for (int64_t j = 0; j < blen; ++j) { gp[k][j] += (double)gpf[k][j]; gpf[k][j] = (C)0; }
      }
      for (int k = 0; k < D::NS; ++k) write_row<T>(g_st0 + k * n + n0, gst[k], blen, false);
      if (prm_sums && scalar) {
        const int64_t nch = num_chunks<D>(n);
        for (int64_t c = 0; c < blen; c += CHUNK) {
          const int64_t len = std::min(CHUNK, blen - c), ch = (n0 + c) / CHUNK;
          for (int k = 0; k < D::NP; ++k) {
            double acc = 0.0;
            if (GRAD >> k & 1)
              for (int64_t j = 0; j < len; ++j) acc += gp[k][c + j];
            g_prm[k * nch + ch] = acc;
          }
        }
      } else if (prm_sums) {
        for (int k = 0; k < D::NP; ++k) {
          if (GRAD >> k & 1) std::copy(gp[k], gp[k] + blen, g_prm + k * n + n0);
          else std::fill(g_prm + k * n + n0, g_prm + k * n + n0 + blen, 0.0);
        }
      }
    }
    if (stream) cpubuf::stream_fence();
  });
}

struct Forward {
  const at::Tensor &x, &st0, &prm;
  at::Tensor &out, &st_last, &saved, &seq;
  int64_t steps, n;
  Options o;  // detach is false: the forward does not depend on it
  bool nonfinite = false;

  template <class D, typename AT> void run() { with_flags<D, AT>(o, *this); }
  template <class D, typename AT, bool HARD, bool DETACH, bool DECAY> void go() {
    typedef typename Raw<AT>::type T;
    typedef typename lif::Store<T>::C C;
    typedef nrn::FixedFlags<T, HARD, false, DECAY> F;
    T* last = st_last.defined() ? mptr<AT>(st_last) : mptr<AT>(seq) + (steps - 1) * n;  // seq's last row
    nonfinite = forward_loop<D>(cptr<AT>(x), cptr<AT>(st0), prm.data_ptr<C>(), mptr<AT>(out), last,
                                mptr<AT>(saved), mptr<AT>(seq), steps, n, st0.numel() / D::NS,
                                prm.numel() / D::NP, make_flags<F>(o));
  }
};

struct Backward {
  const at::Tensor &x, &saved, &prm, &g_out, &g_seq, &g_last;
  at::Tensor &g_x, &g_st0;
  double* g_prm;
  int64_t steps, n;
  Options o;

  template <class D, typename AT> void run() { with_flags<D, AT>(o, *this); }
  template <class D, typename AT, bool HARD, bool DETACH, bool DECAY> void go() {
    typedef typename Raw<AT>::type T;
    typedef typename lif::Store<T>::C C;
    typedef nrn::FixedFlags<T, HARD, DETACH, DECAY> F;
    const F f = make_flags<F>(o);
    const T* px = cptr<AT>(x);
    const T* ps = cptr<AT>(saved);
    const C* pp = prm.data_ptr<C>();
    const T *go = cptr<AT>(g_out), *gq = cptr<AT>(g_seq), *gl = cptr<AT>(g_last);
    T *gx = mptr<AT>(g_x), *gs0 = mptr<AT>(g_st0);
    const int64_t p_n = prm.numel() / D::NP;
    switch (o.sg) {
      case lif::SG_SIGMOID: backward_loop<D, lif::SG_SIGMOID>(px, ps, pp, go, gq, gl, gx, gs0, g_prm, steps, n, p_n, f); break;
      case lif::SG_ATAN: backward_loop<D, lif::SG_ATAN>(px, ps, pp, go, gq, gl, gx, gs0, g_prm, steps, n, p_n, f); break;
      case lif::SG_FAST_SIGMOID:
        backward_loop<D, lif::SG_FAST_SIGMOID>(px, ps, pp, go, gq, gl, gx, gs0, g_prm, steps, n, p_n, f); break;
      case lif::SG_TRIANGLE: backward_loop<D, lif::SG_TRIANGLE>(px, ps, pp, go, gq, gl, gx, gs0, g_prm, steps, n, p_n, f); break;
      default: TORCH_CHECK(false, "surrogate: unknown kernel id ", o.sg);
    }
  }
};

// Runs job.run<D, AT>() for the definition with dispatch index id (fp16/bf16 storage only for
// STORAGE16 definitions).
template <typename AT, class Job> void dispatch(int64_t id, Job& job) {
  constexpr bool wide = std::is_same<AT, float>::value || std::is_same<AT, double>::value;
  int64_t i = 0;
#define NRN_RUN(name, D)                                                                            \
  if (i++ == id) {                                                                                  \
    if constexpr (wide || nrn::traits<D>::STORAGE16) return job.template run<D, AT>();               \
    TORCH_CHECK(false, "x: the fused neuron '" #name "' supports float32/float64",                  \
                nrn::traits<D>::STORAGE16 ? "/float16/bfloat16" : "", ", got ", c10::CppTypeToScalarType<AT>::value); \
  }
  NRN_FOR_EACH(NRN_RUN)
#undef NRN_RUN
  TORCH_CHECK(false, "neuron: unknown dynamics id ", id);
}

// Defined in neuron_cpu_float.cpp (float) and neuron_cpu_double.cpp (double, fp16, bf16).
void run_float(int64_t id, Forward& job);
void run_float(int64_t id, Backward& job);
void run_double(int64_t id, Forward& job);
void run_double(int64_t id, Backward& job);
void run_half(int64_t id, Forward& job);
void run_half(int64_t id, Backward& job);
void run_bfloat16(int64_t id, Forward& job);
void run_bfloat16(int64_t id, Backward& job);

}  // namespace nrn_cpu
