"""Local versus global structure of a representation: kNN at several k, class-centroid similarity.

DySTreSS (Manna et al.) studies how the temperature trades *local* structure (are a sample's
nearest neighbours of its class?) against *global* structure (are the classes far apart as
wholes?). Two cheap measurements of each:

- :func:`knn_profile`: the weighted kNN accuracy of :func:`clmini.evaluate.knn_accuracy` for
  several ``k`` from one similarity search. Small ``k`` reads only the immediate neighbourhood
  (local); large ``k`` reads the class's whole region (global).
- :func:`centroid_similarity`: the mean cosine similarity between the class centroids of the
  normalised embeddings (lower = classes spread further apart on the sphere, a global property),
  and :func:`centroid_concentration`, the mean length of those centroids (1 when a class collapses
  to one point, near 0 when it is spread over the whole sphere).

:func:`structure_metrics` measures them all on a trained network.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clmini.evaluate import encode

__all__ = ["knn_profile", "class_centroids", "centroid_similarity", "centroid_concentration",
           "structure_metrics"]

_CHUNK = 1024


def knn_profile(train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor,
                ks: Iterable[int], t: float = 0.1) -> dict[int, float]:
    """``{k: accuracy}`` of the weighted kNN classifier (votes ``exp(s / t)``) for every ``k``.

    The same classifier as :func:`clmini.evaluate.knn_accuracy`, with one top-``max(ks)`` search
    shared by all ``k`` (the ``k`` nearest are the first ``k`` of the ``max(ks)`` nearest).
    """
    ks = sorted({int(k) for k in ks})
    if not ks:
        raise ValueError("ks: give at least one k")
    if train_features.shape[0] != train_labels.shape[0] or test_features.shape[0] != test_labels.shape[0]:
        raise ValueError("features and labels must have the same number of rows")
    if ks[0] < 1 or ks[-1] > train_features.shape[0]:
        raise ValueError(f"every k must be in [1, {train_features.shape[0]}] (the training set size), got {ks}")
    if t <= 0:
        raise ValueError(f"t must be > 0, got {t}")
    bank = F.normalize(train_features.float(), dim=1)
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    correct = dict.fromkeys(ks, 0)
    for query, labels in zip(F.normalize(test_features.float(), dim=1).split(_CHUNK), test_labels.split(_CHUNK)):
        sim, index = (query @ bank.T).topk(ks[-1], dim=1)
        weights, neighbour_labels = (sim / t).exp(), train_labels[index]
        for k in ks:
            votes = torch.zeros(query.shape[0], n_classes, device=query.device)
            votes.scatter_add_(1, neighbour_labels[:, :k], weights[:, :k])
            correct[k] += int((votes.argmax(1) == labels).sum())
    return {k: correct[k] / test_labels.shape[0] for k in ks}


def class_centroids(z: Tensor, labels: Tensor) -> Tensor:
    """``[C, D]`` means of the L2-normalised embeddings of each class (not normalised again)."""
    if z.shape[0] != labels.shape[0]:
        raise ValueError(f"z: {z.shape[0]} rows vs {labels.shape[0]} labels")
    z = F.normalize(z.float(), dim=1)
    n_classes = int(labels.max()) + 1
    sums = torch.zeros(n_classes, z.shape[1], device=z.device, dtype=z.dtype).index_add_(0, labels, z)
    counts = torch.bincount(labels, minlength=n_classes)
    if bool((counts == 0).any()):
        raise ValueError(f"labels: classes {(counts == 0).nonzero().flatten().tolist()} have no sample")
    return sums / counts[:, None].to(z.dtype)


def centroid_similarity(z: Tensor, labels: Tensor) -> float:
    """Mean cosine similarity between the directions of two different class centroids.

    Global structure: ``-1/(C-1)`` when the ``C`` class directions are as far apart as they can
    be (a regular simplex), ``1`` when every class points the same way.
    """
    centroids = F.normalize(class_centroids(z, labels), dim=1)
    n = centroids.shape[0]
    if n < 2:
        raise ValueError("labels: need at least two classes")
    sim = centroids @ centroids.T
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))


def centroid_concentration(z: Tensor, labels: Tensor) -> float:
    """Mean length of the class centroids of normalised embeddings, in ``[0, 1]``.

    ``||mean_c z||^2`` is the mean similarity of two samples of class ``c`` (self-pairs included):
    1 when the class collapses to a point, about 0 when it is spread over the sphere.
    """
    return float(class_centroids(z, labels).norm(dim=1).mean())


@torch.no_grad()
def structure_metrics(model: nn.Module, data, ks: Iterable[int] = (1, 10, 200), bank_size: int | None = None,
                      test_size: int | None = None, t: float = 0.1) -> dict:
    """Local and global structure of ``model`` on ``data`` (a :class:`~clmini.data.ImageData`).

    kNN (:func:`knn_profile`) on encoder features, as the engine's kNN; centroid similarity and
    concentration on the normalised projections ``z`` of the test images, the space the loss
    shapes. ``bank_size``/``test_size``: stratified subsets (seed 0, the same for every model) of
    the train split (the kNN bank) and the test split; ``None``: all of it. Returns
    ``{"knn@k": ..., "centroid_sim": ..., "centroid_norm": ...}``.
    """
    subset = data.subset(n_train=bank_size if bank_size and bank_size < data.train_y.numel() else None,
                         n_test=test_size if test_size and test_size < data.test_y.numel() else None, seed=0)
    train_h, _ = encode(model, subset.train_x)
    test_h, test_z = encode(model, subset.test_x)
    result = {f"knn@{k}": acc for k, acc in knn_profile(train_h, subset.train_y, test_h, subset.test_y,
                                                        ks, t).items()}
    result["centroid_sim"] = centroid_similarity(test_z, subset.test_y)
    result["centroid_norm"] = centroid_concentration(test_z, subset.test_y)
    return result
