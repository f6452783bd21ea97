"""What a representation is worth: kNN and linear-probe accuracy, and the geometry the papers measure.

- :func:`knn_accuracy`: weighted kNN on cosine similarity (Wu et al. 2018; k = 200, t = 0.1 as in
  the SimCLR/DySTreSS evaluations);
- :func:`linear_probe`: L2-regularised softmax regression (L-BFGS) on frozen features;
- :func:`uniformity` (Wang & Isola, reported as ``-L_unif`` like Wang & Liu), :func:`alignment`,
  :func:`tolerance` (Wang & Liu eq. 11), :func:`embedding_separation` (SINCERE) and its two terms
  (:func:`nearest_class_similarities`),
  :func:`similarity_histograms` (positive/negative pair similarities).

Geometric metrics L2-normalise their inputs first: they are defined on the unit sphere. Large
pairwise computations run in row chunks so memory stays ``O(chunk * N)``.
"""
from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clmini.losses import pair_masks

_CHUNK = 1024


def autocast(device: torch.device, enabled: bool = True):
    """bfloat16 autocast on CUDA (tensor cores, no loss scaling needed); nothing elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def encode(model: nn.Module, images: Tensor, batch_size: int = 1024) -> tuple[Tensor, Tensor]:
    """Encoder features ``h`` and projections ``z`` (float32) of uint8 ``images``, in eval mode."""
    was_training = model.training
    model.eval()
    features, projections = [], []
    device = images.device
    try:
        for batch in images.split(batch_size):
            with autocast(device):
                h = model.features(batch.float().div_(255))
                z = model.head(h)
            features.append(h.float())
            projections.append(z.float())
    finally:
        model.train(was_training)
    return torch.cat(features), torch.cat(projections)


def _check_pair(a: Tensor, b: Tensor, what: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{what}: {a.shape[0]} rows vs {b.shape[0]} labels or rows")


def knn_accuracy(train_features: Tensor, train_labels: Tensor, test_features: Tensor,
                 test_labels: Tensor, k: int = 200, t: float = 0.1) -> float:
    """Accuracy of a weighted kNN classifier on cosine similarity.

    Each of the ``k`` nearest training samples votes for its class with weight ``exp(s / t)``
    (Wu et al. 2018, as in the SimCLR/InstDisc kNN monitor).
    """
    _check_pair(train_features, train_labels, "train_features")
    _check_pair(test_features, test_labels, "test_features")
    if not 1 <= k <= train_features.shape[0]:
        raise ValueError(f"k must be in [1, {train_features.shape[0]}] (the training set size), got {k}")
    if t <= 0:
        raise ValueError(f"t must be > 0, got {t}")
    bank = F.normalize(train_features.float(), dim=1)
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    correct = 0
    for query, labels in zip(F.normalize(test_features.float(), dim=1).split(_CHUNK),
                             test_labels.split(_CHUNK)):
        sim, index = (query @ bank.T).topk(k, dim=1)
        votes = torch.zeros(query.shape[0], n_classes, device=query.device)
        votes.scatter_add_(1, train_labels[index], (sim / t).exp())
        correct += int((votes.argmax(1) == labels).sum())
    return correct / test_labels.shape[0]


def linear_probe(train_features: Tensor, train_labels: Tensor, test_features: Tensor,
                 test_labels: Tensor, max_iter: int = 300, weight_decay: float = 1e-4) -> float:
    """Test accuracy of a linear classifier (L2-regularised softmax regression) on frozen features.

    Features are standardised with the training statistics and the convex objective
    ``mean cross-entropy + weight_decay / 2 * ||W||^2`` is minimised full-batch by L-BFGS from
    zero weights: no learning rate, batch order or initialisation to tune or to get lucky with.
    Nothing is tuned on the test set.
    """
    _check_pair(train_features, train_labels, "train_features")
    _check_pair(test_features, test_labels, "test_features")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    mean, std = train_features.float().mean(0), train_features.float().std(0).clamp(min=1e-6)
    x_train = (train_features.float() - mean) / std
    x_test = (test_features.float() - mean) / std
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    probe = nn.Linear(x_train.shape[1], n_classes).to(x_train.device)
    nn.init.zeros_(probe.weight)
    nn.init.zeros_(probe.bias)
    optimizer = torch.optim.LBFGS(probe.parameters(), lr=1, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def objective() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(probe(x_train), train_labels) + 0.5 * weight_decay * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    with torch.no_grad():
        return float((probe(x_test).argmax(1) == test_labels).float().mean())


def uniformity(z: Tensor, t: float = 2.0) -> float:
    """``-L_unif = -log mean_{i != j} exp(-t ||z_i - z_j||^2)`` on normalised ``z`` (Wang & Isola).

    Larger is more uniform; 0 when all points coincide; ``4 t`` for two antipodal points.
    """
    if z.shape[0] < 2:
        raise ValueError(f"z: need at least 2 points, got {z.shape[0]}")
    z = F.normalize(z.float(), dim=1)
    n = z.shape[0]
    # On the sphere ||z_i - z_j||^2 = 2 - 2 s_ij; the diagonal is masked out with -inf.
    terms = []
    for start in range(0, n, _CHUNK):
        block = -t * (2 - 2 * z[start:start + _CHUNK] @ z.T)
        rows = torch.arange(block.shape[0], device=z.device)
        block[rows, rows + start] = float("-inf")
        terms.append(torch.logsumexp(block.double().flatten(), 0))
    log_mean = torch.logsumexp(torch.stack(terms), 0) - math.log(n * (n - 1))
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
    _check_pair(z, labels, "z")
    z = F.normalize(z.float(), dim=1)
    n_classes = int(labels.max()) + 1
    sums = torch.zeros(n_classes, z.shape[1], device=z.device).index_add_(0, labels, z)
    counts = torch.bincount(labels, minlength=n_classes).float()
    pairs = (counts * (counts - 1)).sum()
    if pairs == 0:
        raise ValueError("labels: no class has two members, tolerance is undefined")
    return float(((sums * sums).sum() - counts.sum()) / pairs)


def nearest_class_similarities(train_z: Tensor, train_labels: Tensor, test_z: Tensor,
                                test_labels: Tensor) -> tuple[float, float]:
    """Medians over the test set of the cosine similarity to the nearest same-class and to the
    nearest other-class training embedding (the two terms of :func:`embedding_separation`)."""
    same, other = _nearest_class_medians(train_z, train_labels, test_z, test_labels)
    return float(same), float(other)


def _nearest_class_medians(train_z: Tensor, train_labels: Tensor, test_z: Tensor,
                           test_labels: Tensor) -> tuple[Tensor, Tensor]:
    _check_pair(train_z, train_labels, "train_z")
    _check_pair(test_z, test_labels, "test_z")
    bank = F.normalize(train_z.float(), dim=1)
    nearest_same, nearest_other = [], []
    for query, labels in zip(F.normalize(test_z.float(), dim=1).split(_CHUNK), test_labels.split(_CHUNK)):
        sim = query @ bank.T
        same = labels[:, None] == train_labels[None, :]
        nearest_same.append(sim.masked_fill(~same, float("-inf")).amax(1))
        nearest_other.append(sim.masked_fill(same, float("-inf")).amax(1))
    same, other = torch.cat(nearest_same), torch.cat(nearest_other)
    if torch.isinf(same).any() or torch.isinf(other).any():
        raise ValueError("train_labels: every test class needs same-class and other-class training samples")
    return same.median(), other.median()


def embedding_separation(train_z: Tensor, train_labels: Tensor, test_z: Tensor,
                         test_labels: Tensor) -> float:
    """SINCERE's separation: ``|median_i max_{same class} s - median_i max_{other class} s|``.

    For each test embedding, the cosine similarity to its nearest same-class and nearest
    other-class training embedding; the medians over the test set are compared.
    """
    same, other = _nearest_class_medians(train_z, train_labels, test_z, test_labels)
    return float((same - other).abs())


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
    _check_pair(z, labels, "z")
    z = F.normalize(z.float(), dim=1)
    sim = (z @ z.T).clamp(-1, 1).cpu()
    positives, negatives = pair_masks(labels.cpu())
    edges = torch.linspace(-1, 1, bins + 1)

    def density(values: Tensor) -> list[float]:
        counts = torch.histc(values, bins=bins, min=-1, max=1)
        return (counts / counts.sum().clamp(min=1) / (2 / bins)).tolist()

    return {"edges": edges.tolist(), "positive": density(sim[positives]),
            "negative": density(sim[negatives])}


def evaluate_representation(model: nn.Module, data, knn_k: int = 200, eval_train_size: int | None = None,
                            probe_iters: int = 300, augment_config=None, n_pairs: int = 2000) -> dict:
    """The final evaluation of a network on an :class:`~clmini.data.ImageData`.

    Encoder features ``h`` give kNN and linear-probe accuracy (bank/probe training set: the train
    split, or a stratified subset of ``eval_train_size`` images; queries: the whole test split).
    Normalised projections ``z`` of the test split give uniformity, tolerance and separation; two
    augmented views of ``n_pairs`` test images give alignment, the mean positive/negative
    similarity and the histograms. Subsets and views use fixed seeds, so every run (and the
    random-init baseline) is measured on the same images.
    """
    from clmini.augment import AugmentConfig, augment
    from clmini.data import stratified_indices
    from clmini.losses import two_views

    whole = eval_train_size is None or eval_train_size >= data.train_y.numel()
    bank = data if whole else data.subset(n_train=eval_train_size, seed=0)
    train_h, train_z = encode(model, bank.train_x)
    test_h, test_z = encode(model, data.test_x)
    # The same images as data.subset(n_test=n_pairs, seed=0), whose test split is drawn with seed 1.
    pick = stratified_indices(data.test_y, min(n_pairs, data.test_y.numel()), seed=1).to(data.device)
    generator = torch.Generator().manual_seed(0)
    config = augment_config or AugmentConfig()
    views = [augment(data.test_x[pick], generator, config) for _ in range(2)]
    was_training = model.training
    model.eval()
    with torch.no_grad(), autocast(data.device):
        z1, z2 = (model(v).float() for v in views)
    model.train(was_training)
    z, ids = two_views(z1, z2)
    positive, negative = mean_pair_similarity(z, ids)
    nearest_same, nearest_other = _nearest_class_medians(train_z, bank.train_y, test_z, data.test_y)
    return {
        "knn_acc": knn_accuracy(train_h, bank.train_y, test_h, data.test_y, k=min(knn_k, len(bank.train_y))),
        "knn_k": min(knn_k, len(bank.train_y)),
        "linear_probe_acc": linear_probe(train_h, bank.train_y, test_h, data.test_y, max_iter=probe_iters),
        "uniformity": uniformity(test_z),
        "tolerance": tolerance(test_z, data.test_y),
        "alignment": alignment(z1, z2),
        "separation": float((nearest_same - nearest_other).abs()),  # embedding_separation
        "nearest_same_sim": float(nearest_same),
        "nearest_other_sim": float(nearest_other),
        "pos_sim": positive,
        "neg_sim": negative,
        "histograms": {"views": similarity_histograms(z, ids),
                       "classes": similarity_histograms(test_z[pick], data.test_y[pick])},
        "eval_train_size": len(bank.train_y),
        "eval_test_size": len(data.test_y),
    }
