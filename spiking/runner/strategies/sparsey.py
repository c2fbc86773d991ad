"""Sparsey learner in the task-sequence runner: single-trial storage of every training image in a
patch hierarchy of macrocolumns, classification by k nearest neighbours under code overlap, and
exact unlearning.

    spiking run --method sparsey --dataset split-mnist --scenario class --epochs 1

* ``train_step(x, y, task)``: images (any affine normalisation; mapped per image to [0, 1]) become
  binary features (``features``: 4 edge-orientation maps or thresholded pixels), each image is
  stored once (``PatchHierarchy.store``) and its level-1 codes are kept with its label and task.
  Returned "loss": the prequential error, i.e. the fraction of the batch the memory misclassified
  *before* storing it (1.0 while the memory is empty). No gradients, no optimizer.
* Evaluation: the model's ``forward`` is replaced (instance attribute) by the memory's classifier;
  logits = log of the overlap-weighted k-NN vote shares over ``stream.n_outputs`` classes (the runner
  masks them to the task's classes in task-IL). The model's own parameters are unused.
* ``unlearn({"task": j} | {"classes": [...]})``: the target's episodic traces (its codes and labels)
  leave the k-NN memory exactly, so nothing of it votes any more. The level-1 MACs are a feature
  dictionary shared by all images (their critical period usually closes during the first task);
  with ``forget_features=True`` the target's writes to it are removed too, by exact forgetting
  (weights = what the remaining traces alone wrote) -- but the retained images' stored codes were
  read out with the old dictionary, so retained accuracy collapses when the target built most of it
  (measured: split-MNIST, forgetting task 0 after task 4: retained 0.92 -> 0.30). Not undone in
  either case: codes chosen after the target was stored were selected while it was present.
* Use ``epochs=1``: a second epoch stores every image a second time.
"""
from __future__ import annotations

import math

import torch

from ...memory.classify import knn_votes
from ...memory.features import image_features, n_channels, to_unit_range
from ...memory.hierarchy import PatchHierarchy
from ..strategy import Strategy


class Sparsey(Strategy):
    name = "sparsey"
    graph_safe = "it stores every image in a growing host-side memory (no gradient step to capture)"
    options = {
        "patch": (int, 7, "receptive field (pixels) of each level-1 macrocolumn"),
        "stride": (int, 3, "stride between receptive fields"),
        "Q": (int, 16, "competitive modules per macrocolumn"),
        "K": (int, 8, "units per competitive module"),
        "theta_sat": (float, 0.2, "critical period: a MAC stops learning at this fraction of weights set"),
        "neighbours": (int, 5, "k of the k-NN on code overlap (neighbours voting)"),
        "features": (str, "edges", "input features: edges | binary"),
        "edge_threshold": (float, 0.15, "gradient threshold of the edge features"),
        "pi_minus": (int, 3, "minimum active inputs for a patch MAC to participate"),
        "forget_features": (bool, False, "unlearn also removes the target's writes to the level-1 "
                                         "dictionary (changes every image's features; see docstring)"),
    }

    def setup(self, model, stream, config):
        self.model, self.stream, self.config = model, stream, dict(config)
        self.optimizer = None
        shape = tuple(stream.input_shape)
        if len(shape) == 1 and math.isqrt(shape[0]) ** 2 == shape[0]:
            self.image_shape = (math.isqrt(shape[0]),) * 2
        elif len(shape) == 3 and shape[0] == 1:
            self.image_shape = tuple(shape[1:])
        elif len(shape) == 2:
            self.image_shape = shape
        else:
            raise ValueError(f"sparsey needs square flattened or [1, H, W] images, got input_shape {shape}")
        if self.features not in ("edges", "binary"):
            raise ValueError(f"features must be 'edges' or 'binary', got {self.features!r}")
        self.hierarchy = PatchHierarchy(self.image_shape, patch=self.patch, stride=self.stride,
                                        channels=n_channels(self.features), Q=self.Q, K=self.K,
                                        theta_sat=self.theta_sat, pi_minus=self.pi_minus,
                                        seed=int(config.get("seed", 0)))
        self.codes = torch.zeros(0, self.hierarchy.n_macs, self.Q, dtype=torch.int64)
        self.ids = torch.zeros(0, self.hierarchy.n_macs, dtype=torch.int64)
        self.labels = torch.zeros(0, dtype=torch.int64)
        self.tasks = torch.zeros(0, dtype=torch.int64)
        model.forward = self.forward           # evaluation reads the memory (see module docstring)

    # ------------------------------------------------------------------ memory
    def _features(self, x: torch.Tensor) -> torch.Tensor:
        img = to_unit_range(x.detach().float().cpu().reshape(-1, *self.image_shape))
        thr = self.edge_threshold if self.features == "edges" else 0.5
        return image_features(img, self.features, thr)

    def _votes(self, feats: torch.Tensor) -> torch.Tensor:
        n_out = self.stream.n_outputs
        if len(self.labels) == 0:
            return torch.full((len(feats), n_out), 1.0 / n_out)
        codes = self.hierarchy.encode(feats)["level1"]
        v = knn_votes(self.codes, self.labels, codes, self.K, k=min(self.neighbours, len(self.labels)), n_classes=n_out)
        return (v + 1e-3) / (v + 1e-3).sum(1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits = log k-NN vote shares ``[B, n_outputs]``."""
        return self._votes(self._features(x)).log().to(x.device)

    # ------------------------------------------------------------------ training
    def train_step(self, x, y, task) -> float:
        feats = self._features(x)
        y = y.detach().cpu().to(torch.int64)
        err = float((self._votes(feats).argmax(1) != y).float().mean()) if len(self.labels) else 1.0
        out = self.hierarchy.store(feats)
        self.codes = torch.cat([self.codes, out["level1"]])
        self.ids = torch.cat([self.ids, out["level1_ids"]])
        self.labels = torch.cat([self.labels, y])
        self.tasks = torch.cat([self.tasks, torch.full((len(y),), int(task.index), dtype=torch.int64)])
        return err

    def unlearn(self, target) -> None:
        if "task" in target:
            gone = self.tasks == int(target["task"])
        else:
            gone = torch.isin(self.labels, torch.as_tensor(list(target["classes"]), dtype=torch.int64))
        if self.forget_features and bool(gone.any()):
            self.hierarchy.forget(self.ids[gone])
        keep = ~gone
        self.codes, self.ids, self.labels, self.tasks = (self.codes[keep], self.ids[keep],
                                                         self.labels[keep], self.tasks[keep])

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        return {"hierarchy": self.hierarchy.state_dict(), "codes": self.codes.clone(), "ids": self.ids.clone(),
                "labels": self.labels.clone(), "tasks": self.tasks.clone()}

    def load_state_dict(self, d: dict) -> None:
        self.hierarchy.load_state_dict(d["hierarchy"])
        self.codes, self.ids = d["codes"].clone(), d["ids"].clone()
        self.labels, self.tasks = d["labels"].clone(), d["tasks"].clone()
