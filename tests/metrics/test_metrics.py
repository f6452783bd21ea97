"""clmini.metrics: each metric on inputs whose value is known in closed form."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clmini.metrics import (alignment, class_separation, embedding_separation, knn_accuracy, linear_probe,
                            mean_pair_similarity, similarity_histograms, tolerance, uniformity)


def simplex(n: int) -> torch.Tensor:
    """``n`` unit vectors with pairwise cosine ``-1/(n-1)`` (a regular simplex, in R^n)."""
    return F.normalize(torch.eye(n) - 1.0 / n, dim=1)


def test_uniformity_closed_forms():
    # Two antipodal points: ||z_i - z_j||^2 = 4, so -L_unif = 4t.
    assert uniformity(torch.tensor([[1.0, 0], [-1.0, 0]]), t=2) == pytest.approx(8.0)
    # A regular simplex of n points: ||z_i - z_j||^2 = 2 + 2/(n-1) for every pair.
    n = 5
    assert uniformity(simplex(n), t=2) == pytest.approx(2 * (2 + 2 / (n - 1)), rel=1e-6)
    # All points equal: 0 (the least uniform); scale does not matter (normalised inside).
    assert uniformity(torch.tensor([[3.0, 4.0]] * 7)) == pytest.approx(0.0, abs=1e-6)
    # Two clusters of m identical points, antipodal: the mean over i != j of exp(-t d^2) is
    # ((m-1) * 1 + m * e^{-4t}) / (2m - 1).
    m, t = 1500, 2.0  # more than one row chunk
    z = torch.tensor([[1.0, 0.0]] * m + [[-1.0, 0.0]] * m)
    expected = -math.log(((m - 1) + m * math.exp(-4 * t)) / (2 * m - 1))
    assert uniformity(z, t) == pytest.approx(expected, rel=1e-6)


def test_alignment_and_tolerance_closed_forms():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[0.0, 2.0], [0.0, 5.0]])  # normalised: 90 degrees, then identical
    assert alignment(z1, z2) == pytest.approx((2 + 0) / 2)
    assert alignment(z1, z2, alpha=1) == pytest.approx(math.sqrt(2) / 2)
    # class 0: three simplex vertices (pairwise -1/2); class 1: two identical vectors (+1).
    z = torch.cat([simplex(3), torch.tensor([[0.0, 0.0, 2.0]] * 2)])
    labels = torch.tensor([0, 0, 0, 1, 1])
    pairs = 3 * 2 * (-0.5) + 2 * 1 * 1.0  # ordered pairs i != j within classes
    assert tolerance(z, labels) == pytest.approx(pairs / (6 + 2), abs=1e-6)
    with pytest.raises(ValueError, match="no class has two members"):
        tolerance(z[:2], torch.tensor([0, 1]))


def test_knn_weighted_vote_by_hand():
    bank = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    bank_labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[1.0, 0.1]])
    s = F.normalize(query, dim=1) @ bank.T  # similarities to the three bank points
    # k = 1: the nearest point (class 0) decides.
    assert knn_accuracy(bank, bank_labels, query, torch.tensor([0]), k=1) == 1.0
    # k = 3, t = 1: class 1 wins iff e^{s1} + e^{s2} > e^{s0}, which holds here.
    assert math.exp(s[0, 1]) + math.exp(s[0, 2]) > math.exp(s[0, 0])
    assert knn_accuracy(bank, bank_labels, query, torch.tensor([1]), k=3, t=1.0) == 1.0
    # small t: the weights become a max, class 0 wins again.
    assert knn_accuracy(bank, bank_labels, query, torch.tensor([0]), k=3, t=0.01) == 1.0
    with pytest.raises(ValueError, match="k must be in"):
        knn_accuracy(bank, bank_labels, query, torch.tensor([0]), k=4)


def test_knn_on_clusters_and_on_noise():
    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(5, 32, generator=g), dim=1)
    labels = torch.arange(2500) % 5
    points = centres[labels] + 0.05 * torch.randn(2500, 32, generator=g)
    assert knn_accuracy(points[:2000], labels[:2000], points[2000:], labels[2000:], k=50) == 1.0
    noise = torch.randn(2500, 32, generator=g)  # labels unrelated to the points: chance level
    assert abs(knn_accuracy(noise[:2000], labels[:2000], noise[2000:], labels[2000:], k=50) - 0.2) < 0.06


def test_linear_probe_separable_and_chance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 20, generator=g)
    w = torch.randn(20, 4, generator=g)
    y = (x @ w).argmax(1)  # linearly separable by construction
    acc = linear_probe(x[:2000], y[:2000], x[2000:], y[2000:])
    assert acc > 0.97
    y_random = torch.randint(0, 4, (3000,), generator=g)
    assert abs(linear_probe(x[:2000], y_random[:2000], x[2000:], y_random[2000:]) - 0.25) < 0.06
    assert linear_probe(x[:2000], y[:2000], x[2000:], y[2000:]) == acc  # deterministic
    assert linear_probe(x[:2000], y[:2000], x[2000:], y[2000:], max_iter=1) < acc  # it does optimise


def test_embedding_separation_closed_form():
    # Train: class 0 at e1, class 1 at e2. Test points of class 0 at angle a from e1 towards e2:
    # nearest same-class similarity cos a, nearest other-class sin a.
    angles = torch.tensor([0.1, 0.2, 0.3])
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    test = torch.stack([angles.cos(), angles.sin()], 1)
    expected = float((angles.cos().median() - angles.sin().median()).abs())
    value = embedding_separation(train, torch.tensor([0, 1]), test, torch.zeros(3, dtype=torch.long))
    assert value == pytest.approx(expected, abs=1e-6)
    terms = class_separation(train, torch.tensor([0, 1]), test, torch.zeros(3, dtype=torch.long))
    same, other = terms["nearest_same_sim"], terms["nearest_other_sim"]
    assert same == pytest.approx(math.cos(0.2), abs=1e-6) and other == pytest.approx(math.sin(0.2), abs=1e-6)
    assert terms["separation"] == value


def test_pair_similarities_and_histograms():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert mean_pair_similarity(z, labels) == pytest.approx((1.0, 0.0))
    hist = similarity_histograms(z, labels, bins=4)
    assert hist["edges"] == pytest.approx([-1, -0.5, 0, 0.5, 1])
    width = 0.5
    assert hist["positive"] == pytest.approx([0, 0, 0, 1 / width])   # all positives at s = 1
    assert hist["negative"] == pytest.approx([0, 0, 1 / width, 0])   # all negatives at s = 0
    for key in ("positive", "negative"):
        assert sum(hist[key]) * width == pytest.approx(1.0)


def test_uniformity_equals_its_float64_definition():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(1300, 16, generator=g)  # more than one row chunk
    zn = F.normalize(z.double(), dim=1)
    d2 = torch.cdist(zn, zn) ** 2
    off = ~torch.eye(len(z), dtype=torch.bool)
    for t in (0.5, 2.0, 10.0):
        expected = -math.log(torch.exp(-t * d2[off]).mean().item())
        assert uniformity(z, t=t) == pytest.approx(expected, rel=1e-6)


def test_class_separation_equals_a_brute_force_nearest_neighbour():
    g = torch.Generator().manual_seed(4)
    bank, bank_y = torch.randn(1500, 8, generator=g), torch.randint(0, 5, (1500,), generator=g)
    query, query_y = torch.randn(1100, 8, generator=g), torch.randint(0, 5, (1100,), generator=g)
    sim = F.normalize(query, dim=1) @ F.normalize(bank, dim=1).T
    same = torch.stack([sim[i, bank_y == query_y[i]].max() for i in range(len(query))])
    other = torch.stack([sim[i, bank_y != query_y[i]].max() for i in range(len(query))])
    terms = class_separation(bank, bank_y, query, query_y)
    assert terms["nearest_same_sim"] == float(same.median())
    assert terms["nearest_other_sim"] == float(other.median())
    assert terms["separation"] == float((same.median() - other.median()).abs())

