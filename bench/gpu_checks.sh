#!/usr/bin/env bash
# Every GPU check in one run, for a machine with a CUDA device (device time is short: start it early).
#
#   bash bench/gpu_checks.sh [OUT]      # OUT: folder for the log and JSON files (default bench/results)
#
# Needs torch with CUDA and CuPy (cupy-cuda13x) in the active Python (PYTHON overrides `python`).
# In order, each step's output in OUT (a failed step is reported and the next one still runs):
#   1. the GPU tests (`pytest -m gpu`: fused CUDA kernels against their CPU/torch references,
#      CUDA graphs against eager, the native ops on CUDA)                      -> gpu_tests.log
#   2. LIF and neuron-family throughput against the peers on the GPU          -> *_gpu.json
#   3. the host overhead of a training step on the GPU                        -> step_overhead_gpu.json
#   4. the host cost of one layer call (default LIF / IF, peers) on the GPU   -> call_overhead_gpu.json
#   5. HLOP-DSR in the paper configuration, one seed, on the GPU (≈ 2–3 min)  -> hlop_pmnist_dsr_gpu.json
set -u
OUT=${1:-bench/results}
PY=${PYTHON:-python}
mkdir -p "$OUT"
if ! $PY -c "import torch, cupy, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_checks: no CUDA device, or torch without CUDA, or no CuPy in $PY: nothing to run" >&2
  exit 2
fi
$PY -c "import torch; print('device:', torch.cuda.get_device_name(0))"
failed=0
step() {  # step NAME COMMAND...: run, keep going on failure
  local name=$1
  shift
  echo "== $name: $*"
  if ! "$@"; then
    echo "== $name FAILED" >&2
    failed=$((failed + 1))
  fi
}
step tests bash -c "$PY -m pytest -q -m gpu tests/ 2>&1 | tee '$OUT/gpu_tests.log'; exit \${PIPESTATUS[0]}"
step lif $PY bench/lif_throughput.py --device cuda --out "$OUT/lif_throughput_gpu.json"
step neurons $PY bench/neuron_throughput.py --device cuda --out "$OUT/neuron_throughput_gpu.json"
step overhead $PY bench/step_overhead.py --device cuda --out "$OUT/step_overhead_gpu.json"
step calls $PY bench/call_overhead.py --device cuda --out "$OUT/call_overhead_gpu.json"
step hlop $PY bench/hlop_pmnist.py --methods hlop --seeds 2022 --device cuda \
  --out "$OUT/hlop_pmnist_dsr_gpu.json" --sweep-dir "${TMPDIR:-/tmp}/hlop_gpu_checks"
echo "gpu_checks: $failed step(s) failed"
exit $((failed > 0))
