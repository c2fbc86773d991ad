#!/usr/bin/env bash
# Every GPU check in one run, for a machine with a CUDA device (device time is short: start it early).
#
#   bash bench/gpu_checks.sh [OUT] [STEP...]    # OUT: folder for logs and JSON (default bench/results)
#
# Needs torch with CUDA and CuPy (cupy-cuda13x) in the active Python (PYTHON overrides `python`).
# STEPs (default: all, in this order; a failed step is reported and the next one still runs):
#   tests       the native CPU libraries built in parallel (the references of several tests), then
#               the GPU tests (`pytest -m gpu`, 8 workers with pytest-xdist: fused CUDA kernels against
#               their CPU/torch references, CUDA graphs against eager, native ops)  -> gpu_tests.log
#   calls       the host cost of one layer call (default LIF / IF, peers; the
#               C++ launcher against the CuPy one in the same run)                  -> call_overhead_gpu.json
#   lif         LIF throughput against the peers, roofline at batch 64 and 256
#               (rows: default, unchecked, graphed, CuPy launcher)                  -> lif_throughput_gpu.json
#   neurons     the neuron family's throughput against the peers                    -> neuron_throughput_gpu.json
#   overhead    ops, host syncs and time per training step of every method          -> step_overhead_gpu.json
#   hlop-graph  HLOP-DSR in the paper configuration, 3 seeds at once, CUDA graphs   -> hlop_pmnist_dsr_graph_gpu.json
#   hlop        the same without CUDA graphs (eager)                                -> hlop_pmnist_dsr_gpu.json
# STEP_TIMEOUT (seconds, default none) stops a step that runs longer (the run goes on with the next).
# Seen on an H200 machine (16 host cores) on 2026-11-30, to plan a lease: build ~130 s (cold cache),
# tests ~190 s (8 workers), calls 166 s at 7 x 2,000 calls (now 5 x 500), lif 16 s, hlop-graph 39 s,
# hlop 63 s; one `run` call may last 10 minutes, so split the steps over two calls.
# The HLOP steps run each seed as its own process (`--in-process`: no Ray needed), three at a time on
# the one GPU, and combine them with `--merge`.
set -u
OUT=${1:-bench/results}
shift || true
STEPS=${*:-tests calls lif neurons overhead hlop-graph hlop}
PY=${PYTHON:-python}
LIMIT=${STEP_TIMEOUT:-0}
mkdir -p "$OUT"
if ! $PY -c "import torch, cupy, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_checks: no CUDA device, or torch without CUDA, or no CuPy in $PY: nothing to run" >&2
  exit 2
fi
$PY -c "import torch; print('device:', torch.cuda.get_device_name(0))"
failed=0
step() {  # step NAME COMMAND...: run (within STEP_TIMEOUT), keep going on failure
  local name=$1 t0=$SECONDS
  shift
  echo "== $name: $*"
  if ! timeout "$LIMIT" "$@"; then
    echo "== $name FAILED" >&2
    failed=$((failed + 1))
  fi
  echo "== $name took $((SECONDS - t0)) s"
}
hlop_seeds() {  # hlop_seeds NAME [FLAGS...]: seeds 2022, 1, 2 at once, one process each, then merged
  local name=$1 pids=() parts=() s rc=0
  shift
  # the native libraries built first, as install.sh does (`spiking build`), so no run starts on the
  # CuPy launcher while the C++ one compiles in the background
  $PY -m spiking.cli build >/dev/null || echo "gpu_checks: spiking build reported a failure" >&2
  for s in 2022 1 2; do
    $PY bench/hlop_pmnist.py --methods hlop --seeds $s --device cuda --jobs 3 --in-process "$@" \
      --out "$OUT/${name}_seed$s.json" --sweep-dir "${TMPDIR:-/tmp}/gpu_checks_${name}_$s" \
      >"$OUT/${name}_seed$s.log" 2>&1 &
    pids+=($!)
    parts+=("$OUT/${name}_seed$s.json")
  done
  for s in "${pids[@]}"; do wait "$s" || rc=1; done
  tail -n 3 "$OUT/${name}"_seed*.log
  [ $rc -eq 0 ] && $PY bench/hlop_pmnist.py --merge "${parts[@]}" --out "$OUT/$name.json" && rm -f "${parts[@]}"
}
prebuild() {  # the native libraries (the CPU references of the GPU tests, the CUDA launcher), one build each, at once
  local m
  for m in cpu rlif_cpu spike_matmul pixels dsr_stack oja_iterations online_lif neuron_cuda_node; do
    $PY -c "from spiking.kernels import $m as m; print('$m', m.available() if '$m' == 'cpu' else m.extension().available())" &
  done
  $PY -c "from spiking.memory import cpu as m; print('sparsey', m.available())" &
  wait
}
XDIST=$($PY -c "import xdist" 2>/dev/null && echo "-n 8")  # pytest-xdist: 8 workers on the one GPU
for s in $STEPS; do
  case $s in
    tests) export -f prebuild; export PY
           step build bash -c prebuild
           step tests bash -c "$PY -m pytest -q -rfE $XDIST -m gpu --continue-on-collection-errors -p no:cacheprovider \
             tests/ 2>&1 | tee '$OUT/gpu_tests.log'; exit \${PIPESTATUS[0]}" ;;
    calls) step calls $PY bench/call_overhead.py --device cuda --inner 500 --reps 5 --out "$OUT/call_overhead_gpu.json" ;;
    lif) step lif $PY bench/lif_throughput.py --device cuda --workloads lif_fwd,lif_fwd_bwd --reps 5 \
           --out "$OUT/lif_throughput_gpu.json" ;;
    neurons) step neurons $PY bench/neuron_throughput.py --device cuda --out "$OUT/neuron_throughput_gpu.json" ;;
    overhead) step overhead $PY bench/step_overhead.py --device cuda --out "$OUT/step_overhead_gpu.json" ;;
    hlop-graph) export -f hlop_seeds; export OUT PY
                step hlop-graph bash -c 'hlop_seeds hlop_pmnist_dsr_graph_gpu --cuda-graph' ;;
    hlop) export -f hlop_seeds; export OUT PY
          step hlop bash -c 'hlop_seeds hlop_pmnist_dsr_gpu' ;;
    *) echo "gpu_checks: unknown step $s" >&2; failed=$((failed + 1)) ;;
  esac
done
echo "gpu_checks: $failed step(s) failed"
exit $((failed > 0))
