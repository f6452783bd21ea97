"""The geometry the papers measure, on the unit sphere: uniformity, alignment, tolerance (Wang &
Liu eq. 11), SINCERE's class separation, class centroids, pair-similarity histograms.

Every function L2-normalises its inputs first: these quantities are defined on the sphere.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from clmini.losses import pair_masks
from clmini.metrics.features import CHUNK, check_rows


def uniformity(z: Tensor, t: float = 2.0) -> float:
    """``-L_unif = -log mean_{i != j} exp(-t ||z_i - z_j||^2)`` on normalised ``z`` (Wang & Isola).

    Larger is more uniform; 0 when all points coincide; ``4 t`` for two antipodal points.
    """
    if z.shape[0] < 2:
        raise ValueError(f"z: need at least 2 points, got {z.shape[0]}")
    z = F.normalize(z.float(), dim=1)
    n = z.shape[0]
    # On the sphere -t ||z_i - z_j||^2 = 2t (s_ij - 1); the diagonal is masked out with -inf. Each
    # row's log-sum-exp is exact in float32 (it subtracts the row's maximum); only the n row values
    # are combined in float64.
    rows = []
    for start in range(0, n, CHUNK):
        block = (z[start:start + CHUNK] @ z.T).sub_(1).mul_(2 * t)                 # [chunk, n]
        block.diagonal(offset=start).fill_(float("-inf"))
        rows.append(torch.logsumexp(block, dim=1))                                  # [chunk]
    log_mean = torch.logsumexp(torch.cat(rows).double(), 0) - math.log(n * (n - 1))
    return float(-log_mean)


def alignment(z1: Tensor, z2: Tensor, alpha: float = 2.0) -> float:
    """``E ||z1_i - z2_i||^alpha`` over positive pairs of normalised embeddings (Wang & Isola)."""
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {list(z1.shape)} and {list(z2.shape)}")
    d = F.normalize(z1.float(), dim=1) - F.normalize(z2.float(), dim=1)
    return float(d.norm(dim=1).pow(alpha).mean())


def tolerance(z: Tensor, labels: Tensor) -> float:
    """Mean cosine similarity of same-class pairs ``i != j`` (Wang & Liu eq. 11).

    Per class, ``sum_{i != j} z_i . z_j = ||sum_i z_i||^2 - n_c`` for unit vectors: ``O(N D)``.
    """
    check_rows(z, labels, "z")
    z = F.normalize(z.float(), dim=1)
    n_classes = int(labels.max()) + 1
    sums = torch.zeros(n_classes, z.shape[1], device=z.device).index_add_(0, labels, z)
    counts = torch.bincount(labels, minlength=n_classes).float()
    pairs = (counts * (counts - 1)).sum()
    if pairs == 0:
        raise ValueError("labels: no class has two members, tolerance is undefined")
    return float(((sums * sums).sum() - counts.sum()) / pairs)


def class_separation(train_z: Tensor, train_labels: Tensor, test_z: Tensor, test_labels: Tensor) -> dict[str, float]:
    """SINCERE's separation and its two terms.

    For each test embedding, the cosine similarity to its nearest same-class and to its nearest
    other-class training embedding; ``nearest_same_sim`` and ``nearest_other_sim`` are their medians
    over the test set and ``separation = |nearest_same_sim - nearest_other_sim|``.
    """
    check_rows(train_z, train_labels, "train_z")
    check_rows(test_z, test_labels, "test_z")
    bank = F.normalize(train_z.float(), dim=1)
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    nearest_same, nearest_other = [], []
    for query, labels in zip(F.normalize(test_z.float(), dim=1).split(CHUNK), test_labels.split(CHUNK)):
        sim = query @ bank.T                                                          # [chunk, bank]
        # the nearest bank sample of each class, in one pass over the similarities
        per_class = torch.full((len(query), n_classes), float("-inf"), device=sim.device)  # [chunk, C]
        per_class.scatter_reduce_(1, train_labels.expand_as(sim), sim, "amax")
        own = labels[:, None]
        nearest_same.append(per_class.gather(1, own).squeeze(1))
        nearest_other.append(per_class.scatter(1, own, float("-inf")).amax(1))
    same, other = torch.cat(nearest_same), torch.cat(nearest_other)
    if torch.isinf(same).any() or torch.isinf(other).any():
        raise ValueError("train_labels: every test class needs same-class and other-class training samples")
    same, other = same.median(), other.median()
    return {"nearest_same_sim": float(same), "nearest_other_sim": float(other),
            "separation": float((same - other).abs())}


def embedding_separation(train_z: Tensor, train_labels: Tensor, test_z: Tensor, test_labels: Tensor) -> float:
    """SINCERE's separation ``|median_i max_{same class} s - median_i max_{other class} s|``
    (:func:`class_separation`)."""
    return class_separation(train_z, train_labels, test_z, test_labels)["separation"]


def mean_pair_similarity(z: Tensor, labels: Tensor) -> tuple[float, float]:
    """Mean cosine similarity over positive pairs (same label, ``i != j``) and over negative pairs."""
    z = F.normalize(z.float(), dim=1)
    sim = z @ z.T
    positives, negatives = pair_masks(labels)
    return float(sim[positives].mean()), float(sim[negatives].mean())


def similarity_histograms(z: Tensor, labels: Tensor, bins: int = 50) -> dict[str, list[float]]:
    """Densities of cosine similarity over positive and over negative pairs, on ``bins`` bins in [-1, 1].

    ``labels`` define the pairs: instance ids for two views (``two_views``), classes for
    same-class/other-class histograms. Returns ``edges``, ``positive`` and ``negative`` (densities,
    each integrating to 1).
    """
    check_rows(z, labels, "z")
    z = F.normalize(z.float(), dim=1)
    sim = (z @ z.T).clamp(-1, 1).cpu()
    positives, negatives = pair_masks(labels.cpu())
    edges = torch.linspace(-1, 1, bins + 1)

    def density(values: Tensor) -> list[float]:
        counts = torch.histc(values, bins=bins, min=-1, max=1)
        return (counts / counts.sum().clamp(min=1) / (2 / bins)).tolist()

    return {"edges": edges.tolist(), "positive": density(sim[positives]),
            "negative": density(sim[negatives])}


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
