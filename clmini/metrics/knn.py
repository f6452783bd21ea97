"""Weighted kNN accuracy on cosine similarity, at one ``k`` or several at once."""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from clmini.metrics.features import CHUNK, check_rows


def knn_accuracies(train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor,
                ks: Iterable[int], t: float = 0.1) -> dict[int, float]:
    """``{k: accuracy}`` of the weighted kNN classifier (votes ``exp(s / t)``) for every ``k``.

    Each of the ``k`` nearest training samples votes for its class with weight ``exp(s / t)``
    (Wu et al. 2018, as in the SimCLR/InstDisc kNN monitor). One top-``max(ks)`` search is shared
    by all ``k`` (the ``k`` nearest are the first ``k`` of the ``max(ks)`` nearest).
    """
    ks = sorted({int(k) for k in ks})
    if not ks:
        raise ValueError("ks: give at least one k")
    check_rows(train_features, train_labels, "train_features")
    check_rows(test_features, test_labels, "test_features")
    if ks[0] < 1 or ks[-1] > train_features.shape[0]:
        raise ValueError(f"every k must be in [1, {train_features.shape[0]}] (the training set size), got {ks}")
    if t <= 0:
        raise ValueError(f"t must be > 0, got {t}")
    bank = F.normalize(train_features.float(), dim=1)
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    correct = dict.fromkeys(ks, 0)
    for query, labels in zip(F.normalize(test_features.float(), dim=1).split(CHUNK), test_labels.split(CHUNK)):
        sim, index = (query @ bank.T).topk(ks[-1], dim=1)
        weights, neighbour_labels = (sim / t).exp(), train_labels[index]
        for k in ks:
            votes = torch.zeros(query.shape[0], n_classes, device=query.device)
            votes.scatter_add_(1, neighbour_labels[:, :k], weights[:, :k])
            correct[k] += int((votes.argmax(1) == labels).sum())
    return {k: correct[k] / test_labels.shape[0] for k in ks}


def knn_accuracy(train_features: Tensor, train_labels: Tensor, test_features: Tensor,
                 test_labels: Tensor, k: int = 200, t: float = 0.1) -> float:
    """Accuracy of the weighted kNN classifier of :func:`knn_accuracies` at one ``k``."""
    return knn_accuracies(train_features, train_labels, test_features, test_labels, [k], t)[k]
