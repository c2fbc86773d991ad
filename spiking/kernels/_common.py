"""Argument handling shared by the fused LIF backends (:mod:`.cpu`, :mod:`.cuda`).

Both backends take the arguments of :func:`spiking.neuron.functional.lif_multistep_torch` and
index ``x [T, B, ...]`` (contiguous) as ``[T, N]`` (N = neurons). The kernels save only ``h_seq`` (H_t) for
backward; see ``cuda/neurons/lif.cuh``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional, Union

import torch

from ..neuron.surrogate import Surrogate, get_surrogate

@dataclass(frozen=True)
class LifConfig:
    """Static configuration of one fused LIF call (everything but the tensors)."""

    tau: float
    v_threshold: float          # used when the threshold is a plain number
    v_reset: float              # hard-reset value (ignored for soft reset)
    hard: bool
    decay_input: bool
    detach_reset: bool
    sg_id: int
    sg_param: float
    return_v: bool
    check_x: bool = True        # raise ValueError when x holds NaN/inf (checked inside the kernel)


def device_ptr(t: Optional[torch.Tensor]):
    """A tensor's data pointer as the CuPy launchers pass it (``np.uint64``; 0 for ``None`` or empty)."""
    import numpy as np  # noqa: PLC0415  (torch has imported it already)

    return np.uint64(0 if t is None or t.numel() == 0 else t.data_ptr())


def nonfinite_x_error() -> ValueError:
    """The error a fused forward raises when its kernel saw NaN or ±inf in ``x`` (the message of
    :func:`spiking.neuron.functional.check_input`, which the torch reference path still runs)."""
    return ValueError("x contains NaN or inf")


def make_config(
    tau: float,
    v_threshold: Union[float, torch.Tensor],
    v_reset: Optional[float],
    decay_input: bool,
    detach_reset: bool,
    surrogate: Union[str, Surrogate, tuple],
    return_v: bool,
    check_x: bool = True,
) -> tuple[LifConfig, Optional[torch.Tensor]]:
    """Return the static config and the threshold tensor (``None`` for a plain-number threshold).

    The config of a plain-number threshold is built once per distinct argument tuple and reused
    (every call of a layer passes the same values; building it costs more than a small kernel)."""
    if isinstance(v_threshold, torch.Tensor):
        return _config(tau, 0.0, v_reset, decay_input, detach_reset, surrogate, return_v, check_x), v_threshold
    args = (tau, v_threshold, v_reset, decay_input, detach_reset, surrogate, return_v, check_x)
    try:
        cfg = _configs.get(args)
    except TypeError:  # an unhashable argument: built afresh (and any real TypeError raised from there)
        return _config(*args), None
    if cfg is None:
        if len(_configs) > 256:
            _configs.clear()
        cfg = _configs[args] = _config(*args)
    return cfg, None


def _config(tau, v_threshold, v_reset, decay_input, detach_reset, surrogate, return_v, check_x) -> LifConfig:
    sg = get_surrogate(surrogate)
    return LifConfig(
        tau=float(tau),
        v_threshold=float(v_threshold),
        v_reset=0.0 if v_reset is None else float(v_reset),
        hard=v_reset is not None,
        decay_input=bool(decay_input),
        detach_reset=bool(detach_reset),
        sg_id=sg.kernel_id,
        sg_param=float(sg.param),
        return_v=bool(return_v),
        check_x=bool(check_x),
    )


_configs: dict = {}


_constants: dict = {}


def constant(values: tuple, dtype: torch.dtype, device: torch.device, scalar: bool = False) -> torch.Tensor:
    """A small ``[len(values), 1]`` tensor of ``values`` (e.g. a layer's parameters), or with
    ``scalar`` the 0-dim tensor of the one value, made once per (values, dtype, device, scalar) and
    reused, since its users only read it: no tensor construction (and on a GPU no host-to-device
    copy) on every call."""
    key = (values, dtype, device, scalar)
    t = _constants.get(key)
    if t is None:
        if len(_constants) > 256:
            _constants.clear()
        with torch.inference_mode(False):  # a normal tensor even when first asked for under inference_mode:
            # a recorded call saves it for backward, which an inference tensor may not be
            data = float(values[0]) if scalar else [[v] for v in values]
            t = _constants[key] = torch.tensor(data, dtype=dtype, device=device)
    return t


def check_params(spec, params: tuple, scalar: bool, grad_mask: int) -> None:
    """``ValueError`` naming the parameter when the fused kernel of ``spec`` cannot take it: per-neuron
    values where the definition keeps one value per layer (``SCALAR_PARAMS``), or a tensor that
    requires grad where the definition gives no gradient (``GRAD_PARAMS``)."""
    fields = spec.params._fields
    if scalar and any(p.numel() != 1 for p in params):
        raise ValueError(f"{spec.name}: the fused kernel takes one value per layer for each parameter {fields}, "
                         f"got per-neuron values")
    for k, (field, p) in enumerate(zip(fields, params)):
        if p.requires_grad and not grad_mask >> k & 1:
            raise ValueError(f"{spec.name}: parameter {field} has no gradient on the fused path; use the torch "
                             f"backend or a neuron that learns it")


def needs_grad(*tensors: Optional[torch.Tensor]) -> bool:
    """True when autograd is recording and any of the tensors requires grad."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def keeps_x(backward_reads_x: bool, nsave: int) -> bool:
    """Whether a fused neuron's graph must keep its input x: where the backward reads it, and
    where the forward saves nothing per step (x then gives the backward its shape and dtype)."""
    return bool(backward_reads_x) or nsave == 0


def check_v0(x: torch.Tensor, v0: Optional[torch.Tensor]) -> None:
    if v0 is None:
        return
    if v0.dtype != x.dtype:
        raise TypeError(f"v0 must have the dtype of x ({x.dtype}), got {v0.dtype}")
    if v0.device != x.device:
        raise ValueError(f"v0 must be on the device of x ({x.device}), got {v0.device}")
    if tuple(v0.shape) != tuple(x.shape[1:]):
        raise ValueError(f"v0 must have the shape of one time step {tuple(x.shape[1:])}, got {tuple(v0.shape)}")


class FusedOps(NamedTuple):
    """The fused LIF as a torch custom op (``op``, traced by ``torch.compile``), as an eager
    differentiable call (``eager``, an ``autograd.Function``'s ``apply`` or a C++ autograd node,
    with the same forward and backward: the custom-op Python wrapper costs ~0.1 ms per call, which
    dominates small and mid-sized eager steps), and the bare forward kernel (``forward(x, v0, vth,
    cfg) -> (spikes, v_out)``, for calls that record no gradient)."""

    op: object
    eager: object
    forward: object


def make_ops(tag: str, forward_impl, backward_impl, eager=None) -> FusedOps:
    """Register ``spiking::lif_{tag}_forward`` / ``_backward`` custom ops with autograd.

    ``forward_impl(x, v0, vth, v_threshold, tau, v_reset, hard, decay_input, save_h, return_v,
    check_x)`` returns ``(spikes, v_out, h_seq)`` (``h_seq`` empty unless ``save_h``) and, with
    ``check_x``, raises :func:`nonfinite_x_error` when its kernel read NaN/inf in x; ``backward_impl(h_seq,
    grad_s, grad_v, vth, v_threshold, tau, v_reset, hard, decay_input, detach_reset, sg_id,
    sg_param, return_v, need_v0, need_vth)`` returns ``(grad_x, grad_v0, grad_vth)`` (empty
    tensors where not needed; ``grad_vth`` float64). Custom ops keep ``torch.compile`` graphs whole.
    ``eager(x, v0, vth, cfg) -> (spikes, v_out)``: the backend's own differentiable call for eager
    calls that record a gradient (default: a Python ``autograd.Function`` over the two impls).
    """

    @torch.library.custom_op(f"spiking::lif_{tag}_forward", mutates_args=())
    def forward_op(
        x: torch.Tensor, v0: Optional[torch.Tensor], vth: Optional[torch.Tensor], v_threshold: float,
        tau: float, v_reset: float, hard: bool, decay_input: bool, detach_reset: bool, sg_id: int,
        sg_param: float, save_h: bool, return_v: bool, check_x: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return forward_impl(x, v0, vth, v_threshold, tau, v_reset, hard, decay_input, save_h, return_v, check_x)

    @forward_op.register_fake
    def _(x, v0, vth, v_threshold, tau, v_reset, hard, decay_input, detach_reset, sg_id, sg_param, save_h,
          return_v, check_x):
        v = torch.empty_like(x) if return_v else x.new_empty(x.shape[1:])
        h = torch.empty_like(x) if save_h else x.new_empty((0,))
        return torch.empty_like(x), v, h

    @torch.library.custom_op(f"spiking::lif_{tag}_backward", mutates_args=())
    def backward_op(
        h_seq: torch.Tensor, grad_s: Optional[torch.Tensor], grad_v: Optional[torch.Tensor],
        vth: Optional[torch.Tensor], v_threshold: float, tau: float, v_reset: float, hard: bool,
        decay_input: bool, detach_reset: bool, sg_id: int, sg_param: float, return_v: bool,
        need_v0: bool, need_vth: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return backward_impl(h_seq, grad_s, grad_v, vth, v_threshold, tau, v_reset, hard, decay_input,
                             detach_reset, sg_id, sg_param, return_v, need_v0, need_vth)

    @backward_op.register_fake
    def _(h_seq, grad_s, grad_v, vth, v_threshold, tau, v_reset, hard, decay_input, detach_reset, sg_id,
          sg_param, return_v, need_v0, need_vth):
        gv0 = h_seq.new_empty(h_seq.shape[1:]) if need_v0 else h_seq.new_empty((0,))
        gvth = h_seq.new_empty((), dtype=torch.float64) if need_vth else h_seq.new_empty((0,), dtype=torch.float64)
        return torch.empty_like(h_seq), gv0, gvth

    def setup_context(ctx, inputs, output):
        (x, v0, vth, v_threshold, tau, v_reset, hard, decay_input, detach_reset, sg_id, sg_param, save_h,
         return_v, _) = inputs
        cfg = LifConfig(tau=tau, v_threshold=v_threshold, v_reset=v_reset, hard=hard, decay_input=decay_input,
                        detach_reset=detach_reset, sg_id=sg_id, sg_param=sg_param, return_v=return_v)
        _save(ctx, cfg, save_h, output[2], vth)

    def make_backward(run_backward, n_static: int):
        def backward(ctx, g_s, g_v, *_):  # (the custom op's third output, h_seq, has no gradient)
            h_seq, vth = ctx.saved_tensors
            if not ctx.save_h:
                raise RuntimeError(f"lif_{tag}: backward called but the forward ran without grad and saved no state")
            cfg = ctx.cfg
            need_v0 = bool(ctx.needs_input_grad[1])
            need_vth = vth is not None and bool(ctx.needs_input_grad[2])
            gx, gv0, gvth = run_backward(
                h_seq, _as_grad(g_s, h_seq), _as_grad(g_v, h_seq), vth, cfg.v_threshold, cfg.tau, cfg.v_reset,
                cfg.hard, cfg.decay_input, cfg.detach_reset, cfg.sg_id, cfg.sg_param, cfg.return_v, need_v0, need_vth,
            )
            grad_v0 = gv0 if need_v0 else None
            grad_vth = gvth.to(vth.dtype).reshape(vth.shape) if need_vth else None
            return (gx, grad_v0, grad_vth) + (None,) * n_static
        return backward

    forward_op.register_autograd(make_backward(backward_op, 11), setup_context=setup_context)

    if eager is None:
        class Eager(torch.autograd.Function):
            """``(x, v0, vth, cfg) -> (spikes, v_out)``, the static options as one :class:`LifConfig` and
            ``h_seq`` kept in the context, not returned (an autograd Function's Python wrapper costs per
            argument and per output; the custom op's flat signature is for tracing)."""

            @staticmethod
            def forward(ctx, x, v0, vth, cfg):
                s, v, h_seq = forward_impl(x, v0, vth, cfg.v_threshold, cfg.tau, cfg.v_reset, cfg.hard,
                                           cfg.decay_input, True, cfg.return_v, cfg.check_x)
                _save(ctx, cfg, True, h_seq, vth)
                return s, v

            backward = staticmethod(make_backward(backward_impl, 1))

        Eager.__name__ = Eager.__qualname__ = f"LIF{tag.capitalize()}Function"
        eager = Eager.apply

    def alone(x, v0, vth, cfg):
        s, v, _ = forward_impl(x, v0, vth, cfg.v_threshold, cfg.tau, cfg.v_reset, cfg.hard, cfg.decay_input, False,
                               cfg.return_v, cfg.check_x)
        return s, v

    return FusedOps(forward_op, eager, alone)


def _save(ctx, cfg: LifConfig, save_h: bool, h_seq: torch.Tensor, vth: Optional[torch.Tensor]) -> None:
    """What the backward reads: the static options, ``h_seq`` and a tensor threshold. Unused outputs
    (``h_seq`` always, often ``v``) get ``None``, not a materialised [T, N] zero gradient."""
    ctx.set_materialize_grads(False)
    ctx.cfg, ctx.save_h = cfg, save_h
    ctx.save_for_backward(h_seq, vth)


def _as_grad(g: Optional[torch.Tensor], like: torch.Tensor) -> Optional[torch.Tensor]:
    """Incoming gradient in the saved dtype, contiguous (``None`` stays ``None``)."""
    if g is None:
        return None
    return g.to(like.dtype).contiguous()


def run_fused(ops: FusedOps, x: torch.Tensor, v0: Optional[torch.Tensor], cfg: LifConfig, vth: Optional[torch.Tensor]):
    """Call the fused op on contiguous ``x [T, ...]`` (the kernels index it as ``[T, N]``; outputs
    have the shapes of ``x`` and ``x[0]``, so no reshapes or view nodes are added).

    Under ``torch.compile`` the custom op ``ops.op``; eager calls that record a gradient
    ``ops.eager``; calls without one (``no_grad``, inference, inputs without ``requires_grad``) the
    kernel directly: there is no graph to build, so the autograd wrapper would be pure overhead."""
    x = x.contiguous()
    v0 = None if v0 is None else v0.contiguous()
    grad = needs_grad(x, v0, vth)
    if torch.compiler.is_compiling():
        s, v, _ = ops.op(x, v0, vth, cfg.v_threshold, cfg.tau, cfg.v_reset, cfg.hard, cfg.decay_input,
                         cfg.detach_reset, cfg.sg_id, cfg.sg_param, grad, cfg.return_v, cfg.check_x)
    elif grad:
        s, v = ops.eager(x, v0, vth, cfg)
    else:
        s, v = ops.forward(x, v0, vth, cfg)
    return s, v
