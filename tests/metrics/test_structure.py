"""Local vs global structure: kNN at several k against a brute-force kNN, centroids in closed form."""
import math

import pytest
import torch

from clmini.metrics import centroid_concentration, centroid_similarity, class_centroids, knn_accuracies, knn_accuracy


def brute_force_knn(train, train_y, test, test_y, k, t=0.1):
    """The weighted kNN written out: full sort of the cosine similarities, votes exp(s / t) per class."""
    sim = torch.nn.functional.normalize(test.double(), dim=1) @ torch.nn.functional.normalize(train.double(), dim=1).T
    order = sim.argsort(dim=1, descending=True)[:, :k]
    correct = 0
    for row, neighbours in enumerate(order):
        votes = {}
        for j in neighbours.tolist():
            votes[int(train_y[j])] = votes.get(int(train_y[j]), 0.0) + math.exp(float(sim[row, j]) / t)
        correct += max(votes, key=votes.get) == int(test_y[row])
    return correct / len(test_y)


def test_knn_accuracies_equal_a_brute_force_knn_for_every_k():
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(300, 16, generator=g), torch.randn(70, 16, generator=g)
    train_y, test_y = torch.randint(0, 5, (300,), generator=g), torch.randint(0, 5, (70,), generator=g)
    ks = [1, 7, 50, 300]
    profile = knn_accuracies(train, train_y, test, test_y, ks)
    assert list(profile) == ks
    for k in ks:
        assert profile[k] == brute_force_knn(train, train_y, test, test_y, k)
        assert knn_accuracy(train, train_y, test, test_y, k=k) == profile[k]


@pytest.mark.parametrize("ks", [[0], [302], []])
def test_knn_accuracies_reject_bad_k(ks):
    with pytest.raises(ValueError):
        knn_accuracies(torch.randn(301, 4), torch.zeros(301, dtype=torch.long), torch.randn(3, 4),
                    torch.zeros(3, dtype=torch.long), ks)


def _clusters(directions, per_class=5, noise=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    directions = torch.as_tensor(directions, dtype=torch.float64)
    z = directions.repeat_interleave(per_class, 0)
    z = z + noise * torch.randn(z.shape, generator=g, dtype=z.dtype)
    labels = torch.arange(len(directions)).repeat_interleave(per_class)
    return z, labels


@pytest.mark.parametrize("directions, expected", [
    ([[1.0, 0.0], [-1.0, 0.0]], -1.0),                        # antipodal: as far as two classes go
    ([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]], 0.0),           # orthogonal
    ([[1.0, 0], [1.0, 0], [1.0, 0]], 1.0),                    # every class the same way
    ([[1.0, 0], [-0.5, math.sqrt(3) / 2], [-0.5, -math.sqrt(3) / 2]], -0.5),  # simplex: -1/(C-1)
])
def test_centroid_similarity_closed_forms(directions, expected):
    z, labels = _clusters(directions)
    assert centroid_similarity(z, labels) == pytest.approx(expected, abs=1e-12)
    assert centroid_concentration(z, labels) == pytest.approx(1.0)  # collapsed classes


def test_centroid_concentration_of_a_spread_class_and_of_scaled_inputs():
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 3.0], [0.0, -2.0]])  # one class spread evenly
    labels = torch.zeros(4, dtype=torch.long)
    assert class_centroids(z, labels).abs().max() < 1e-7  # inputs are normalised first
    assert centroid_concentration(z, labels) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="no sample"):
        class_centroids(z, torch.tensor([0, 0, 2, 2]))
