"""CUDA graphs for the training step (config ``cuda_graph``, CLI ``--cuda-graph``).

A CUDA graph records every kernel of one training step (forward, backward, HLOP's projection,
the Hebbian update, the optimizer step) once and replays them with one launch, so the host's
per-op cost disappears from the step. It requires a *static* step: the same shapes, the same
tensors (inputs are copied into fixed buffers), no host reads, no data-dependent Python branches.

* :func:`graph_safety` says whether a strategy's step qualifies (class attribute
  ``graph_safe = True`` or a string saying why not); :func:`check_cuda_graph` turns that and the
  device into a clear error for the config.
* :class:`GraphedStep` drives it: per learn event it runs ``warmup`` steps eagerly on a side
  stream (allocators, caches, autograd state settle), then captures one step on the static
  buffers and replays it for every full batch; a batch of another size (the last partial batch)
  runs eagerly, so every sample is trained exactly as without graphs. A graph is captured again
  for every learn event (projections, bases, Fisher terms change between tasks) and released at
  its end, with its memory pool, before the task's Hebbian phase and evaluation; rehearsal steps
  (tasks change from step to step) run eagerly.

Eager and graphed steps run the same kernels on the same values; the accuracy matrices agree
within float tolerance (``tests/test_cuda_graph.py``, a GPU test).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

__all__ = ["graph_safety", "check_cuda_graph", "GraphedStep", "capture_cuda_graph", "warm_on_side_stream"]


def graph_safety(strategy_cls, options: Optional[dict] = None) -> tuple[bool, str]:
    """``(True, "")`` if the strategy's training step can be captured, else ``(False, why)``."""
    safe = getattr(strategy_cls, "graph_safe", "it does not declare graph_safe")
    if callable(safe) and not isinstance(safe, (bool, str)):
        safe = safe(options or {})
    if safe is True:
        return True, ""
    return False, str(safe)


def check_cuda_graph(cfg: dict, strategy_cls) -> None:
    """Raise ``ValueError`` naming ``cuda_graph`` when it is set for a CPU device or an unsafe step."""
    if not cfg.get("cuda_graph"):
        return
    if not str(cfg.get("device", "cpu")).startswith("cuda"):
        raise ValueError(f"cuda_graph needs a CUDA device (device='cuda'), got device={cfg.get('device')!r}")
    ok, why = graph_safety(strategy_cls, cfg.get("options"))
    if not ok:
        raise ValueError(f"cuda_graph: the training step of method {cfg['method']!r} cannot be captured "
                         f"in a CUDA graph: {why}; run without cuda_graph")


def warm_on_side_stream(step: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Run ``step()`` eagerly on a side stream (CUDA graphs need their warm-up off the capture stream)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out = step()
    torch.cuda.current_stream().wait_stream(side)
    return out


def capture_cuda_graph(step: Callable[[], torch.Tensor]) -> tuple[Callable[[], None], torch.Tensor]:
    """Record one call of ``step()`` (nothing runs); returns ``(replay, output)``."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    return graph.replay, out


class GraphedStep:
    """``step(x, y, task)`` with the result of ``strategy.train_step`` through a CUDA graph.

    Per learn event: the first ``warmup`` full batches train eagerly through ``warm`` (a side
    stream), the next one is recorded by ``capture`` and replayed, later ones are copied into the
    static buffers and replayed. Batches of another size (the last partial batch) run
    ``strategy.train_step`` eagerly. Every batch is trained exactly once. :meth:`reset` drops the
    graph (the runner calls it at the start and the end of every learn event). ``warm`` and ``capture``
    default to the CUDA implementations; tests pass eager stand-ins.
    """

    def __init__(self, strategy, batch_size: int, warmup: int = 3,
                 warm: Callable = warm_on_side_stream, capture: Callable = capture_cuda_graph):
        if batch_size < 1 or warmup < 1:
            raise ValueError(f"batch_size and warmup must be >= 1, got {batch_size}, {warmup}")
        self.strategy, self.batch_size, self.warmup = strategy, batch_size, warmup
        self.warm, self.capture = warm, capture
        self.captures = 0
        self.reset()

    def reset(self) -> None:
        self.replay = self.out = self.x = self.y = self.task = None
        self.warmed = 0

    def _static_step(self) -> torch.Tensor:
        return self.strategy.train_step(self.x, self.y, self.task)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, task):
        if x.shape[0] != self.batch_size:
            return self.strategy.train_step(x, y, task)   # the last partial batch: eager
        if self.x is None or self.task is not task:
            self.reset()
            self.x, self.y, self.task = x.clone(), y.clone(), task
        else:
            self.x.copy_(x)
            self.y.copy_(y)
        if self.replay is None:
            if self.warmed < self.warmup:
                self.warmed += 1
                return self.warm(self._static_step)
            self.replay, self.out = self.capture(self._static_step)
            self.captures += 1
        self.replay()
        return self.out
