"""``export(model, sample_input, dt) -> nir.NIRGraph``: our layers and neurons as NIR nodes.

Mappings (``k`` steps of ``dt`` = time ``k·dt``; ``docs/nir.md``):

* ``nn.Linear`` → ``Affine`` (``Linear`` without bias); ``nn.Conv2d`` → ``Conv2d``; ``nn.Flatten``,
  ``nn.AvgPool2d``, ``SumPool2d``, ``Scale`` → the NIR node of that name (inside
  :class:`~spiking.nir.layers.TimeDistributed` or not).
* ``LIF`` / shared or per-channel ``PLIF`` → ``LIF(tau = tau·dt, v_leak = v_reset, v_reset,
  r = 1 (decay_input) or tau)``: NIR's Euler step ``v += dt/tau_nir ((v_leak − v) + r x)`` is then
  exactly our charge. ``IF`` → ``IF(r = 1/dt)``; ``CubaLIF`` → ``CubaLIF(w_in = tau_syn)``;
  ``LI`` → ``LI``; ``RLIF`` → a subgraph ``input → LIF ⇄ Affine → output`` (snnTorch's layout).
* Soft reset has no NIR 1.0 equivalent: it is written as ``v_reset = 0`` with
  ``metadata["spiking"]["soft_reset"] = True`` (read by :func:`spiking.nir.load`, ignored by other
  tools, which then reset to 0; a ``UserWarning`` says so).

Every neuron node carries its constructor arguments in ``node.metadata["spiking"]`` (training-only
options such as the surrogate included), so ours → NIR → ours is exact. ``HLOPMLP`` (BPTT/OTTT)
and ``SpikingMLP`` export as their per-step chain; the graph's metadata records that the input
current is constant over ``time_steps`` and that the readout is the output's mean over time.
Refused with a message: DSR neurons (a rate readout over the whole sequence), HLOP's lateral
banks, ALIF (NIR 1.0 has no adaptive threshold) and any other module.
"""

from __future__ import annotations

import warnings
from typing import Iterable

import nir
import numpy as np
import torch
from torch import nn

from ..models import SpikingMLP
from ..neuron import ALIF, IF, LI, LIF, PLIF, RLIF, CubaLIF
from ..neuron.dsr import DSRLIF
from .layers import Scale, SumPool2d, TimeDistributed

__all__ = ["export"]


def _full(value, shape) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, dtype=np.float64), tuple(shape)).copy()


def _sg(cfg_or_module) -> tuple:
    s = cfg_or_module.surrogate
    return (s.name, s.param)


def _neuron_meta(m: nn.Module) -> dict:
    """Constructor arguments of one of our neurons (what ``load`` rebuilds it from)."""
    if isinstance(m, LIF):
        vth = float(m.v_threshold.detach()) if isinstance(m.v_threshold, torch.Tensor) else m.v_threshold
        return dict(module="LIF", tau=m.tau, v_threshold=vth, v_reset=m.v_reset, decay_input=m.decay_input,
                    detach_reset=m.detach_reset, surrogate=_sg(m), learn_threshold=isinstance(m.v_threshold,
                                                                                              torch.Tensor))
    cfg = m.config()
    if isinstance(m, LI):
        return dict(module="LI", tau=m.tau, v_leak=m._p.v_leak, decay_input=cfg.decay_input)
    common = dict(v_reset=None if not cfg.hard else m.v_reset, detach_reset=cfg.detach_reset, surrogate=_sg(cfg))
    if isinstance(m, IF):
        return dict(module="IF", v_threshold=m.v_threshold, **common)
    if isinstance(m, PLIF):
        return dict(module="PLIF", w=m.w.detach().double().flatten().tolist(), channels=m.w.numel() if m.w.dim() else
                    None, v_threshold=m.v_threshold, decay_input=cfg.decay_input, **common)
    if isinstance(m, CubaLIF):
        return dict(module="CubaLIF", tau_syn=m.tau_syn, tau_mem=m.tau_mem, v_threshold=m._p.v_threshold,
                    decay_input=cfg.decay_input, **common)
    raise TypeError(type(m).__name__)


def _encode(meta: dict) -> dict:
    """Metadata NIR files can store (``nir.write``): no ``None``, no mixed tuples."""
    out = {}
    for k, v in meta.items():
        if k == "surrogate":
            out["surrogate"], out["surrogate_param"] = v[0], float(v[1])
        elif k == "v_reset" and v is None:
            out["soft_reset"] = True
        elif v is not None:
            out[k] = v
    return out


def _warn_soft(name: str, meta: dict) -> None:
    if meta.get("v_reset", 0.0) is None:
        warnings.warn(f"NIR export: node {name!r} uses a soft reset (subtract the threshold), which NIR 1.0 "
                      "cannot express; it is written as v_reset = 0 and only spiking.nir.load restores it",
                      UserWarning, stacklevel=4)


def _lif_node(name: str, tau_steps, v_threshold, v_reset, decay_input: bool, shape, dt: float, meta: dict):
    rest = 0.0 if v_reset is None else v_reset
    tau = np.broadcast_to(np.asarray(tau_steps, dtype=np.float64), tuple(shape))
    _warn_soft(name, meta)
    return nir.LIF(tau=tau * dt, r=np.ones(shape) if decay_input else tau.copy(), v_leak=_full(rest, shape),
                   v_threshold=_full(v_threshold, shape), v_reset=_full(rest, shape),
                   metadata={"spiking": _encode(meta)})


def _neuron_node(name: str, m: nn.Module, shape, dt: float):
    if isinstance(m, (ALIF,)):
        raise ValueError(f"NIR export: {name!r} is an ALIF; NIR 1.0 has no adaptive-threshold neuron, so it "
                         "cannot be exported")
    meta = _neuron_meta(m)
    if isinstance(m, LIF):
        return _lif_node(name, m.tau, meta["v_threshold"], m.v_reset, m.decay_input, shape, dt, meta)
    if isinstance(m, PLIF):
        k = torch.sigmoid(m.w.detach().double())
        tau = (1.0 / k).reshape(-1, *([1] * (len(shape) - 1))) if k.dim() else 1.0 / k
        return _lif_node(name, tau.numpy(), m.v_threshold, meta["v_reset"], meta["decay_input"], shape, dt, meta)
    rest = 0.0 if meta.get("v_reset") is None else meta["v_reset"]
    if isinstance(m, IF):
        _warn_soft(name, meta)
        return nir.IF(r=_full(1.0 / dt, shape), v_threshold=_full(m.v_threshold, shape), v_reset=_full(rest, shape),
                      metadata={"spiking": _encode(meta)})
    if isinstance(m, CubaLIF):
        _warn_soft(name, meta)
        return nir.CubaLIF(tau_syn=_full(m.tau_syn * dt, shape), tau_mem=_full(m.tau_mem * dt, shape),
                           r=_full(1.0 if meta["decay_input"] else m.tau_mem, shape), v_leak=_full(rest, shape),
                           v_threshold=_full(meta["v_threshold"], shape), v_reset=_full(rest, shape),
                           w_in=_full(m.tau_syn, shape), metadata={"spiking": _encode(meta)})
    return nir.LI(tau=_full(m.tau * dt, shape), r=_full(1.0 if meta["decay_input"] else m.tau, shape),
                  v_leak=_full(meta["v_leak"], shape), metadata={"spiking": _encode(meta)})


def _pair(v) -> np.ndarray:
    return np.array(v if isinstance(v, (tuple, list)) else (v, v))


def _layer_node(name: str, m: nn.Module, x: torch.Tensor, dt: float):
    """NIR node for layer ``m`` whose multi-step input is ``x [T, B, ...]``."""
    shape = tuple(x.shape[2:])
    if isinstance(m, TimeDistributed):
        m = m.module
    if isinstance(m, nn.Linear):
        w = m.weight.detach().double().numpy()
        if m.bias is None:
            return nir.Linear(weight=w)
        return nir.Affine(weight=w, bias=m.bias.detach().double().numpy())
    if isinstance(m, nn.Conv2d):
        bias = m.bias.detach().double().numpy() if m.bias is not None else np.zeros(m.out_channels)
        return nir.Conv2d(input_shape=shape[-2:], weight=m.weight.detach().double().numpy(), stride=m.stride,
                          padding=m.padding, dilation=m.dilation, groups=m.groups, bias=bias)
    if isinstance(m, nn.Flatten):
        end = m.end_dim - 1 if m.end_dim >= 0 else m.end_dim  # NIR counts dims without the batch
        return nir.Flatten(input_type={"input": np.array(shape)}, start_dim=m.start_dim - 1, end_dim=end)
    if isinstance(m, (SumPool2d, nn.AvgPool2d)):
        if m.ceil_mode or (not isinstance(m, SumPool2d) and (not m.count_include_pad and np.any(_pair(m.padding))
                                                             or m.divisor_override)):
            raise ValueError(f"NIR export: {name!r}: AvgPool2d with ceil_mode, divisor_override or "
                             "count_include_pad=False with padding has no NIR equivalent")
        stride = m.stride if m.stride is not None else m.kernel_size
        cls = nir.SumPool2d if isinstance(m, SumPool2d) else nir.AvgPool2d
        return cls(kernel_size=_pair(m.kernel_size), stride=_pair(stride), padding=_pair(m.padding))
    if isinstance(m, Scale):
        return nir.Scale(scale=_full(m.scale.double().numpy(), shape))
    if isinstance(m, RLIF):
        return _rlif_graph(name, m, shape, dt)
    if isinstance(m, (LIF, IF, PLIF, CubaLIF, LI, ALIF)):
        return _neuron_node(name, m, shape, dt)
    if isinstance(m, DSRLIF):
        raise ValueError(f"NIR export: {name!r} is a DSR neuron, whose output is a weighted firing rate read over "
                         "the whole sequence (a rate readout), not a per-step spike; NIR cannot express it")
    raise ValueError(f"NIR export: {name!r} ({type(m).__name__}) has no NIR mapping; supported: Linear, Conv2d, "
                     "Flatten, AvgPool2d, SumPool2d, Scale, LIF, IF, PLIF, CubaLIF, LI, RLIF")


def _rlif_graph(name: str, m: RLIF, shape, dt: float) -> nir.NIRGraph:
    kw = m.kw
    meta = dict(module="RLIF", features=m.features, tau=kw["tau"], v_threshold=kw["v_threshold"],
                v_reset=kw["v_reset"], decay_input=kw["decay_input"], detach_reset=kw["detach_reset"],
                surrogate=(kw["surrogate"].name, kw["surrogate"].param), bias=m.recurrent.bias is not None)
    lif = _lif_node(name, kw["tau"], kw["v_threshold"], kw["v_reset"], kw["decay_input"], shape, dt, meta)
    rec = _layer_node(name, m.recurrent, torch.zeros(1, 1, *shape), dt)
    nodes = {"input": nir.Input(input_type={"input": np.array(shape)}), "lif": lif, "w_rec": rec,
             "output": nir.Output(output_type={"output": np.array(shape)})}
    edges = [("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"spiking": _encode(meta)})


def _is_hlop(model) -> bool:
    from ..plasticity.networks import HLOPMLP

    return isinstance(model, HLOPMLP)


def _layers(model, sample: torch.Tensor) -> tuple[list, torch.Tensor, dict]:
    """``(named layers in order, multi-step input [T, B, ...], graph metadata)``."""
    from ..plasticity.hlop import HLOP, LateralBank

    if isinstance(model, (HLOP, LateralBank)):
        raise TypeError("NIR export: HLOP's lateral banks are a training-time device (Hebbian subspaces that project "
                        "weight updates) with no NIR node; export the network they train instead (hlop.model)")
    if _is_hlop(model) or isinstance(model, SpikingMLP):
        if _is_hlop(model) and model.method == "dsr":
            raise ValueError("NIR export: an HLOPMLP with method='dsr' uses DSR neurons, whose output is a rate "
                             "readout over the whole sequence; NIR cannot express it (BPTT/OTTT networks export)")
        neurons = model.neurons if _is_hlop(model) else model.lifs
        layers = [("fcs_0", model.fcs[0])]
        for i, (nrn, fc) in enumerate(zip(neurons, model.fcs[1:])):
            layers += [(f"neurons_{i}", nrn), (f"fcs_{i + 1}", fc)]
        x = sample.reshape(sample.shape[0], -1)
        x = x.unsqueeze(0).expand(model.T, *x.shape)
        meta = {"time_steps": model.T, "input": "the same input at every one of time_steps steps",
                "readout": "mean over the time steps of the output"}
        return layers, x, meta
    if not isinstance(sample, torch.Tensor) or sample.dim() < 3:
        raise ValueError(f"sample_input must be a tensor [T, B, ...] (one multi-step batch), got "
                         f"{getattr(sample, 'shape', type(sample).__name__)}")
    return list(_flatten(model, "")), sample, {"time_steps": int(sample.shape[0])}


def _flatten(m: nn.Module, prefix: str) -> Iterable:
    if isinstance(m, nn.Sequential):
        for child_name, child in m.named_children():
            yield from _flatten(child, f"{prefix}_{child_name}" if prefix else child_name)
    else:
        yield (prefix or type(m).__name__.lower(), m)


def export(model: nn.Module, sample_input: torch.Tensor, dt: float = 1e-4) -> nir.NIRGraph:
    """The NIR graph of ``model`` (a chain: ``nn.Sequential``, ``HLOPMLP``, ``SpikingMLP`` or one layer).

    ``sample_input``: what ``model`` takes (``[T, B, ...]`` for a Sequential of our multi-step
    layers, ``[B, ...]`` for the MLPs); it sizes every node. ``dt`` (seconds per step, default
    1e-4, the step snnTorch's importer assumes) is stored in ``graph.metadata["dt"]``.
    """
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not dt > 0 or not np.isfinite(dt):
        raise ValueError(f"dt must be a positive finite number of seconds per step, got {dt!r}")
    layers, x, meta = _layers(model, sample_input)
    nodes = {"input": nir.Input(input_type={"input": np.array(x.shape[2:])})}
    edges, prev = [], "input"
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for name, layer in layers:
                nodes[name] = _layer_node(name, layer, x, float(dt))
                x = layer(x)
                edges.append((prev, name))
                prev = name
    finally:
        model.train(was_training)
    nodes["output"] = nir.Output(output_type={"output": np.array(x.shape[2:])})
    edges.append((prev, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": float(dt), "source": "spiking", **meta})
