"""clmini.chapters.supcon_sincere: repulsion statistics vs the symbolic result, run names, tables of runs."""
from __future__ import annotations

import dataclasses
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from clmini import symbolic
from clmini.losses import SINCERE, ContrastiveLoss, Scaled, SupCon, pair_masks
from clmini.engine.models import build_model
from clmini.chapters.supcon_sincere import (CONFUSABLE_PAIRS, anchor_gradients, batch_repulsion, binary_pair,
                                            class_gap, closed_form_gradients, clustered_batch, configuration_points, same_class_spread,
                                            embedding_batches, is_cross_entropy, nearest_at_ceiling,
                                            positives_per_anchor,
                                            ranking_metric, repulsion_statistics, run_label,
                                            sensitivities, sensitivity_table, sincere_bound_value)
from clmini.engine.data import DATASETS
from clmini.study import verdicts
from clmini.study.plots import history_curves
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


# -- class gap ---------------------------------------------------------------------------------

def test_class_gap_by_hand_leaves_out_the_two_views_of_one_image():
    # 2 images per class, 2 classes, two views: rows k and k + 4 are one image.
    e = torch.eye(3, dtype=torch.float64)
    z = torch.stack([e[0], e[0], e[1], e[1]] * 2)   # each class on one axis, every view the same
    labels = torch.tensor([0, 0, 1, 1] * 2)
    assert class_gap([(z, labels)]) == pytest.approx(1.0)   # same class: cos 1; other class: cos 0
    # Views of one image made identical while distinct images of a class are orthogonal: the gap
    # must not count the view pairs (else it would be > 0).
    z = torch.stack([e[0], e[1], e[2], -e[2]] * 2)
    gap = class_gap([(z, torch.tensor([0, 0, 1, 1] * 2))])
    same = (0 + 0 + -1 + -1) / 4          # distinct-image same-class pairs: (0,1) cos 0, (2,3) cos -1 (each twice)
    other = float((torch.stack([e[0], e[1]]) @ torch.stack([e[2], -e[2]]).T).mean())
    assert gap == pytest.approx(same - other)
    with pytest.raises(ValueError, match="two views"):
        class_gap([(z[:7], labels[:7])])
    with pytest.raises(ValueError, match="at least one batch"):
        class_gap([])


def test_class_gap_grows_with_clustering(data):
    tight, _ = clustered_batch(8, 4, 0.9, generator=torch.Generator().manual_seed(1))
    loose, _ = clustered_batch(8, 4, 0.3, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(4).repeat_interleave(8)

    def two_view(z):  # the batch twice, as two views of each image
        return torch.cat([z, z]), torch.cat([labels, labels])

    assert class_gap([two_view(tight)]) > class_gap([two_view(loose)]) > 0
    model = build_model("small-cnn", 1, [0.5], [0.25], 16, 4)
    assert math.isfinite(class_gap(embedding_batches(model, data, batch_size=8, n_batches=2)))


# -- data sets and the binary task ---------------------------------------------------------------

def test_binary_pairs():
    assert set(CONFUSABLE_PAIRS) <= set(DATASETS)
    assert binary_pair("fashion-mnist") == (0, 6) and binary_pair("cifar10") == (3, 5)
    assert binary_pair("svhn", [7, 1]) == (1, 7)
    with pytest.raises(ValueError, match="no default pair"):
        binary_pair("svhn")
    for bad in ([1], [2, 2], [0, 1, 2], [-1, 3]):
        with pytest.raises(ValueError, match="two distinct"):
            binary_pair("cifar10", bad)


# -- tables of runs ------------------------------------------------------------------------------

def frame_of(values: dict) -> pd.DataFrame:
    """label -> per-seed values (seeds 0..n-1) of metrics 'a' and 'b' (b = a / 10)."""
    return pd.DataFrame([{"label": label, "seed": seed, "a": v, "b": v / 10}
                         for label, vs in values.items() for seed, v in enumerate(vs)])


def test_sensitivities_table_and_ranking_metric():
    frame = frame_of({"A": [0.90, 0.91, 0.92], "B": [0.70, 0.72, 0.71], "random init": [0.5, 0.5, 0.5]})
    frame["flat"] = [0.5, 0.6, 0.4, 0.52, 0.61, 0.41, 0.5, 0.5, 0.5]   # seeds spread it, configurations do not
    results = sensitivities(frame, {"a": "metric a", "flat": "flat"}, ["A", "B"])
    assert not results["a"].saturated and results["flat"].saturated
    assert results["a"].init == pytest.approx(0.5)
    assert results["a"] == verdicts.sensitivity({"A": [0.90, 0.91, 0.92], "B": [0.70, 0.72, 0.71]}, [0.5] * 3,
                                                metric="metric a")
    table = sensitivity_table(results, {"a": "metric a", "flat": "flat"})
    assert table.loc["metric a", "can rank"] == "yes"
    assert table.loc["flat", "can rank"] == "no: the runs move it no more than the seeds do"
    assert table.loc["metric a", "range"] == pytest.approx(0.2)
    # the paper's metric when it can rank; else the candidate moving most against its seed sd
    assert ranking_metric(results, ["a", "flat"]) == "a"
    assert ranking_metric(results, ["flat", "a"]) == "a"
    assert ranking_metric({"flat": results["flat"]}, ["flat"]) == "flat"   # none can: the paper's, flagged by the text
    more = sensitivities(frame, {"a": "a", "b": "b", "flat": "flat"}, ["A", "B"])
    assert ranking_metric(more, ["flat", "b", "a"]) in ("a", "b")  # equal ratio (b = a / 10): either
    with pytest.raises(ValueError, match="no sensitivity"):
        ranking_metric(results, ["nope"])
    # a metric the seeds would let rank but that cannot (its terms at a ceiling) is passed over and says why
    assert ranking_metric(results, ["a", "flat"], unable=["a"]) == "a"        # none can: the paper's
    assert ranking_metric(more, ["a", "b"], unable=["a"]) == "b"
    table = sensitivity_table(results, {"a": "metric a"}, {"a": "at the ceiling"})
    assert table.loc["metric a", "can rank"] == "no: at the ceiling" and table.loc["flat", "can rank"].startswith("no")
    assert "0.71000 to 0.91000" in sensitivities(frame, {"a": "a"}, ["A", "B"], digits={"a": 5})["a"].text
    with pytest.raises(ValueError, match="random-init"):
        sensitivities(frame[frame.label != "random init"], {"a": "a"}, ["A"])


def test_nearest_at_ceiling():
    frame = pd.DataFrame({"nearest_same_sim": [0.999, 0.99], "nearest_other_sim": [0.998, 0.985]})
    assert nearest_at_ceiling(frame)
    frame.loc[1, "nearest_other_sim"] = 0.97
    assert not nearest_at_ceiling(frame) and nearest_at_ceiling(frame, 0.9)
    with pytest.raises(ValueError, match="no runs"):
        nearest_at_ceiling(frame.iloc[:0])


def test_configuration_points_and_history_curves_draw_every_seed():
    frame = frame_of({"A": [0.90, 0.91, 0.92], "B": [0.70, 0.72, 0.71], "random init": [0.5, 0.52, 0.51]})
    fig, ax = plt.subplots()
    configuration_points(frame, "a", ["A", "B"], ax=ax)
    dots = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections if len(c.get_offsets()) == 3])
    assert sorted(dots.round(2).tolist()) == sorted([0.90, 0.91, 0.92, 0.70, 0.72, 0.71])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["A", "B"]
    assert any("random init (3 seeds)" == line.get_label() for line in ax.lines)
    plt.close(fig)
    history = pd.DataFrame([{"label": label, "seed": seed, "epoch": e, "m": 0.1 * e + seed}
                            for label in ("A", "B") for seed in range(3) for e in range(4)])
    fig, ax = plt.subplots()
    history_curves(history, "m", labels=["A", "B"], ax=ax, ylabel="m")
    thin = [line for line in ax.lines if line.get_linewidth() == 0.8]
    assert len(thin) == 6 and ax.get_ylabel() == "m"
    plt.close(fig)


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


# -- same-class spread ---------------------------------------------------------------------------

def test_same_class_spread_predicts_the_repulsion_share():
    for same_cos, per_class in ((0.6, 8), (0.9, 16), (0.3, 4)):
        z, labels = clustered_batch(per_class, 4, same_cos, generator=torch.Generator().manual_seed(per_class))
        for tau in (0.1, 0.5):
            spread = same_class_spread([(z, labels)], tau)
            direct = repulsion_statistics(anchor_gradients(SupCon(tau), z @ z.T, labels), labels)
            assert spread["share"] == pytest.approx(direct["share"])      # balanced: per anchor = per pair
            assert spread["share"] <= spread["share_without_negatives"] < 1
            assert spread["logit_sd"] == pytest.approx(spread["same_cos_sd"] / tau)
            assert 0 < spread["negative_share"] < 1
            assert spread["threshold"] == pytest.approx(-math.log(1 - spread["negative_share"]), rel=0.5)
    # by hand: one anchor, positives at cos 1 and 0, one negative at cos 0, tau = 1
    e = torch.eye(3, dtype=torch.float64)
    z = torch.stack([e[0], e[0], e[1], e[2]])
    labels = torch.tensor([0, 0, 0, 1])
    s = same_class_spread([(z[:4], labels)], 1.0)
    # anchors 0 and 1: positives at cos (1, 0), LME_P = log((e + 1)/2), m_N = 1/(e + 2): the cos-1 positive
    # is pushed (1 - LME_P = 0.380 > -log(1 - m_N) = 0.238); anchor 2: both positives at cos 0, none pushed;
    # anchor 3 has no positive and is left out
    lme = math.log((math.e + 1) / 2)
    assert s["top_margin"] == pytest.approx(2 * (1 - lme) / 3)
    assert s["threshold"] == pytest.approx((2 * -math.log(1 - 1 / (math.e + 2)) + -math.log(1 - 1 / 3)) / 3)
    assert s["share"] == pytest.approx(1 / 3) and s["share_without_negatives"] == pytest.approx(1 / 3)
    assert s["same_cos_mean"] == pytest.approx((0.5 + 0.5 + 0) / 3) and s["same_cos_sd"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="two positives"):
        same_class_spread([(z[:2], torch.tensor([0, 1]))], 1.0)
    # a tight class whose negatives keep some mass (tau = 1): the logit spread is below the threshold and
    # (almost) no positive is pushed, while without the negatives about half would be
    tight, labels = clustered_batch(16, 4, 0.995, generator=torch.Generator().manual_seed(2))
    s = same_class_spread([(tight, labels)], 1.0)
    assert s["top_margin"] < s["threshold"] and s["share"] == 0 and s["share_without_negatives"] > 0.3
