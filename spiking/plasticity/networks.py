"""Spiking MLPs for HLOP with the three training methods behind one switch (``method``).

All take the analog image as a constant (direct) input current, so the first layer's current
``I¹ = W¹x`` is computed once per sample. Logits are the readout averaged over T.

| method | neuron | T | gradient | projected input | Hebbian input |
|---|---|---|---|---|---|
| ``dsr`` | :class:`~spiking.neuron.dsr.DSRLIF` | 20 | through the rate (one step) | each step's o_t (summed) | weighted rate Σw_t o_t/Σw_t (``hebb_rate="weighted"``) or the mean rate ā (``"mean"``) |
| ``bptt`` | :class:`~spiking.LIF` soft reset, detached | 6 | BPTT, sigmoid surrogate 4 | each s_t | raw s_t, all T·B rows |
| ``ottt`` | same LIF, state detached between steps | 6 | Σ_t CE_t/T, ΔW = Σ_t δ_t â_tᵀ | trace â_t | concat(s_t, â_t) |

Where the Hebbian input is the weight-gradient input (first layer; BPTT; DSR with
``hebb_rate="mean"``) the layer's ``hebb_is_grad_input`` is set, so the projection's ``x⊥`` is also
the Hebbian residual (computed once).

``loss_backward(x, y, loss_fn)`` runs forward and backward of one batch for the method and
returns the loss; ``forward(x)`` gives logits.

OTTT (online training through time) detaches the membrane between steps and takes one
optimizer step per batch, so its per-step backward passes add up to one backward pass of
``Σ_t CE(z_t, y)/T`` over the whole sequence whose gradient is cut in time
(:func:`~spiking.neuron.online.lif_online`), the weight gradient taken from the presynaptic
traces ``â_t = λ â_{t−1} + s_t`` of all T·B rows at once: ``ΔW = Σ_t δ_tᵀ â_t⊥``.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from ..kernels import dsr_stack
from ..kernels.spike_matmul import spike_matmul
from ..models import time_mean
from ..neuron.dsr import DSRLIF, _normalised_weights, dsr_drive, weighted_rate
from ..neuron.module import LIF
from ..neuron.online import lif_online, trace_matrices
from .layers import HLOPLinear

__all__ = ["HLOPMLP", "METHODS", "method_defaults"]

METHODS = ("dsr", "bptt", "ottt")
EVAL_BYTES = 64 << 20  # working set of one evaluation batch on the fused CPU DSR path


def method_defaults(method: str) -> dict:
    """The paper's neuron settings for ``method`` (and DSR's Hebbian input, see the table above)."""
    if method == "dsr":
        # hebb_rate: "mean" (default, the projected rate, whose x⊥ is then shared) or "weighted" (paper)
        return dict(T=20, v_threshold=0.3, tau=1.0, dt=0.05, alpha=0.3, v_floor=5e-4, hebb_rate="mean")
    if method in ("bptt", "ottt"):
        return dict(T=6, tau=2.0, v_threshold=1.0, surrogate_alpha=4.0, trace_lambda=0.5)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


class _TimeConstant(torch.autograd.Function):
    """``forward(ctx, I [B, N], c [T, 1, 1])``: ``I`` repeated over the T steps as rows [T·B, N];
    backward ``Σ_t c_t g_t``. For OTTT's first layer, whose input x is constant, so its trace is
    ``â_t = c_t x``: the layer's weight gradient from ``Σ_t c_t δ_t`` and x is ``Σ_t δ_tᵀ (c_t x)⊥``
    (the only consumer of this gradient: the input needs none)."""

    @staticmethod
    def forward(ctx, I, c):
        ctx.save_for_backward(c)
        return I.repeat(c.shape[0], 1)

    @staticmethod
    def backward(ctx, g):
        (c,) = ctx.saved_tensors
        return (g.view(c.shape[0], -1, g.shape[-1]) * c).sum(0), None


class HLOPMLP(nn.Module):
    """Bias-free spiking MLP ``sizes[0]-…-sizes[-1]`` (hidden layers spiking, linear readout).

    ``method``: ``"dsr"`` | ``"bptt"`` | ``"ottt"``; keyword overrides of :func:`method_defaults`.
    """

    def __init__(self, sizes: Sequence[int] = (784, 800, 800, 10), method: str = "dsr", **overrides):
        super().__init__()
        cfg = method_defaults(method)
        unknown = set(overrides) - set(cfg)
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)} for method {method!r}; known: {sorted(cfg)}")
        cfg.update(overrides)
        if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
            raise ValueError(f"sizes must list at least two positive widths, got {sizes!r}")
        self.method, self.cfg, self.T = method, cfg, int(cfg["T"])
        self.sizes = tuple(int(s) for s in sizes)
        self.fcs = nn.ModuleList(HLOPLinear(a, b) for a, b in zip(self.sizes[:-1], self.sizes[1:]))
        if method == "dsr" and cfg["hebb_rate"] not in ("weighted", "mean"):
            raise ValueError(f"hebb_rate must be 'weighted' or 'mean', got {cfg['hebb_rate']!r}")
        own_hebb_input = method == "ottt" or (method == "dsr" and cfg["hebb_rate"] == "weighted")
        for i, fc in enumerate(self.fcs):  # OTTT: concat(s_t, â_t); DSR weighted: hidden rates only
            fc.hebb_is_grad_input = not (own_hebb_input and (method == "ottt" or i > 0))
        n_hidden = len(self.sizes) - 2
        if method == "dsr":
            self.neurons = nn.ModuleList(
                DSRLIF(T=self.T, v_threshold=cfg["v_threshold"], tau=cfg["tau"], dt=cfg["dt"],
                       alpha=cfg["alpha"], v_floor=cfg["v_floor"]) for _ in range(n_hidden))
        else:
            self.neurons = nn.ModuleList(
                LIF(tau=cfg["tau"], v_threshold=cfg["v_threshold"], v_reset=None, decay_input=False,
                    detach_reset=True, surrogate=("sigmoid", cfg["surrogate_alpha"]), check_inputs=False)
                for _ in range(n_hidden))

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1) if x.dim() != 2 else x
        if x.shape[1] != self.sizes[0]:
            raise ValueError(f"x must have {self.sizes[0]} features per sample, got {x.shape[1]}")
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._flat(x)
        if self.method == "dsr":
            return self._forward_dsr(x)
        return self._forward_lif(x)

    # -------------------------------------------------------------- DSR
    def _fused_dsr(self, x: torch.Tensor, training: bool | None = None) -> bool:
        """Whether the hidden stack runs as one fused CPU pass (:mod:`spiking.kernels.dsr_stack`):
        CPU float32, no hooks on the neurons (spike counting goes through
        :meth:`~spiking.neuron.dsr.DSRLIF.count_spikes`), and no layer that records its spikes' weighted rate."""
        training = self.training if training is None else training
        return (self.method == "dsr" and dsr_stack.fused_available(x) and self.fcs[0].weight.dtype == torch.float32
                and not any(n._forward_hooks or n._forward_pre_hooks for n in self.neurons)
                and not (training and not all(fc.hebb_is_grad_input for fc in self.fcs[1:])))

    def eval_batch_size_for(self, device) -> int | None:
        """Evaluation batch sized by memory (read by :func:`spiking.runner.evaluation.eval_batch_size`)
        where the forward keeps no ``[T, B, N]`` tensor, the fused CPU DSR path: as many samples as
        fit :data:`EVAL_BYTES` with each one's float32 input, currents, drive, spike counts, weighted
        drives and logits (2999 in 784-800-800-10); None elsewhere (the device's default)."""
        probe = torch.empty(0, self.sizes[0], device=device)
        if not (self.fcs[0].weight.device == probe.device and self._fused_dsr(probe, training=False)):
            return None
        hidden = sum(self.sizes[1:-1])
        return max(1, EVAL_BYTES // (4 * (self.sizes[0] + 2 * self.sizes[1] + 2 * hidden + self.sizes[-1])))

    def _forward_dsr_fused(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`_forward_dsr` with the hidden stack in one kernel: it returns per layer the spike
        count and (after the first) the weighted drive, all the rate graph reads; the same spikes."""
        fc, neurons, cfg = self.fcs, self.neurons, self.cfg
        graph = self.training or torch.is_grad_enabled()  # the weighted drives feed the DSR backward only
        I_mean = fc[0](x)
        with torch.no_grad():
            scales = [n.drive_scale() for n in neurons]  # also brings every V_th/Δt up to date
            values = [n.spike_value() for n in neurons]
            x1 = dsr_drive(I_mean, neurons[0].v_threshold, self.T, cfg["tau"], cfg["dt"], cfg["alpha"])
            between = [v * k for v, k in zip(values[:-1], scales[1:])]
            between = torch.stack(between) if between else x1.new_empty(0)  # one hidden layer: no product
            wn = _normalised_weights(self.T, cfg["tau"], cfg["dt"], x.dtype, x.device).view(-1)
            counts, whats = dsr_stack.dsr_stack(x1, [layer.weight_t_contiguous() for layer in fc[1:-1]], between,
                                                wn, 1.0 / (1.0 - math.exp(-cfg["dt"] / cfg["tau"])),
                                                1.0 - cfg["alpha"], neurons[0].drive_shift, weighted=graph)
        for i, (layer, neuron) in enumerate(zip(fc[1:], neurons)):
            neuron.add_spikes(counts[i])
            if not (layer is fc[-1] or graph):
                I_mean = None  # evaluation: only the last rate is read
                continue
            I_w = (lambda I=I_mean: I) if i == 0 else (lambda i=i, n=neuron: n.current_of(whats[i - 1]))
            rate = neuron.rate_of(I_mean, counts[i].div_(self.T), I_w)
            I_mean = layer(rate, graph_only=layer is not fc[-1])
        return I_mean

    def _forward_dsr(self, x: torch.Tensor) -> torch.Tensor:
        if self._fused_dsr(x):
            return self._forward_dsr_fused(x)
        record = self.training
        fc, tau, dt = self.fcs, self.cfg["tau"], self.cfg["dt"]
        I_mean = fc[0](x)                      # constant current: one matmul per sample
        drive = None
        for i, (layer, neuron) in enumerate(zip(fc[1:], self.neurons)):
            # rate graph: mean_t of the layer's current; a hidden layer's is read only by the DSR
            # backward and the input recording (the next neurons run on the drive), so evaluation skips it
            need_rate = layer is fc[-1] or record or torch.is_grad_enabled()
            spikes, rate = neuron(I_mean, drive=drive, rate=need_rate)  # binary S; o_t = S_t·V_th/Δt
            value = neuron.spike_value()
            if record and not layer.hebb_is_grad_input:
                layer.hebb_input = weighted_rate(spikes, tau, dt) * value
            if layer is not fc[-1]:
                nxt = self.neurons[i + 1]
                with torch.no_grad():           # the actual per-step currents drive the next neurons
                    # event-driven on the CPU: only the weight rows of the inputs that fired; the
                    # next neurons' input X = k·I + c formed in the same pass (I = value·S W^T)
                    drive = spike_matmul(spikes.view(-1, spikes.shape[-1]), layer.weight_t_contiguous(),
                                         value * nxt.drive_scale(), nxt.drive_shift)
                    drive = drive.view(self.T, x.shape[0], -1)
            # a hidden layer's rate-graph current is read only by the next neurons' DSR backward (their
            # spikes come from the drive): its value is never used, so the product is skipped
            I_mean = layer(rate, graph_only=layer is not fc[-1]) if need_rate else None
        return I_mean

    # -------------------------------------------------------------- BPTT
    def _forward_lif(self, x: torch.Tensor) -> torch.Tensor:
        fc = self.fcs
        I = fc[0](x).repeat(self.T, 1, 1)  # constant over T (a copy: the fused LIF reads it contiguous)
        for layer, neuron in zip(fc[1:], self.neurons):
            I = layer(neuron(I))
        return time_mean(I)

    # -------------------------------------------------------------- OTTT
    def _ottt_loss(self, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable) -> torch.Tensor:
        """OTTT's loss for the whole sequence in one forward pass, for one backward pass (see the module doc):
        the gradient of Σ_t loss_fn(z_t, y)/T with every step's membrane detached from the next,
        ΔW = Σ_t δ_tᵀ â_t⊥ over the stacked T·B rows. The loss over the T·B rows of ``(z_t, y)``
        is the mean over t of the per-step losses. Every layer works on rows [T·B, N] (step t's
        batch in rows t·B..(t+1)·B), so nothing is reshaped between layers."""
        T, fc, lam = self.T, self.fcs, self.cfg["trace_lambda"]
        _, _, c, c2 = trace_matrices(T, lam, x.dtype, x.device)
        with torch.no_grad():  # the first layer's Hebbian input: rows (x, â_t = c_t x) per step, one product
            fc[0].hebb_input = (c2 * x).view(-1, x.shape[1])
        current = _TimeConstant.apply(fc[0](x), c)  # I¹ once; weight gradient (Σ_t c_t δ_t)ᵀ x⊥
        for layer, neuron in zip(fc[1:], self.neurons):
            # spikes, traces â_t = λ â_{t−1} + s_t and the Hebbian rows (s_t, â_t) per step in one pass
            s, trace, layer.hebb_input = lif_online(current, neuron, steps=T, trace_lambda=lam)
            current = layer(s, trace)
        return loss_fn(current, y.repeat(T))

    def loss_backward(self, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable) -> torch.Tensor:
        """Forward and backward of one training batch (gradients accumulate); returns the loss as a
        device tensor (no host sync; its graph is already freed by the backward pass).

        ``loss_fn(logits, y)`` must average over rows (as cross-entropy does): OTTT calls it once
        on the T·B rows of all steps with ``y`` repeated T times, the mean of the per-step losses."""
        x = self._flat(x)
        loss = self._ottt_loss(x, y, loss_fn) if self.method == "ottt" else loss_fn(self.forward(x), y)
        params = [p for p in self.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, self._unit(loss), allow_unused=True)
        with torch.no_grad():  # loss.backward()'s accumulation, without its detach op per parameter
            for p, g in zip(params, grads):
                if g is not None:
                    p.grad = g if p.grad is None else p.grad.add_(g)
        return loss

    def _unit(self, loss: torch.Tensor) -> torch.Tensor:
        """The seed ``∂loss/∂loss = 1`` kept per dtype and device (``backward()`` makes it with a ``ones_like`` op)."""
        key = (loss.dtype, loss.device)
        if getattr(self, "_seed", (None,))[0] != key:
            with torch.inference_mode(False):
                self._seed = (key, torch.ones((), dtype=loss.dtype, device=loss.device))
        return self._seed[1]
