// Output buffers of the fused CPU extension (spiking/kernels/neuron_cpu_loops.h):
// recycled huge-page allocations (empty_big) and streaming row writers (write_row).
// Header-only; an extension (.so) that includes it has its own cache.
#pragma once

#include <torch/extension.h>

#include <sys/mman.h>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <utility>
#include <vector>

#include "lif_step.cuh"  // lif::Store (storage types of write_row)

namespace cpubuf {

// Outputs ([T, N] spikes, h_seq, grad_x) are written once, front to back. Fresh memory from the
// OS costs a page fault per 4 KiB plus zeroing, which for this single memory-bound pass costs as
// much as the LIF itself; glibc returns freed blocks of a few MiB to the OS, so without a cache
// every call pays it again (~1000 faults per forward+backward of [100, 16, 1024], measured). So
// buffers of at least CACHED_BYTES are (1) page-aligned, from 2 MiB on 2 MiB-aligned with
// transparent huge pages advised (one fault per 2 MiB), and (2) recycled: a freed buffer goes to
// a small cache (exact-size reuse, like torch's CUDA caching allocator) of at most MAX_BLOCKS
// blocks and cache_limit bytes ($SPIKING_CPU_CACHE_MB, default 1024; 0 disables; empty_cache()
// releases it).
constexpr size_t HUGE_PAGE = size_t(2) << 20;
constexpr size_t PAGE = size_t(4) << 10;
constexpr size_t CACHED_BYTES = size_t(256) << 10;
constexpr size_t MAX_BLOCKS = 64;

struct BufferCache {
  std::mutex mutex;
  std::vector<std::pair<size_t, void*>> blocks;
  size_t bytes = 0;
  size_t limit = 0;
  BufferCache() {
    const char* env = std::getenv("SPIKING_CPU_CACHE_MB");
    limit = (env ? size_t(std::max(0L, std::atol(env))) : size_t(1024)) << 20;
  }
};

inline BufferCache& cache() {
  static BufferCache* c = new BufferCache();  // never destroyed: deleters may run at exit
  return *c;
}

// padded: a multiple of PAGE, of HUGE_PAGE from HUGE_PAGE on. The most recently freed block of
// that size is reused (the likeliest to be still in the caches; a forward after a backward would
// otherwise cycle through the backward's buffers).
inline void* take_block(size_t padded) {
  {
    BufferCache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    for (size_t i = c.blocks.size(); i-- > 0;) {
      if (c.blocks[i].first == padded) {
        void* p = c.blocks[i].second;
        c.bytes -= padded;
        c.blocks.erase(c.blocks.begin() + i);
        return p;
      }
    }
  }
  const bool huge = padded >= HUGE_PAGE;
  void* p = std::aligned_alloc(huge ? HUGE_PAGE : PAGE, padded);
#ifdef MADV_HUGEPAGE
  if (p && huge) madvise(p, padded, MADV_HUGEPAGE);
#endif
  return p;
}

// Keeps p for reuse, evicting the oldest cached blocks to make room (shapes change over a run);
// a block larger than the whole cache is freed.
inline void give_block(void* p, size_t padded) {
  BufferCache& c = cache();
  std::vector<void*> evicted;
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    if (padded > c.limit) {
      evicted.push_back(p);
    } else {
      size_t drop = 0;
      while (drop < c.blocks.size() && (c.bytes + padded > c.limit || c.blocks.size() - drop >= MAX_BLOCKS)) {
        c.bytes -= c.blocks[drop].first;
        evicted.push_back(c.blocks[drop].second);
        ++drop;
      }
      c.blocks.erase(c.blocks.begin(), c.blocks.begin() + drop);
      c.blocks.emplace_back(padded, p);
      c.bytes += padded;
    }
  }
  for (void* q : evicted) std::free(q);
}

inline at::Tensor empty_big(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  int64_t numel = 1;
  for (auto s : sizes) numel *= s;
  const size_t nbytes = size_t(numel) * c10::elementSize(c10::typeMetaToScalarType(opts.dtype()));
  if (nbytes < CACHED_BYTES) return at::empty(sizes, opts);
  const size_t align = nbytes >= HUGE_PAGE ? HUGE_PAGE : PAGE;
  const size_t padded = (nbytes + align - 1) / align * align;
  void* ptr = take_block(padded);
  if (ptr == nullptr) return at::empty(sizes, opts);
  return at::from_blob(ptr, sizes, [padded](void* q) { give_block(q, padded); }, opts);
}

// Row writers. Large outputs (>= STREAM_BYTES) are written with non-temporal (streaming) stores:
// they bypass the cache and skip the read-for-ownership of every written line, which for this
// write-once pass is a third of the memory traffic (1.7x faster forward, measured). Small outputs
// use plain stores and stay in cache for the next layer.
constexpr size_t STREAM_BYTES = size_t(32) << 20;

template <typename T>
inline void write_row(T* dst, const typename lif::Store<T>::C* src, int64_t len, bool /*stream*/) {
  for (int64_t j = 0; j < len; ++j) dst[j] = lif::Store<T>::store(src[j]);
}

#if defined(__SSE2__)
template <>
inline void write_row<float>(float* dst, const float* src, int64_t len, bool stream) {
  int64_t j = 0;
  if (stream) {
#if defined(__AVX__)
    constexpr int64_t W = 8;
#else
    constexpr int64_t W = 4;
#endif
    for (; j < len && (reinterpret_cast<uintptr_t>(dst + j) % (W * 4)) != 0; ++j) dst[j] = src[j];
    for (; j + W <= len; j += W) {
#if defined(__AVX__)
      _mm256_stream_ps(dst + j, _mm256_loadu_ps(src + j));
#else
      _mm_stream_ps(dst + j, _mm_loadu_ps(src + j));
#endif
    }
  }
  for (; j < len; ++j) dst[j] = src[j];
}

template <>
inline void write_row<double>(double* dst, const double* src, int64_t len, bool stream) {
  int64_t j = 0;
  if (stream) {
    for (; j < len && (reinterpret_cast<uintptr_t>(dst + j) % 16) != 0; ++j) dst[j] = src[j];
    for (; j + 2 <= len; j += 2) _mm_stream_pd(dst + j, _mm_loadu_pd(src + j));
  }
  for (; j < len; ++j) dst[j] = src[j];
}

inline void stream_fence() { _mm_sfence(); }
#else
inline void stream_fence() {}
#endif

// Release the recycled output buffers; returns the number of bytes freed.
inline int64_t release_cache() {
  BufferCache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  const int64_t freed = int64_t(c.bytes);
  for (auto& b : c.blocks) std::free(b.second);
  c.blocks.clear();
  c.bytes = 0;
  return freed;
}

inline int64_t cached_bytes() {
  BufferCache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  return int64_t(c.bytes);
}

}  // namespace cpubuf
