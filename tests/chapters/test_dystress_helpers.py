"""Chapter 3's helpers: the negatives-only ablation (``DySTreSS(positive_temperature=...)``) vs its
SymPy form, applied temperatures, the relative penalty with a temperature per negative, structure."""
import numpy as np
import pytest
import sympy as sp
import torch

from clmini import symbolic as S
from clmini.losses import CosineTemperature, DySTreSS, InfoNCE
from clmini.metrics import knn_accuracy
from clmini.engine.models import build_model
from clmini.chapters.dystress import (applied_temperatures, intervals, penalty_density, structure_metrics,
                                     temperature_histograms)
from clmini.symbolic import dystress_relative_penalty, negatives_only_anchor_loss
from engine_helpers import pattern_data

LABELS = torch.tensor([0, 0, 1, 2, 3])  # anchor 0: positive 1, negatives 2, 3, 4


def _similarities(seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.nn.functional.normalize(torch.randn(5, 6, generator=g, dtype=torch.float64), dim=1)
    return (z @ z.T).clone().requires_grad_(True)


def negatives_only(tau_min, tau_max, tau_p, **kwargs):
    """The package's "tau(s) on the negatives only" loss."""
    return DySTreSS(tau_min, tau_max, positive_temperature=tau_p, **kwargs)


def test_equals_infonce_when_the_range_is_one_temperature():
    g = torch.Generator().manual_seed(1)
    z, y = torch.randn(12, 4, generator=g, dtype=torch.float64), torch.arange(6).repeat(2)
    assert negatives_only(0.3, 0.3, 0.3)(z, y).item() == pytest.approx(InfoNCE(0.3)(z, y).item(), rel=1e-12)


def test_differs_from_dystress_only_through_the_positive():
    sim = _similarities()
    ours = negatives_only(0.07, 0.2, 0.07, reduction="none").from_similarity(sim, LABELS)
    # with the positive's temperature set to tau(s_+), it is DySTreSS
    tau_plus = CosineTemperature(0.07, 0.2).temperature(sim[0, 1].detach()).item()
    same = negatives_only(0.07, 0.2, tau_plus, reduction="none").from_similarity(sim, LABELS)
    dystress = DySTreSS(0.07, 0.2, reduction="none").from_similarity(sim, LABELS)
    assert same[0].item() == pytest.approx(dystress[0].item(), rel=1e-12)
    assert ours[0].item() != pytest.approx(dystress[0].item(), rel=1e-3)


@pytest.mark.parametrize("detach", [True, False])
def test_value_and_gradient_equal_the_symbolic_form(detach):
    tau_min, tau_max, tau_p = 0.07, 0.2, 0.1
    sim = _similarities(3)
    loss = negatives_only(tau_min, tau_max, tau_p, detach=detach, reduction="none").from_similarity(sim, LABELS)
    loss[0].backward()
    expr, symbols, tau_sym = negatives_only_anchor_loss(3)
    values = {S.tau_min: tau_min, S.tau_max: tau_max, tau_sym: tau_p}
    point = dict(zip(symbols, [sim[0, j].item() for j in (1, 2, 3, 4)]))
    if detach:  # tau(s_n) held constant while differentiating, then evaluated
        held = {x: sp.Symbol(f"t_{x.name}", positive=True) for x in symbols[1:]}
        frozen = expr.subs({S.dystress_temperature(x): held[x] for x in symbols[1:]})
        assert frozen.free_symbols >= set(held.values())
        gradient = [sp.diff(frozen, x).subs({held[y]: S.dystress_temperature(y) for y in symbols[1:]})
                    for x in symbols]
    else:
        gradient = [sp.diff(expr, x) for x in symbols]
    exact = {**values, **point}
    assert loss[0].item() == pytest.approx(float(expr.subs(exact).evalf(30)), rel=1e-10)
    got = [sim.grad[0, j].item() for j in (1, 2, 3, 4)]
    want = [float(g.subs(exact).evalf(30)) for g in gradient]
    assert got == pytest.approx(want, rel=1e-9)


def test_applied_temperatures_counts_range_and_repeatability():
    data = pattern_data(n_train=32, n_test=16)
    torch.manual_seed(0)
    model = build_model("small-cnn", 1, [0.2], [0.2], proj_dim=8, width=4)
    cosine = CosineTemperature(0.07, 0.2)
    taus = applied_temperatures(model, data.train_x[:10], cosine, seed=3)
    assert taus["positive"].shape == (20,) and taus["negative"].shape == (20 * 18,)
    for values in taus.values():
        assert values.min() >= 0.07 - 1e-7 and values.max() <= 0.2 + 1e-7
    state = {k: v.clone() for k, v in model.state_dict().items()}
    again = applied_temperatures(model, data.train_x[:10], cosine, seed=3)
    assert torch.equal(again["negative"], taus["negative"])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # running stats untouched
    evaluated = applied_temperatures(model, data.train_x[:10], cosine, seed=3, training=False)
    assert not torch.equal(evaluated["negative"], taus["negative"])  # batch statistics vs running ones
    hist = temperature_histograms(taus, 0.07, 0.2, bins=13)
    width = (0.2 - 0.07) / 13
    assert len(hist["edges"]) == 14
    for key in ("positive", "negative"):
        assert sum(hist[key]) * width == pytest.approx(1.0)
    with pytest.raises(ValueError, match="CosineTemperature"):
        applied_temperatures(model, data.train_x[:4], InfoNCE(0.1).logit_map)


def test_relative_penalty_with_pair_temperatures():
    penalty = dystress_relative_penalty(2)
    assert sp.simplify(penalty.derived - penalty.form) == 0
    assert sp.simplify(penalty.fixed - S.relative_penalty(2)[0]) == 0


def test_penalty_density_integrates_to_one_and_reduces_to_eq5():
    s = np.linspace(-1, 1, 2001)
    fixed = penalty_density(s, 0.1)
    assert np.trapezoid(fixed, s) == pytest.approx(1.0)
    assert fixed[-1] / fixed[1000] == pytest.approx(np.exp(1 / 0.1))  # e^{(s - s')/tau}
    tau = 0.07 + 0.13 * np.sin(np.pi * s / 2) ** 2
    dyn = penalty_density(s, tau)
    assert np.trapezoid(dyn, s) == pytest.approx(1.0)
    assert dyn[-1] / dyn[1000] == pytest.approx(np.exp(1 / 0.2) * 0.07 / 0.2)


def test_intervals():
    x = np.arange(8.0)
    assert intervals(x, [1, 1, 0, 0, 1, 0, 1, 1]) == [(0.0, 1.0), (4.0, 4.0), (6.0, 7.0)]
    assert intervals(x, np.zeros(8)) == []
    with pytest.raises(ValueError):
        intervals(x, [True])


def test_structure_metrics_on_a_network_are_in_range_and_repeatable():
    data = pattern_data(n_train=64, n_test=32)
    torch.manual_seed(0)
    model = build_model("small-cnn", 1, [0.2], [0.2], proj_dim=8, width=4)
    first = structure_metrics(model, data, ks=(1, 5), bank_size=40, test_size=20)
    assert set(first) == {"knn@1", "knn@5", "centroid_sim", "centroid_norm"}
    assert all(0 <= first[f"knn@{k}"] <= 1 for k in (1, 5))
    assert -1 <= first["centroid_sim"] <= 1 and 0 <= first["centroid_norm"] <= 1
    assert structure_metrics(model, data, ks=(1, 5), bank_size=40, test_size=20) == first
    whole = structure_metrics(model, data, ks=(1,))
    h_train, h_test = model.features(data.train_x.float()), model.features(data.test_x.float())
    assert whole["knn@1"] == knn_accuracy(h_train.detach(), data.train_y, h_test.detach(), data.test_y, k=1)
