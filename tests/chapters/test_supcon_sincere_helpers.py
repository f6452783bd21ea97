"""clmini.chapters.supcon_sincere: repulsion statistics vs the symbolic result, run names, comparisons."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from clmini import symbolic
from clmini.losses import SINCERE, ContrastiveLoss, Scaled, SupCon, pair_masks
from clmini.engine.models import build_model
from clmini.chapters.supcon_sincere import (anchor_gradients, batch_repulsion, closed_form_gradients, clustered_batch,
                                            compare, embedding_batches, is_cross_entropy, positives_per_anchor,
                                            repulsion_statistics, run_label, sincere_bound_value)
from clmini.engine import TrainConfig, train_or_load
from engine_helpers import pattern_data

DENOMINATOR = {"supcon": "all", "sincere": "positive+negatives"}
LOSS = {"supcon": SupCon, "sincere": SINCERE}


@pytest.fixture(scope="module")
def data():
    return pattern_data(n_train=128, n_test=64)


def tiny(**overrides) -> TrainConfig:
    values = dict(width=4, proj_dim=16, epochs=2, batch_size=16, lr=3e-3, mode="supervised", loss="supcon",
                  monitor_train_size=64, monitor_test_size=32, knn_k=20, probe_iters=20)
    return TrainConfig(**{**values, **overrides})


# -- repulsion ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["supcon", "sincere"])
@pytest.mark.parametrize("per_class, n_classes, tau", [(2, 3, 0.1), (5, 4, 0.05), (16, 2, 0.2)])
def test_autograd_gradients_equal_the_closed_form(name, per_class, n_classes, tau):
    z, labels = clustered_batch(per_class, n_classes, 0.6, generator=torch.Generator().manual_seed(per_class))
    sim = z @ z.T
    grad = anchor_gradients(LOSS[name](tau), sim, labels)
    closed = closed_form_gradients(sim, labels, tau, DENOMINATOR[name])
    positives, _ = pair_masks(labels)
    assert torch.allclose(grad[positives], closed[positives], rtol=1e-10, atol=1e-12)


def test_closed_form_equals_the_symbolic_anchor_gradient():
    # One anchor with |P| = 2 and |N| = 3: batch of 3 + 3 samples, anchor 0 of class 0.
    z, labels = clustered_batch(3, 2, 0.5, generator=torch.Generator().manual_seed(3))
    sim, tau = z @ z.T, 0.1
    s_pos, s_neg = sim[0, 1:3].tolist(), sim[0, 3:].tolist()
    for name in ("supcon", "sincere"):
        exact = symbolic.evaluate_anchor(name, s_pos, s_neg, tau=tau)
        closed = closed_form_gradients(sim, labels, tau, DENOMINATOR[name])[0, 1:3]
        assert closed.tolist() == pytest.approx(list(exact.grad_positives), rel=1e-12)
    grads = symbolic.same_class_gradients(2, 3)
    args = symbolic.positive_similarities(2) + symbolic.negative_similarities(3) + (symbolic.tau,)
    form = symbolic.lambdify(grads.supcon_anchor_form, args)
    assert form(*s_pos[::-1], *s_neg, tau) == pytest.approx(float(closed_form_gradients(sim, labels, tau, "all")[0, 1]))


def test_sincere_never_repels_and_supcon_does_once_classes_cluster():
    for seed, per_class in enumerate((3, 4, 16)):
        z, labels = clustered_batch(per_class, 3, 0.7, generator=torch.Generator().manual_seed(seed))
        sim = z @ z.T
        sincere = repulsion_statistics(anchor_gradients(SINCERE(0.1), sim, labels), labels)
        supcon = repulsion_statistics(anchor_gradients(SupCon(0.1), sim, labels), labels)
        assert sincere["share"] == 0 and sincere["max_repulsive"] == 0 and sincere["mean_same_class"] < 0
        assert supcon["share"] > 0 and supcon["mean_repulsive"] > 0 and 0 < supcon["repulsive_mass"] < 1
    # one positive per anchor: q_p - 1 < 0, no repulsion under SupCon either
    z, labels = clustered_batch(2, 5, 0.9)
    assert repulsion_statistics(anchor_gradients(SupCon(0.1), z @ z.T, labels), labels)["share"] == 0


def test_anchor_gradients_leave_the_loss_alone_and_accept_any_contrastive_loss():
    loss = SupCon(0.1)
    z, labels = clustered_batch(3, 2)
    anchor_gradients(loss, z @ z.T, labels)
    assert loss.reduction == "mean"
    built = ContrastiveLoss(Scaled(0.1), denominator="all")
    assert torch.equal(anchor_gradients(built, z @ z.T, labels), anchor_gradients(loss, z @ z.T, labels))


def test_repulsion_statistics_by_hand():
    labels = torch.tensor([0, 0, 1, 1])
    grad = torch.zeros(4, 4, dtype=torch.float64)
    grad[0, 1], grad[1, 0], grad[2, 3], grad[3, 2] = 0.3, -0.1, -0.2, 0.1
    grad[0, 2] = 5.0  # a negative pair: ignored
    stats = repulsion_statistics(grad, labels)
    assert stats["share"] == 0.5
    assert stats["mean_repulsive"] == pytest.approx(0.2) and stats["max_repulsive"] == pytest.approx(0.3)
    assert stats["repulsive_mass"] == pytest.approx(0.4 / 0.7)
    assert stats["mean_same_class"] == pytest.approx(0.1 / 4)
    with pytest.raises(ValueError, match="no same-class pair"):
        repulsion_statistics(grad, torch.arange(4))


def test_clustered_batch_geometry():
    z, labels = clustered_batch(64, 3, 0.6, dim=256)
    assert z.shape == (192, 256) and torch.allclose(z.norm(dim=1), torch.ones(192, dtype=torch.float64))
    sim = z @ z.T
    positives, negatives = pair_masks(labels)
    assert float(sim[positives].mean()) == pytest.approx(0.6, abs=0.05)
    assert abs(float(sim[negatives].mean())) < 0.1
    with pytest.raises(ValueError):
        clustered_batch(4, 2, 1.0)


def test_positives_per_anchor():
    assert positives_per_anchor(256, 10) == 49
    assert positives_per_anchor(256, 10, 2) == 255
    assert positives_per_anchor(256, 2) == 255


def test_embedding_batches_and_batch_repulsion(data):
    model = build_model("small-cnn", 1, [0.5], [0.25], 16, 4)
    batches = embedding_batches(model, data, batch_size=8, classes_per_batch=2, n_batches=3)
    assert len(batches) == 3
    for z, labels in batches:
        assert z.shape == (16, 16) and sorted(torch.bincount(labels, minlength=4).tolist()) == [0, 0, 8, 8]
    again = embedding_batches(model, data, batch_size=8, classes_per_batch=2, n_batches=3)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))  # fixed seeds
    stats = batch_repulsion(SINCERE(0.1), batches)
    assert stats["share"] == 0
    assert 0 <= batch_repulsion(SupCon(0.1), batches)["share"] <= 1


# -- comparisons -------------------------------------------------------------------------------

def test_compare_verdicts():
    words = ("higher", "lower", "unclear", "single")
    assert compare([0.9], [0.8]).verdict(*words) == "single"
    assert math.isnan(compare([0.9], [0.8, 0.7]).spread)
    clear = compare([0.90, 0.91, 0.92], [0.80, 0.81, 0.79])
    assert clear.diff == pytest.approx(0.11) and clear.clear and clear.verdict(*words) == "higher"
    assert compare([0.80, 0.81, 0.79], [0.90, 0.91, 0.92]).verdict(*words) == "lower"
    noisy = compare([0.90, 0.70, 0.80], [0.85, 0.75, 0.79])
    assert not noisy.clear and noisy.verdict(*words) == "unclear"
    assert compare([1.0, 1.0], [0.5, 0.5]).verdict(*words) == "higher"  # zero spread, real gap
    assert compare([1.0, 1.0], [1.0, 1.0]).verdict(*words) == "unclear"
    with pytest.raises(ValueError):
        compare([], [1.0])


def test_sincere_bound_value():
    # Perfectly separated classes at a small temperature: the loss is ~0, the bound ~log(|N| + 1).
    z, labels = clustered_batch(4, 3, 0.999, dim=64)
    value = sincere_bound_value([(z.float(), labels)], 0.05)
    assert value == pytest.approx(math.log(8 + 1), abs=1e-3)
    # and it is log(|N| + 1) - L exactly
    loss = SINCERE(1.0)(z.float(), labels)
    assert sincere_bound_value([(z.float(), labels)], 1.0) == pytest.approx(math.log(9) - float(loss), rel=1e-5)


def test_run_labels(tmp_path, data):
    base = tiny(epochs=1, loss="sincere", loss_args={"temperature": 0.05})
    assert run_label(train_or_load(base, tmp_path, device="cpu", data=data, progress=False)) == "SINCERE τ=0.05"
    assert run_label(train_or_load(tiny(epochs=0), tmp_path, device="cpu", data=data, progress=False)) == "random init"
    ce = train_or_load(dataclasses.replace(base, objective="cross-entropy"), tmp_path, device="cpu", data=data,
                       progress=False)
    assert run_label(ce) == "cross-entropy" and is_cross_entropy(ce)
