// Fused multi-step LIF on the CPU: forward and backward without a per-step autograd graph.
// The per-neuron step is cuda/lif_step.cuh, the same code the CUDA kernels run (host-compiled).
//
// Layout [T, N] contiguous (N = B*...). Work is split into chunks of CHUNK consecutive neurons
// (at::parallel_for over chunks, OpenMP); each chunk walks t = 0..T-1 with its membrane in a
// small stack buffer, so every step reads/writes CHUNK contiguous values (vectorisable inner
// loops, streaming access to x / spikes / h_seq, state in L1).
//
// Saved for backward: h_seq (H_t) only when a gradient is needed; backward recomputes spikes and
// σ' from it (see cuda/lif.cu for why this is the minimum).
//
// Build flags: -O3 -ffp-contract=off (no FMA contraction: every op rounds like the torch
// reference, so spikes are bit-identical), -fno-trapping-math (lets the selects of fire/reset
// be if-converted so the step loops vectorise; no change to any rounding), -fno-math-errno,
// -fopenmp, and -mavx2 where the CPU has it (chosen in cpu.py, part of the extension name).
// Output buffers: huge-page advised, recycled, and streamed (see empty_big / write_row).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <sys/mman.h>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <tuple>
#include <mutex>
#include <utility>
#include <vector>

#include "lif_step.cuh"
#include "cpu_buffers.h"  // empty_big (recycled huge-page outputs), write_row (streaming stores)

namespace {

using cpubuf::empty_big;
using cpubuf::STREAM_BYTES;
using cpubuf::stream_fence;
using cpubuf::write_row;

constexpr int64_t CHUNK = 512;
// at least ~1M neuron-steps per parallel task: below that, waking a second thread costs more
// than it saves (and on a loaded machine much more)
constexpr int64_t MIN_TASK_WORK = int64_t(1) << 20;

int64_t grain_chunks(int64_t steps) { return std::max<int64_t>(1, MIN_TASK_WORK / std::max<int64_t>(1, steps * CHUNK)); }

template <typename T> struct Raw { typedef T type; };
template <> struct Raw<at::Half> { typedef lif::f16 type; };
template <> struct Raw<at::BFloat16> { typedef lif::bf16 type; };

template <typename AT>
const typename Raw<AT>::type* cptr(const at::Tensor& t) {
  return t.defined() ? reinterpret_cast<const typename Raw<AT>::type*>(t.data_ptr<AT>()) : nullptr;
}
template <typename AT>
typename Raw<AT>::type* mptr(at::Tensor& t) {
  return t.defined() ? reinterpret_cast<typename Raw<AT>::type*>(t.data_ptr<AT>()) : nullptr;
}


struct Config {
  double tau, v_th, v_reset, sg_param;
  bool vth_is_tensor, hard, decay_input, detach;
  int sg;
};

// Returns true when some x is NaN or ±inf: the step loop ORs lif::probe_failed(finite_probe(x))
// into a register while it reads x (a vectorised OR reduction), so the check costs no extra pass
// over x and no extra memory traffic.
template <typename T, bool HARD, bool DECAY>
bool forward_impl(const T* x, const T* v0, T* spike, T* h_seq, T* v_out, bool return_v, int64_t steps,
                  int64_t n, const Config& c) {
  typedef lif::Store<T> S;
  typedef typename S::C C;
  const lif::Params<C> p = lif::make_params<T>(c.tau, c.v_th, c.vth_is_tensor, c.v_reset, HARD, DECAY, 1.0, -1);
  const int64_t nchunks = (n + CHUNK - 1) / CHUNK;
  const bool stream = size_t(steps * n) * sizeof(T) >= STREAM_BYTES;
  std::atomic<bool> nonfinite(false);
  at::parallel_for(0, nchunks, grain_chunks(steps), [&, p0 = p](int64_t c0, int64_t c1) {
    const lif::Params<C> p = p0;  // thread-local copy: no aliasing with the buffers below
    alignas(64) C v[CHUNK];
    alignas(64) C h[CHUNK];
    alignas(64) C s[CHUNK];
    for (int64_t ch = c0; ch < c1; ++ch) {
      const int64_t n0 = ch * CHUNK, len = std::min(CHUNK, n - n0);
      unsigned bad = 0;
      if (v0) {
        for (int64_t j = 0; j < len; ++j) v[j] = S::load(v0[n0 + j]);
      } else {
        const C rest = S::round(p.v_rest);
        for (int64_t j = 0; j < len; ++j) v[j] = rest;
      }
      for (int64_t t = 0; t < steps; ++t) {
        const int64_t off = t * n + n0;
        const T* xt = x + off;
        for (int64_t j = 0; j < len; ++j) {
          const C xj = S::load(xt[j]);
          bad |= (unsigned)lif::probe_failed(lif::finite_probe(xj));
          const C hj = lif::charge<T, DECAY>(xj, v[j], p);
          const bool fired = lif::fire<T>(hj, p);
          h[j] = hj;
          s[j] = fired ? (C)1 : (C)0;
          v[j] = lif::reset<T, HARD>(hj, fired, p);
        }
        write_row<T>(spike + off, s, len, stream);
        if (h_seq) write_row<T>(h_seq + off, h, len, stream);
        if (return_v) write_row<T>(v_out + off, v, len, stream);
      }
      if (!return_v) write_row<T>(v_out + n0, v, len, false);
      if (bad) nonfinite.store(true, std::memory_order_relaxed);
    }
    if (stream) stream_fence();
  });
  return nonfinite.load();
}

template <typename T, int SG, bool HARD, bool DETACH>
void backward_impl(const T* h_seq, const T* grad_s, const T* grad_v, T* grad_x, T* grad_v0, double* gvth_chunks,
                   bool return_v, int64_t steps, int64_t n, const Config& c) {
  typedef lif::Store<T> S;
  typedef typename S::C C;
  const lif::Params<C> p = lif::make_params<T>(c.tau, c.v_th, c.vth_is_tensor, c.v_reset, HARD, c.decay_input,
                                               c.sg_param, SG);
  const int64_t nchunks = (n + CHUNK - 1) / CHUNK;
  const bool stream = size_t(steps * n) * sizeof(T) >= STREAM_BYTES;
  at::parallel_for(0, nchunks, grain_chunks(steps), [&, p0 = p](int64_t c0, int64_t c1) {
    const lif::Params<C> p = p0;
    alignas(64) C gh[CHUNK];
    alignas(64) C gvth[CHUNK];         // threshold gradient: float partials of LIF_VTH_FLUSH steps,
    alignas(64) double gvth_sum[CHUNK];  // summed in double
    alignas(64) C gx[CHUNK];
    for (int64_t ch = c0; ch < c1; ++ch) {
      const int64_t n0 = ch * CHUNK, len = std::min(CHUNK, n - n0);
      for (int64_t j = 0; j < len; ++j) { gh[j] = (C)0; gvth[j] = (C)0; gvth_sum[j] = 0.0; }
      for (int64_t t = steps - 1; t >= 0; --t) {
        const int64_t off = t * n + n0;
        const T* ht = h_seq + off;
        const T* gst = grad_s ? grad_s + off : nullptr;
        const T* gvt = nullptr;
        if (grad_v) {
          if (return_v) gvt = grad_v + off;
          else if (t == steps - 1) gvt = grad_v + n0;
        }
        // the branches below are loop-invariant; they select one of four straight loops
        if (gst && gvt) {
          for (int64_t j = 0; j < len; ++j) {
            const C gv = gh[j] * p.dh_dv + S::load(gvt[j]);
            gh[j] = lif::backward_step<T, SG, HARD, DETACH>(S::load(ht[j]), S::load(gst[j]), gv, p, &gvth[j]);
            gx[j] = gh[j] * p.dh_dx;
          }
        } else if (gst) {
          for (int64_t j = 0; j < len; ++j) {
            const C gv = gh[j] * p.dh_dv;
            gh[j] = lif::backward_step<T, SG, HARD, DETACH>(S::load(ht[j]), S::load(gst[j]), gv, p, &gvth[j]);
            gx[j] = gh[j] * p.dh_dx;
          }
        } else if (gvt) {
          for (int64_t j = 0; j < len; ++j) {
            const C gv = gh[j] * p.dh_dv + S::load(gvt[j]);
            gh[j] = lif::backward_step<T, SG, HARD, DETACH>(S::load(ht[j]), (C)0, gv, p, &gvth[j]);
            gx[j] = gh[j] * p.dh_dx;
          }
        } else {
          for (int64_t j = 0; j < len; ++j) {
            const C gv = gh[j] * p.dh_dv;
            gh[j] = lif::backward_step<T, SG, HARD, DETACH>(S::load(ht[j]), (C)0, gv, p, &gvth[j]);
            gx[j] = gh[j] * p.dh_dx;
          }
        }
        write_row<T>(grad_x + off, gx, len, stream);
        if (t % LIF_VTH_FLUSH == 0) {
          for (int64_t j = 0; j < len; ++j) { gvth_sum[j] += (double)gvth[j]; gvth[j] = (C)0; }
        }
      }
      if (grad_v0) {
        for (int64_t j = 0; j < len; ++j) grad_v0[n0 + j] = S::store(gh[j] * p.dh_dv);
      }
      if (gvth_chunks) {
        double acc = 0.0;
        for (int64_t j = 0; j < len; ++j) acc += gvth_sum[j];
        gvth_chunks[ch] = acc;  // per-chunk partials, summed in order: deterministic
      }
    }
    if (stream) stream_fence();
  });
}

void check_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

template <typename AT>
bool forward_dispatch(const at::Tensor& x, const at::Tensor& v0, at::Tensor& spike, at::Tensor& h_seq,
                      at::Tensor& v_out, bool return_v, int64_t steps, int64_t n, const Config& c) {
  typedef typename Raw<AT>::type T;
  const T* px = cptr<AT>(x);
  const T* pv0 = cptr<AT>(v0);
  T* ps = mptr<AT>(spike);
  T* ph = mptr<AT>(h_seq);
  T* pv = mptr<AT>(v_out);
  if (c.hard && c.decay_input) return forward_impl<T, true, true>(px, pv0, ps, ph, pv, return_v, steps, n, c);
  if (c.hard) return forward_impl<T, true, false>(px, pv0, ps, ph, pv, return_v, steps, n, c);
  if (c.decay_input) return forward_impl<T, false, true>(px, pv0, ps, ph, pv, return_v, steps, n, c);
  return forward_impl<T, false, false>(px, pv0, ps, ph, pv, return_v, steps, n, c);
}

template <typename T, int SG>
void backward_sg(const T* h, const T* gs, const T* gv, T* gx, T* gv0, double* gvth, bool return_v, int64_t steps,
                 int64_t n, const Config& c) {
  if (c.hard && c.detach) backward_impl<T, SG, true, true>(h, gs, gv, gx, gv0, gvth, return_v, steps, n, c);
  else if (c.hard) backward_impl<T, SG, true, false>(h, gs, gv, gx, gv0, gvth, return_v, steps, n, c);
  else if (c.detach) backward_impl<T, SG, false, true>(h, gs, gv, gx, gv0, gvth, return_v, steps, n, c);
  else backward_impl<T, SG, false, false>(h, gs, gv, gx, gv0, gvth, return_v, steps, n, c);
}

template <typename AT>
void backward_dispatch(const at::Tensor& h_seq, const at::Tensor& grad_s, const at::Tensor& grad_v, at::Tensor& grad_x,
                       at::Tensor& grad_v0, double* gvth, bool return_v, int64_t steps, int64_t n, const Config& c) {
  typedef typename Raw<AT>::type T;
  const T* ph = cptr<AT>(h_seq);
  const T* pgs = cptr<AT>(grad_s);
  const T* pgv = cptr<AT>(grad_v);
  T* pgx = mptr<AT>(grad_x);
  T* pgv0 = mptr<AT>(grad_v0);
  switch (c.sg) {
    case lif::SG_SIGMOID: backward_sg<T, lif::SG_SIGMOID>(ph, pgs, pgv, pgx, pgv0, gvth, return_v, steps, n, c); break;
    case lif::SG_ATAN: backward_sg<T, lif::SG_ATAN>(ph, pgs, pgv, pgx, pgv0, gvth, return_v, steps, n, c); break;
    case lif::SG_FAST_SIGMOID:
      backward_sg<T, lif::SG_FAST_SIGMOID>(ph, pgs, pgv, pgx, pgv0, gvth, return_v, steps, n, c); break;
    case lif::SG_TRIANGLE: backward_sg<T, lif::SG_TRIANGLE>(ph, pgs, pgv, pgx, pgv0, gvth, return_v, steps, n, c); break;
    default: TORCH_CHECK(false, "surrogate: unknown kernel id ", c.sg);
  }
}

}  // namespace

// x [T, N...]; v0 [N...] or undefined. Returns (spikes, v_out, h_seq, x_nonfinite): v_out is
// v_seq [T, ...] when return_v else the final membrane [...]; h_seq is empty unless save_h;
// x_nonfinite is true when some x is NaN or ±inf (the caller raises; see forward_impl).
std::tuple<at::Tensor, at::Tensor, at::Tensor, bool> lif_forward(const at::Tensor& x, const c10::optional<at::Tensor>& v0_opt, double v_th,
                                    bool vth_is_tensor, double tau, double v_reset, bool hard, bool decay_input,
                                    bool save_h, bool return_v) {
  check_cpu(x, "x");
  TORCH_CHECK(x.dim() >= 2, "x must have shape [T, batch, ...]");
  at::Tensor v0 = v0_opt.has_value() ? *v0_opt : at::Tensor();
  const int64_t steps = x.size(0), n = x.numel() / steps;
  if (v0.defined()) {
    check_cpu(v0, "v0");
    TORCH_CHECK(v0.numel() == n && v0.scalar_type() == x.scalar_type(), "v0 must match one step of x");
  }
  at::Tensor spike = empty_big(x.sizes(), x.options());
  at::Tensor h_seq = save_h ? empty_big(x.sizes(), x.options()) : at::Tensor();
  at::Tensor v_out = return_v ? empty_big(x.sizes(), x.options()) : at::empty(x.sizes().slice(1), x.options());
  Config c{tau, v_th, v_reset, 1.0, vth_is_tensor, hard, decay_input, false, -1};
  bool nonfinite = false;
  switch (x.scalar_type()) {
    case at::kFloat: nonfinite = forward_dispatch<float>(x, v0, spike, h_seq, v_out, return_v, steps, n, c); break;
    case at::kDouble: nonfinite = forward_dispatch<double>(x, v0, spike, h_seq, v_out, return_v, steps, n, c); break;
    case at::kHalf: nonfinite = forward_dispatch<at::Half>(x, v0, spike, h_seq, v_out, return_v, steps, n, c); break;
    case at::kBFloat16:
      nonfinite = forward_dispatch<at::BFloat16>(x, v0, spike, h_seq, v_out, return_v, steps, n, c); break;
    default: TORCH_CHECK(false, "x: unsupported dtype ", x.scalar_type());
  }
  return {spike, v_out, save_h ? h_seq : at::empty({0}, x.options()), nonfinite};
}

// Returns (grad_x, grad_v0 or empty, grad_vth as a float64 0-dim tensor or empty).
std::vector<at::Tensor> lif_backward(const at::Tensor& h_seq, const c10::optional<at::Tensor>& grad_s_opt,
                                     const c10::optional<at::Tensor>& grad_v_opt, double v_th, bool vth_is_tensor,
                                     double tau, double v_reset, bool hard, bool decay_input, bool detach,
                                     int64_t sg, double sg_param, bool return_v, bool need_v0, bool need_vth) {
  check_cpu(h_seq, "h_seq");
  const int64_t steps = h_seq.size(0), n = h_seq.numel() / steps;
  at::Tensor grad_s = grad_s_opt.has_value() ? *grad_s_opt : at::Tensor();
  at::Tensor grad_v = grad_v_opt.has_value() ? *grad_v_opt : at::Tensor();
  if (grad_s.defined()) {
    check_cpu(grad_s, "grad_spikes");
    TORCH_CHECK(grad_s.numel() == steps * n && grad_s.scalar_type() == h_seq.scalar_type(), "grad_spikes: bad shape/dtype");
  }
  if (grad_v.defined()) {
    check_cpu(grad_v, "grad_v");
    TORCH_CHECK(grad_v.numel() == (return_v ? steps * n : n) && grad_v.scalar_type() == h_seq.scalar_type(),
                "grad_v: bad shape/dtype");
  }
  at::Tensor grad_x = empty_big(h_seq.sizes(), h_seq.options());
  at::Tensor grad_v0 = need_v0 ? at::empty(h_seq.sizes().slice(1), h_seq.options()) : at::Tensor();
  const int64_t nchunks = (n + CHUNK - 1) / CHUNK;
  at::Tensor chunks = need_vth ? at::empty({nchunks}, h_seq.options().dtype(at::kDouble)) : at::Tensor();
  double* pchunks = need_vth ? chunks.data_ptr<double>() : nullptr;
  Config c{tau, v_th, v_reset, sg_param, vth_is_tensor, hard, decay_input, detach, (int)sg};
  switch (h_seq.scalar_type()) {
    case at::kFloat: backward_dispatch<float>(h_seq, grad_s, grad_v, grad_x, grad_v0, pchunks, return_v, steps, n, c); break;
    case at::kDouble: backward_dispatch<double>(h_seq, grad_s, grad_v, grad_x, grad_v0, pchunks, return_v, steps, n, c); break;
    case at::kHalf: backward_dispatch<at::Half>(h_seq, grad_s, grad_v, grad_x, grad_v0, pchunks, return_v, steps, n, c); break;
    case at::kBFloat16:
      backward_dispatch<at::BFloat16>(h_seq, grad_s, grad_v, grad_x, grad_v0, pchunks, return_v, steps, n, c); break;
    default: TORCH_CHECK(false, "h_seq: unsupported dtype ", h_seq.scalar_type());
  }
  at::Tensor gvth = need_vth ? chunks.sum() : at::empty({0}, h_seq.options().dtype(at::kDouble));
  return {grad_x, need_v0 ? grad_v0 : at::empty({0}, h_seq.options()), gvth};
}

// Release the recycled output buffers; returns the number of bytes freed.
int64_t empty_cache() { return cpubuf::release_cache(); }

int64_t cached_bytes() { return cpubuf::cached_bytes(); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Fused multi-step LIF forward/backward on the CPU (step code: cuda/lif_step.cuh)";
  m.def("forward", &lif_forward, "fused LIF forward");
  m.def("backward", &lif_backward, "fused LIF backward");
  m.def("empty_cache", &empty_cache, "free the recycled output buffers; returns bytes freed");
  m.def("cached_bytes", &cached_bytes, "bytes held by the output-buffer cache");
}
