"""Evaluation: accuracy and loss of a model on a task's test data, spike counts per spiking layer.

    acc  = (1/n) Σ 1[argmax z_i = y_i],   loss = (1/n) Σ CE(z_i, y_i)
    task-IL (stream.task_labels_at_test): z is masked to task.classes before argmax and CE.

Spike counts: forward hooks on every ``spiking.LIF``, any module with ``is_spiking = True``,
snnTorch's ``SpikingNeuron`` and Norse's ``SNN``/``SNNCell`` layers add the sum of their output spikes; reported per evaluated
sample (an energy proxy: spikes/sample per layer, summed over T).
"""
from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Iterable
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from .batch_memory import memory_batch_size
from .strategy import mask_logits


def _peer_neuron_classes() -> tuple:
    """snnTorch's SpikingNeuron and Norse's SNN / SNNCell base classes, of the peers already
    imported: a model holding a peer's neuron has imported that peer, and importing one that is
    not in use would cost every run's first evaluation the peer's import time."""
    found = []
    if "snntorch" in sys.modules:
        try:
            from snntorch._neurons.neurons import SpikingNeuron  # noqa: PLC0415
            found.append(SpikingNeuron)
        except Exception:  # moved in another version
            pass
    if "norse" in sys.modules:
        try:
            from norse.torch.module.snn import SNN, SNNCell  # noqa: PLC0415
            found += [SNN, SNNCell]
        except Exception:  # moved in another version
            pass
    return tuple(found)


def spiking_layers(model: torch.nn.Module) -> "OrderedDict[str, torch.nn.Module]":
    """Named submodules whose outputs are spikes."""
    from ..neuron import LIF  # noqa: PLC0415
    peers = _peer_neuron_classes()
    out = OrderedDict()
    for name, m in model.named_modules():
        if isinstance(m, (LIF, *peers)) or getattr(m, "is_spiking", False):
            out[name or type(m).__name__] = m
    return out


def _spike_sum(s: torch.Tensor) -> torch.Tensor:
    """Σ s as a float64 device scalar. Spikes are 0/1, so in float32 every partial sum is an integer
    below 2^24 when s has fewer elements, hence exact: only larger tensors are summed in float64
    (which first copies s to float64, costing more than the spiking layer itself)."""
    if s.is_floating_point() and s.numel() < 2 ** 24 and s.dtype in (torch.float32, torch.float64):
        return s.sum().double()
    return s.sum(dtype=torch.float64)


_uncounted = 0  # > 0 while a forward that is not an evaluation runs (the memory probes)


@contextmanager
def uncounted(model: torch.nn.Module):
    """Forwards of ``model`` inside this context add nothing to an active :class:`SpikeCounter`."""
    global _uncounted
    layers = [m for m in spiking_layers(model).values() if hasattr(m, "count_spikes")]
    totals = [m.spike_total for m in layers]
    _uncounted += 1
    try:
        for m in layers:
            m.spike_total = None  # add_spikes adds nothing while it is None
        yield
    finally:
        _uncounted -= 1
        for m, total in zip(layers, totals):
            m.spike_total = total


class SpikeCounter:
    """Context manager: while active, sums the spikes emitted by each spiking layer of ``model``
    (on the device; ``counts`` are updated when the context exits). Layers with a
    ``count_spikes(on)`` method (DSR neurons, whose fused path keeps no spike tensor for a hook to
    see) count into their ``spike_total``; the others through a forward hook."""

    def __init__(self, model: torch.nn.Module):
        self.layers = spiking_layers(model)
        self.counts = {name: 0.0 for name in self.layers}
        self._handles = []

    def _hook(self, name):
        def hook(_module, _inputs, output):  # summed on the device; read when the context exits
            if _uncounted:
                return
            s = output[0] if isinstance(output, (tuple, list)) else output
            total = _spike_sum(s.detach())
            self._sums[name] = total if self._sums.get(name) is None else self._sums[name].add_(total)
        return hook

    def __enter__(self):
        self._sums: dict = {}
        self._counting = {n: m for n, m in self.layers.items() if hasattr(m, "count_spikes")}
        for m in self._counting.values():
            m.count_spikes(True)
        self._handles = [m.register_forward_hook(self._hook(n)) for n, m in self.layers.items()
                         if n not in self._counting]
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []
        for name, m in self._counting.items():
            self._sums[name] = m.spike_total
            m.count_spikes(False)
        for name, total in self._sums.items():
            self.counts[name] += float(total)
        self._sums = {}
        return False


CPU_EVAL_BATCH, GPU_EVAL_BATCH = 256, 1000


def eval_batch_size(cfg: dict, model: torch.nn.Module | None = None, sample: torch.Tensor | None = None,
                    n: int | None = None) -> int:
    """``cfg["eval_batch_size"]``, or when it is None: the model's own size for ``cfg["device"]``
    (``model.eval_batch_size_for(device)``, a model that knows its working set per sample, e.g.
    :class:`~spiking.plasticity.networks.HLOPMLP` on its fused CPU path), else the default for
    the device. On the CPU: 256 (larger batches spill a spiking net's [T, B, N] activations out of
    cache and run slower per sample). On a GPU: sized by the device's memory
    (:func:`.batch_memory.memory_batch_size`, at most ``n``) given one input ``sample`` ``[1, ...]``
    on the device, else 1000."""
    if cfg.get("eval_batch_size") is not None:
        return int(cfg["eval_batch_size"])
    device = str(cfg.get("device", "cpu"))
    own = getattr(model, "eval_batch_size_for", None)
    size = own(device) if callable(own) else None
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"{type(model).__name__}.eval_batch_size_for({device!r}) must return a positive int "
                             f"or None, got {size!r}")
        return size
    if not device.startswith("cuda"):
        return CPU_EVAL_BATCH
    if model is None or sample is None or n is None:
        return GPU_EVAL_BATCH
    with uncounted(model):  # the probe forwards are not evaluated samples
        return memory_batch_size(model, sample, n)


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, classes=None,
             batch_size: int | None = None, device="cpu") -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on (x, y); ``classes`` masks logits (task-IL).
    ``batch_size`` None: :func:`eval_batch_size`'s size for ``model`` on ``device``.
    See :func:`evaluate_batches`."""
    if x.shape[0] == 0:
        raise ValueError("x must hold at least one sample")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"x and y must hold the same number of samples, got {x.shape[0]} and {y.shape[0]}")
    bs = eval_batch_size({"eval_batch_size": batch_size, "device": device}, model, x[:1].to(device), x.shape[0])
    return evaluate_batches(model, ((x[i:i + bs], y[i:i + bs]) for i in range(0, x.shape[0], bs)), classes, device)


def evaluate_batches(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], classes=None,
                     device="cpu") -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` over the ``(x, y)`` batches (e.g. a task's
    :meth:`~spiking.data.streams.Task.test_batches`); ``classes`` masks logits (task-IL).

    Runs under ``torch.inference_mode()``; the correct count and the loss sum accumulate on the
    device and are read once at the end (one host sync per call, not per batch).
    """
    was_training = model.training
    model.eval()
    correct = loss_sum = None
    n = 0
    try:
        with torch.inference_mode():
            for xb, yb in batches:
                xb, yb = xb.to(device), yb.to(device)
                z = model(xb)
                if classes is not None:
                    z = mask_logits(z, classes)
                c = (z.argmax(1) == yb).sum()
                l = F.cross_entropy(z, yb, reduction="sum").double()
                correct = c if correct is None else correct.add_(c)
                loss_sum = l if loss_sum is None else loss_sum.add_(l)
                n += yb.shape[0]
            if n == 0:
                raise ValueError("batches must hold at least one sample")
            total = torch.stack([correct.double(), loss_sum]).tolist()  # the one host read
    finally:
        model.train(was_training)
    return int(total[0]) / n, total[1] / n


class Evaluator:
    """Evaluates a stream's tasks: full test sets, or fixed seeded subsets (cached) per task."""

    def __init__(self, stream, batch_size: int | None = None, device="cpu", subset: int = 1000,
                 subset_seed: int = 0, test_subset: int | None = None):
        self.stream, self.batch_size, self.device = stream, batch_size, device
        self.subset, self.subset_seed, self.test_subset = subset, subset_seed, test_subset
        self._subsets: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.last_batch_size: int | None = None

    def _classes(self, task):
        return task.classes if self.stream.task_labels_at_test else None

    def n_full(self, task) -> int:
        return task.n_test if self.test_subset is None else min(self.test_subset, task.n_test)

    def batch_size_for(self, model, task) -> int:
        """The batch that :meth:`full` evaluates ``task`` in (:func:`eval_batch_size`)."""
        cfg = {"eval_batch_size": self.batch_size, "device": self.device}
        if self.batch_size is None and str(self.device).startswith("cuda"):
            sample, _ = next(iter(task.test_batches(1)))
            return eval_batch_size(cfg, model, sample.to(self.device), self.n_full(task))
        return eval_batch_size(cfg, model)

    def full(self, model, task) -> tuple[float, float]:
        """The task's full test set (or the fixed ``test_subset``-sample subset if set), in
        :meth:`batch_size_for`'s batches (the last one used: ``last_batch_size``)."""
        bs = self.last_batch_size = self.batch_size_for(model, task)
        if self.test_subset is None:  # transformed batch by batch
            return evaluate_batches(model, task.test_batches(bs), self._classes(task), self.device)
        x, y = task.test_subset(self.n_full(task), seed=self.subset_seed + 1)
        return evaluate(model, x, y, self._classes(task), bs, self.device)

    def on_subset(self, model, task) -> tuple[float, float]:
        """A fixed seeded subset of ``subset`` test samples (cached)."""
        if task.index not in self._subsets:
            n = min(self.subset, task.n_test)
            self._subsets[task.index] = task.test_subset(n, seed=self.subset_seed)
        x, y = self._subsets[task.index]
        return evaluate(model, x, y, self._classes(task), self.batch_size, self.device)
