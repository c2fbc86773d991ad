// Stored 8-bit images to float32 model input on the CPU, in one pass: rows picked, pixels
// permuted, scaled and shifted.
//
//   out[i, j] = (float(images[rows[i], perm[j]]) · scale) + shift      (float32, two roundings)
//
// These are the float operations of the torch ops it replaces (spiking/kernels/pixels.py's
// reference: to float32, mul, add), so the result is identical. A pixel has 256 values: their 256
// results are computed first and each output element is a table lookup. Rows split over threads.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cstdint>

namespace {

at::Tensor pixels(const at::Tensor& images, const at::Tensor& rows, const at::Tensor& perm, double scale,
                  double shift) {
  RECORD_FUNCTION("spiking::pixels", std::vector<c10::IValue>({images}));
  TORCH_CHECK(images.dim() == 2 && images.scalar_type() == at::kByte && images.is_contiguous() &&
              images.device().is_cpu(), "pixels: images must be a contiguous uint8 CPU tensor [N, P], got ",
              images.sizes(), " ", images.scalar_type());
  TORCH_CHECK(rows.dim() == 1 && rows.scalar_type() == at::kLong && rows.device().is_cpu(),
              "pixels: rows must be a 1-d int64 CPU tensor");
  const int64_t N = images.size(0), P = images.size(1), n = rows.size(0);
  const bool permuted = perm.numel() > 0;
  TORCH_CHECK(!permuted || (perm.dim() == 1 && perm.size(0) == P && perm.scalar_type() == at::kLong &&
                            perm.device().is_cpu()), "pixels: perm must be empty or int64 [", P, "]");
  const at::Tensor r = rows.contiguous(), pm = perm.contiguous();
  const int64_t* rp = r.data_ptr<int64_t>();
  const int64_t* pp = permuted ? pm.data_ptr<int64_t>() : nullptr;
  for (int64_t i = 0; i < n; ++i)
    TORCH_CHECK_INDEX(rp[i] >= 0 && rp[i] < N, "pixels: row ", rp[i], " out of range for ", N, " images");
  for (int64_t j = 0; permuted && j < P; ++j)
    TORCH_CHECK_INDEX(pp[j] >= 0 && pp[j] < P, "pixels: perm entry ", pp[j], " out of range for ", P, " pixels");
  const float sc = (float)scale, sh = (float)shift;
  float table[256];
  for (int v = 0; v < 256; ++v) table[v] = (float)v * sc + sh;
  at::Tensor out = at::empty({n, P}, images.options().dtype(at::kFloat));
  const uint8_t* src = images.data_ptr<uint8_t>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, n, std::max<int64_t>(1, 32768 / std::max<int64_t>(P, 1)), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const uint8_t* row = src + rp[i] * P;
      float* y = o + i * P;
      if (permuted)
        for (int64_t j = 0; j < P; ++j) y[j] = table[row[pp[j]]];
      else
        for (int64_t j = 0; j < P; ++j) y[j] = table[row[j]];
    }
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Stored 8-bit images to float32 model input in one pass";
  m.def("pixels", &pixels, "float32 [n, P]: images[rows][:, perm] * scale + shift (perm empty: not permuted)");
}
