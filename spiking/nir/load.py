"""``load(graph, dt) -> NIRNetwork``: a NIR chain as our multi-step layers and neurons.

The graph must be a chain ``Input → … → Output`` (nested graphs only for a recurrent LIF:
``input → LIF ⇄ Affine/Linear → output``, loaded as :class:`~spiking.RLIF`). Each node becomes:

* ``Affine``/``Linear`` → ``nn.Linear``; ``Conv2d``, ``Flatten``, ``AvgPool2d``, ``SumPool2d`` →
  the layer inside :class:`~spiking.nir.layers.TimeDistributed`; ``Scale`` → ``Scale``.
* ``LIF`` → ``LIF(tau = tau_nir/dt, v_reset, v_rest = v_leak)``: ``r = tau_nir/dt`` gives
  ``decay_input=False``, otherwise ``decay_input=True`` with a ``Scale(r)`` in front when r ≠ 1
  (NIR's Euler step ``v += dt/tau ((v_leak − v) + r x)``). ``IF`` → ``IF`` after ``Scale(r·dt)``;
  ``CubaLIF`` → ``CubaLIF`` (input scale ``w_in·dt/tau_syn``, and ``r`` as for LIF); ``LI`` → ``LI``.
* Nodes written by :func:`spiking.nir.export` carry their constructor arguments in
  ``metadata["spiking"]``; when those agree with the node's NIR parameters the neuron is rebuilt
  from them (soft reset, surrogate and a learned PLIF tau come back exactly).

Bad graphs raise ``ValueError`` naming the node: unsupported node types, branches, cycles,
parameters that vary across neurons where our layer takes one value, ``v_leak ≠ v_reset``, and
shapes that do not fit (every layer is tried on a zero input of its NIR input shape).
"""

from __future__ import annotations

from typing import Optional

import nir
import numpy as np
import torch
from torch import nn

from ..neuron import IF, LI, LIF, PLIF, RLIF, CubaLIF
from .layers import Scale, SumPool2d, TimeDistributed

__all__ = ["load", "NIRNetwork"]


class NIRNetwork(nn.Sequential):
    """A loaded NIR chain: ``x [T, B, ...]`` → output ``[T, B, ...]``; ``dt`` and ``metadata`` kept."""

    def __init__(self, layers, dt: float, metadata: dict):
        super().__init__(*layers)
        self.dt = dt
        self.metadata = dict(metadata)


def _arr(node_name: str, field: str, value, shape) -> np.ndarray:
    a = np.asarray(0.0 if value is None else value, dtype=np.float64)
    try:
        np.broadcast_shapes(a.shape, tuple(shape))
    except ValueError:
        raise ValueError(f"NIR node {node_name!r}: {field} has shape {a.shape} but the node's input has shape "
                         f"{tuple(shape)}") from None
    return a


def _one(node_name: str, field: str, value, shape) -> float:
    """The single value of a per-neuron parameter (``ValueError`` if it varies across neurons)."""
    a = _arr(node_name, field, value, shape)
    first = float(a.flat[0])
    if not np.allclose(a, first, rtol=1e-7, atol=0.0):
        raise ValueError(f"NIR node {node_name!r}: {field} varies across neurons (from {a.min():g} to {a.max():g}); "
                         "the spiking layer takes one value per layer")
    return first


def _same(a: float, b: float) -> bool:
    return bool(np.isclose(a, b, rtol=1e-6, atol=1e-12))


def _reset(name: str, node, shape) -> float:
    v_reset = _one(name, "v_reset", node.v_reset, shape)
    v_leak = _one(name, "v_leak", node.v_leak, shape)
    if not _same(v_leak, v_reset):
        raise ValueError(f"NIR node {name!r}: v_leak = {v_leak:g} differs from v_reset = {v_reset:g}; spiking's "
                         "neurons rest at their reset potential")
    return v_reset


def _scaled(scale: np.ndarray, module: nn.Module, shape) -> list:
    if np.allclose(scale, 1.0, rtol=1e-7, atol=0.0):
        return [module]
    return [Scale(torch.as_tensor(np.broadcast_to(scale, tuple(shape)).copy())), module]


def _meta(node) -> Optional[dict]:
    """Decoded ``metadata["spiking"]`` (our constructor arguments) or ``None``."""
    raw = (getattr(node, "metadata", None) or {}).get("spiking")
    if not isinstance(raw, dict) or "module" not in raw:
        return None
    meta = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in raw.items()}
    meta["module"] = str(meta["module"])
    if "surrogate" in meta:
        meta["surrogate"] = (str(meta["surrogate"]), float(meta.pop("surrogate_param")))
    if meta.pop("soft_reset", False):
        meta["v_reset"] = None
    if "w" in meta:
        meta["w"] = np.asarray(meta["w"], dtype=np.float64).reshape(-1).tolist()
    return meta


def _charge_form(name, r, tau_steps, shape):
    """(decay_input, input scale) for NIR's ``r`` and a time constant of ``tau_steps`` steps."""
    r = _arr(name, "r", r, shape)
    if np.allclose(r, tau_steps, rtol=1e-6, atol=0.0):
        return False, np.ones(())
    return True, r


def _from_meta(meta: dict, name: str, derived: dict) -> Optional[nn.Module]:
    """Rebuild from ``metadata["spiking"]`` if it agrees with the NIR-derived values."""
    for key, value in derived.items():
        m = meta.get(key, value)
        if (m is None) != (value is None) or (m is not None and not _same(float(m), float(value))):
            return None
    kw = {k: v for k, v in meta.items() if k not in ("module", "w", "bias", "features")}
    if meta["module"] == "PLIF":
        mod = PLIF(**kw)
        with torch.no_grad():
            mod.w.copy_(torch.tensor(meta["w"], dtype=torch.float64).reshape(mod.w.shape))
        return mod
    if meta["module"] == "LIF":
        return LIF(**kw)
    return {"IF": IF, "CubaLIF": CubaLIF, "LI": LI}[meta["module"]](**kw)


def _lif(name: str, node, dt: float, shape) -> list:
    meta = _meta(node)
    if meta is not None and meta.get("module") == "PLIF":
        tau_nir = _arr(name, "tau", node.tau, shape) / dt
        k = torch.sigmoid(torch.tensor(meta["w"], dtype=torch.float64))
        want = (1.0 / k).numpy()
        if tau_nir.size and np.allclose(np.unique(tau_nir), np.unique(want), rtol=1e-6):
            return [_from_meta(meta, name, {})]
    tau = _one(name, "tau", node.tau, shape) / dt
    v_reset = _reset(name, node, shape)
    v_th = _one(name, "v_threshold", node.v_threshold, shape)
    decay, scale = _charge_form(name, node.r, tau, shape)
    if meta is not None and meta.get("module") == "LIF":
        soft = meta.get("v_reset") is None
        mod = _from_meta(meta, name, dict(tau=tau, v_threshold=v_th, v_reset=None if soft else v_reset,
                                          decay_input=decay))
        if mod is not None and (not soft or v_reset == 0.0) and np.all(scale == 1.0):
            return [mod]
    return _scaled(scale, LIF(tau=tau, v_threshold=v_th, v_reset=v_reset, decay_input=decay), shape)


def _if(name: str, node, dt: float, shape) -> list:
    v_th = _one(name, "v_threshold", node.v_threshold, shape)
    v_reset = _one(name, "v_reset", node.v_reset, shape)
    scale = _arr(name, "r", node.r, shape) * dt
    meta = _meta(node)
    if meta is not None and meta.get("module") == "IF" and np.allclose(scale, 1.0, rtol=1e-7, atol=0.0):
        mod = _from_meta(meta, name, dict(v_threshold=v_th, v_reset=None if meta.get("v_reset") is None else v_reset))
        if mod is not None:
            return [mod]
    return _scaled(scale, IF(v_threshold=v_th, v_reset=v_reset), shape)


def _cuba(name: str, node, dt: float, shape) -> list:
    tau_syn = _one(name, "tau_syn", node.tau_syn, shape) / dt
    tau_mem = _one(name, "tau_mem", node.tau_mem, shape) / dt
    v_reset = _reset(name, node, shape)
    v_th = _one(name, "v_threshold", node.v_threshold, shape)
    decay, r_scale = _charge_form(name, node.r, tau_mem, shape)
    scale = _arr(name, "w_in", node.w_in, shape) / tau_syn * r_scale
    meta = _meta(node)
    if meta is not None and meta.get("module") == "CubaLIF" and np.allclose(scale, 1.0, rtol=1e-7, atol=0.0):
        soft = meta.get("v_reset") is None
        mod = _from_meta(meta, name, dict(tau_syn=tau_syn, tau_mem=tau_mem, v_threshold=v_th,
                                          v_reset=None if soft else v_reset, decay_input=decay))
        if mod is not None:
            return [mod]
    return _scaled(scale, CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, v_threshold=v_th, v_reset=v_reset,
                                  decay_input=decay), shape)


def _li(name: str, node, dt: float, shape) -> list:
    tau = _one(name, "tau", node.tau, shape) / dt
    v_leak = _one(name, "v_leak", node.v_leak, shape)
    decay, scale = _charge_form(name, node.r, tau, shape)
    meta = _meta(node)
    if meta is not None and meta.get("module") == "LI" and np.all(scale == 1.0):
        mod = _from_meta(meta, name, dict(tau=tau, v_leak=v_leak, decay_input=decay))
        if mod is not None:
            return [mod]
    return _scaled(scale, LI(tau=tau, v_leak=v_leak, decay_input=decay), shape)


def _linear(node) -> nn.Linear:
    w = torch.as_tensor(np.asarray(node.weight), dtype=torch.float32)
    bias = getattr(node, "bias", None)
    lin = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    with torch.no_grad():
        lin.weight.copy_(w)
        if bias is not None:
            lin.bias.copy_(torch.as_tensor(np.asarray(bias), dtype=torch.float32))
    return lin


def _rlif(name: str, graph: nir.NIRGraph, dt: float, shape) -> list:
    lifs = [(k, n) for k, n in graph.nodes.items() if isinstance(n, nir.LIF)]
    recs = [(k, n) for k, n in graph.nodes.items() if isinstance(n, (nir.Affine, nir.Linear))]
    ok = len(graph.nodes) == 4 and len(lifs) == 1 and len(recs) == 1
    if ok:
        (lk, lif), (rk, rec) = lifs[0], recs[0]
        ok = {(lk, rk), (rk, lk)} <= set(map(tuple, graph.edges))
    if not ok:
        raise ValueError(f"NIR node {name!r}: a nested graph is supported only as a recurrent LIF "
                         "(input → LIF ⇄ Affine/Linear → output)")
    (cell,) = [m for m in _lif(f"{name}.{lk}", lif, dt, shape) if not isinstance(m, Scale)] or [None]
    if len(_lif(f"{name}.{lk}", lif, dt, shape)) != 1:
        raise ValueError(f"NIR node {name!r}: the recurrent LIF's r must be 1 or tau/dt")
    lin = _linear(rec)
    mod = RLIF(lin.in_features, tau=cell.tau, v_threshold=float(cell.v_threshold), v_reset=cell.v_reset,
               decay_input=cell.decay_input, detach_reset=cell.detach_reset, surrogate=cell.surrogate,
               bias=lin.bias is not None)
    mod.recurrent = lin
    return [mod]


def _modules(name: str, node, dt: float, shape) -> list:
    if isinstance(node, (nir.Affine, nir.Linear)):
        return [_linear(node)]
    if isinstance(node, nir.Conv2d):
        w = torch.as_tensor(np.asarray(node.weight), dtype=torch.float32)
        conv = nn.Conv2d(w.shape[1] * int(node.groups), w.shape[0], tuple(w.shape[-2:]),
                         stride=tuple(_pair(node.stride)),
                         padding=node.padding if isinstance(node.padding, str) else tuple(_pair(node.padding)),
                         dilation=tuple(_pair(node.dilation)), groups=int(node.groups))
        with torch.no_grad():
            conv.weight.copy_(w)
            conv.bias.copy_(torch.as_tensor(np.asarray(node.bias), dtype=torch.float32))
        return [TimeDistributed(conv)]
    if isinstance(node, nir.Flatten):
        end = node.end_dim + 1 if node.end_dim >= 0 else node.end_dim
        return [TimeDistributed(nn.Flatten(node.start_dim + 1, end))]
    if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        cls = SumPool2d if isinstance(node, nir.SumPool2d) else nn.AvgPool2d
        return [TimeDistributed(cls(tuple(_pair(node.kernel_size)), tuple(_pair(node.stride)),
                                    tuple(_pair(node.padding))))]
    if isinstance(node, nir.Scale):
        return [Scale(torch.as_tensor(np.asarray(node.scale, dtype=np.float64)))]
    if isinstance(node, nir.LIF):
        return _lif(name, node, dt, shape)
    if isinstance(node, nir.IF):
        return _if(name, node, dt, shape)
    if isinstance(node, nir.CubaLIF):
        return _cuba(name, node, dt, shape)
    if isinstance(node, nir.LI):
        return _li(name, node, dt, shape)
    if isinstance(node, nir.NIRGraph):
        return _rlif(name, node, dt, shape)
    raise ValueError(f"NIR node {name!r} ({type(node).__name__}) is not supported; supported nodes: Affine, Linear, "
                     "Conv2d, Flatten, AvgPool2d, SumPool2d, Scale, LIF, IF, CubaLIF, LI and a recurrent LIF subgraph")


def _pair(v):
    a = np.asarray(v).astype(int).reshape(-1)
    return (int(a[0]), int(a[0])) if a.size == 1 else tuple(int(i) for i in a)


def _chain(graph: nir.NIRGraph) -> list[str]:
    """Node names from the Input to the Output (``ValueError`` naming the node for anything else)."""
    inputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
    if len(inputs) != 1:
        raise ValueError(f"NIR graph: need exactly one Input node, found {inputs}")
    for a, b in graph.edges:
        for k in (a, b):
            if k not in graph.nodes:
                raise ValueError(f"NIR graph: edge ({a!r}, {b!r}) names a node {k!r} that is not in the graph")
    succ: dict[str, list[str]] = {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
    order, seen, cur = [], set(), inputs[0]
    while not isinstance(graph.nodes[cur], nir.Output):
        nxt = succ.get(cur, [])
        if len(nxt) != 1:
            raise ValueError(f"NIR node {cur!r}: feeds {len(nxt)} nodes {nxt}; spiking.nir.load reads chains "
                             "(one successor per node) ending in an Output node")
        cur = nxt[0]
        if cur in seen:
            raise ValueError(f"NIR node {cur!r}: the graph has a cycle outside a recurrent-LIF subgraph")
        seen.add(cur)
        order.append(cur)
    unused = set(graph.nodes) - seen - {inputs[0]}
    if unused:
        raise ValueError(f"NIR graph: nodes {sorted(unused)} are not on the Input → Output chain")
    return order[:-1]


def load(graph: nir.NIRGraph, dt: Optional[float] = None) -> NIRNetwork:
    """Our network for a NIR chain; ``dt`` (seconds per step) defaults to ``graph.metadata["dt"]``."""
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"graph must be a nir.NIRGraph, got {type(graph).__name__}")
    if dt is None:
        dt = (graph.metadata or {}).get("dt")
        if dt is None:
            raise ValueError("dt: the graph does not record its time step; pass dt= (snnTorch writes graphs for "
                             "dt = 1e-4; Norse 1.1's to_nir is consistent only for models built with dt = 1)")
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not dt > 0 or not np.isfinite(dt):
        raise ValueError(f"dt must be a positive finite number of seconds per step, got {dt!r}")
    (inp,) = [n for n in graph.nodes.values() if isinstance(n, nir.Input)] or [None]
    shape = tuple(int(s) for s in np.asarray(inp.input_type["input"]).reshape(-1)) if inp is not None else ()
    layers = []
    for name in _chain(graph):
        for module in _modules(name, graph.nodes[name], float(dt), shape):
            try:
                with torch.no_grad():
                    y = module(torch.zeros(1, 1, *shape))
            except (RuntimeError, ValueError) as exc:
                raise ValueError(f"NIR node {name!r}: does not fit its input of shape {shape}: {exc}") from None
            shape = tuple(y.shape[2:])
            layers.append(module)
    return NIRNetwork(layers, float(dt), graph.metadata or {})
