// float64, fp16 and bf16 instantiations of the neuron template's CPU loops (see
// neuron_cpu_loops.h; fp16/bf16 only for the definitions that round per operation, STORAGE16).
#include "neuron_cpu_loops.h"

namespace nrn_cpu {
void run_double(int64_t id, Forward& job) { dispatch<double>(id, job); }
void run_double(int64_t id, Backward& job) { dispatch<double>(id, job); }
void run_half(int64_t id, Forward& job) { dispatch<at::Half>(id, job); }
void run_half(int64_t id, Backward& job) { dispatch<at::Half>(id, job); }
void run_bfloat16(int64_t id, Forward& job) { dispatch<at::BFloat16>(id, job); }
void run_bfloat16(int64_t id, Backward& job) { dispatch<at::BFloat16>(id, job); }
}  // namespace nrn_cpu
