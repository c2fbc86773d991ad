"""What the bench scripts share about their records: the CUDA launcher in use, and the closing step
(stamp the end load average and write the JSON record)."""
from __future__ import annotations

import json
import os
from pathlib import Path


def write_record(info: dict, out) -> None:
    """``info["machine"]["loadavg_end"]`` = now, then ``info`` as indented JSON to ``out`` (folders made)."""
    info["machine"]["loadavg_end"] = os.getloadavg()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(info, indent=1))


def cuda_launcher() -> str:
    """Which launcher the CUDA neuron kernels use in this run, after waiting for a background build of
    the C++ launcher (a bench times the steady state; ``bench/first_call.py`` times first calls)."""
    from spiking.kernels import neuron_cuda_node  # noqa: PLC0415

    if neuron_cuda_node.node(wait=True) is not None:
        return "c++ (spiking/kernels/neuron_cuda_node.cpp)"
    if os.environ.get(neuron_cuda_node.ENV) == "cupy":
        return f"cupy ({neuron_cuda_node.ENV}=cupy)"
    return f"cupy (the C++ launcher is unavailable: {neuron_cuda_node.extension().error()})"
