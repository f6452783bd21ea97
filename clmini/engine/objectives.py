"""What a run minimises: a contrastive loss of the registry, or cross-entropy of a linear classifier
(the supervised baseline "with the same encoder"). The trainer sees only :class:`Objective`.

An objective has two halves so that each runs at the right precision: ``forward(z)`` runs with the
network (under its autocast), ``loss(outputs, labels)`` in float32.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clmini.engine.hooks import Batch
from clmini.engine.distributed import gathered_loss
from clmini.losses import make_loss
from clmini.metrics import encode

if TYPE_CHECKING:  # the config validates objective names against OBJECTIVES below
    from clmini.engine.config import TrainConfig


class Objective(nn.Module):
    """Base: identity head, no statistics, no final metrics of its own."""

    def forward(self, z: Tensor) -> Tensor:
        return z

    def loss(self, outputs: Tensor, labels: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def batch_statistics(self, batch: Batch) -> dict[str, Tensor]:
        """Per-step quantities to record (averaged over the epoch)."""
        return {}

    def set_progress(self, progress: float) -> None:
        """The share of the run's steps done, told before every step (ignored by default)."""

    def final_metrics(self, model: nn.Module, data) -> dict:
        """Metrics of the objective itself, measured after the engine's evaluation."""
        return {}


class Contrastive(Objective):
    """The config's loss (``TrainConfig.loss``/``loss_args``) on the projections."""

    def __init__(self, config: TrainConfig, n_classes: int):
        super().__init__()
        self.contrastive_loss = make_loss(config.loss, **config.loss_args)

    def loss(self, outputs: Tensor, labels: Tensor) -> Tensor:
        # with several processes, this process's anchors against every process's embeddings
        return gathered_loss(self.contrastive_loss, outputs.float(), labels)

    def batch_statistics(self, batch: Batch) -> dict[str, Tensor]:
        return self.contrastive_loss.batch_statistics(batch.sim, batch.positives, batch.negatives)

    def set_progress(self, progress: float) -> None:
        self.contrastive_loss.set_progress(progress)  # e.g. a temperature schedule


class CrossEntropy(Objective):
    """A linear classifier on the projection ``z``, trained by cross-entropy on the class labels.

    Batches, views, schedule, monitoring and checkpoints are the engine's, so the baseline differs
    from a contrastive run in its objective only. Its final metrics add ``classifier_acc``, the test
    accuracy of the network's own classifier.
    """

    def __init__(self, config: TrainConfig, n_classes: int):
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # its own start, whatever else drew numbers before
            torch.manual_seed(config.seed)
            self.classifier = nn.Linear(config.proj_dim, n_classes)
        self.precision = config.precision

    def forward(self, z: Tensor) -> Tensor:
        return self.classifier(z)

    def loss(self, outputs: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(outputs.float(), labels)

    @torch.no_grad()
    def final_metrics(self, model: nn.Module, data) -> dict:
        _, z = encode(model, data.test_x, precision=self.precision)
        was_training = self.classifier.training
        self.classifier.eval()
        correct = (self.classifier(z).argmax(1) == data.test_y).float().mean()
        self.classifier.train(was_training)
        return {"objective": "cross-entropy", "classifier_acc": float(correct)}


#: One class per ``TrainConfig.objective``.
OBJECTIVES: dict[str, type[Objective]] = {"contrastive": Contrastive, "cross-entropy": CrossEntropy}


def make_objective(config: TrainConfig, n_classes: int) -> Objective:
    return OBJECTIVES[config.objective](config, n_classes)
