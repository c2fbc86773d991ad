// float32 instantiations of the neuron template's CPU loops (see neuron_cpu_loops.h).
#include "neuron_cpu_loops.h"

namespace nrn_cpu {
void run_float(int64_t id, Forward& job) { dispatch<float>(id, job); }
void run_float(int64_t id, Backward& job) { dispatch<float>(id, job); }
}  // namespace nrn_cpu
