"""What a loss, an objective or a chapter wants recorded during training, without the trainer
knowing any of them by name.

Three moments, three small interfaces:

* **before every step** the trainer tells the objective where training stands
  (``Objective.set_progress(p)``, ``p`` the share of the run's steps done), which passes it to the
  loss (:meth:`clmini.losses.PairwiseLoss.set_progress`): a temperature schedule reads it there;

* **every step** the trainer gives the objective a :class:`Batch` (normalised projections, labels,
  similarity matrix, pair masks) and records what its ``batch_statistics`` returns, averaged over
  the epoch (e.g. DySTreSS's applied temperatures ``tau_pos``/``tau_neg``, which the loss itself
  reports: :meth:`clmini.losses.PairwiseLoss.batch_statistics`);
* **every epoch** the trainer encodes a fixed labelled bank and held-out queries (a
  :class:`Monitor`) and records the kNN accuracy, uniformity and tolerance, plus what each
  monitor named in ``TrainConfig.monitors`` returns (:data:`MONITORS`).

Monitors are part of a run's config (and hash) because they add to its recorded history.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor

from clmini.metrics import class_separation, knn_accuracy, linear_probe


@dataclass(frozen=True)
class Batch:
    """One training step as a hook sees it (everything detached, float32)."""

    z: Tensor          # [N, D] L2-normalised projections of the views
    labels: Tensor     # [N]
    sim: Tensor        # [N, N] cosine similarities z @ z.T
    positives: Tensor  # [N, N] bool: same label, not self
    negatives: Tensor  # [N, N] bool: other label


@dataclass(frozen=True)
class Monitor:
    """The per-epoch held-out check: encoder features ``h`` and projections ``z`` of a fixed
    stratified bank (``train_*``) and fixed queries (``test_*``), the same images in every run."""

    train_h: Tensor
    train_z: Tensor
    train_y: Tensor
    test_h: Tensor
    test_z: Tensor
    test_y: Tensor
    probe_iters: int


def class_geometry(m: Monitor) -> dict[str, float]:
    """SINCERE's learning trajectories: median similarity of each query's projection to its nearest
    same-class and nearest other-class bank projection, and their difference (the separation)."""
    return class_separation(m.train_z, m.train_y, m.test_z, m.test_y)


def probe(m: Monitor) -> dict[str, float]:
    """1-NN, 5-NN and linear-probe accuracy of the encoder features."""
    return {"knn1_acc": knn_accuracy(m.train_h, m.train_y, m.test_h, m.test_y, k=1),
            "knn5_acc": knn_accuracy(m.train_h, m.train_y, m.test_h, m.test_y, k=min(5, len(m.train_y))),
            "linear_probe_acc": linear_probe(m.train_h, m.train_y, m.test_h, m.test_y, max_iter=m.probe_iters)}


#: Per-epoch monitors a config may ask for by name (``TrainConfig.monitors``). A new one is a
#: function ``Monitor -> dict[str, float]`` added here.
MONITORS: dict[str, Callable[[Monitor], dict[str, float]]] = {
    "class-geometry": class_geometry,
    "probe": probe,
}
