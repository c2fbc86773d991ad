#!/usr/bin/env bash
# Installs spiking (editable) with test, plotting and peer-library extras into the active Python,
# then builds its native code (`spiking build`).
# torch is pinned to the CPU build that lies on this project's machines unless SPIKING_TORCH says
# otherwise (e.g. SPIKING_TORCH="torch" for your platform's default build, or "" to keep yours).
# snnTorch, Norse and SpikingJelly are installed with --no-deps: their declared dependencies would
# pull a multi-GB CUDA torch (and torchvision/torchaudio that they do not need for our use).
set -euo pipefail
cd "$(dirname "$0")"
PIP="python -m pip"
TORCH_SPEC="${SPIKING_TORCH-torch==2.13.0}"
if [ -n "$TORCH_SPEC" ] && ! python -c "import torch" 2>/dev/null; then
    $PIP install "$TORCH_SPEC"
fi
$PIP install -e ".[test,plot,sweep]"
$PIP install --no-deps "snntorch==1.0.0" "norse==1.1.0" "spikingjelly==2.0.0"
$PIP install "nir" "nirtorch" "loguru"
# compile the native code now (fused CPU LIF, Sparsey C library) into ~/.cache/spiking, not at first use
python -m spiking.cli build || echo "install.sh: warning: a native build failed (reason above); spiking will use its slower torch paths" >&2
python -c "import spiking, torch; print('spiking', spiking.__version__, 'with torch', torch.__version__)"
