"""The symbolic results the chapters show: exact identities (``simplify(a - b) == 0``), limits, signs.

Sizes are small (<= 3 positives, <= 3 negatives) and every derivation is cached in
``clmini.symbolic``, so the whole file runs in seconds.
"""
from __future__ import annotations

import math
import random

import mpmath
import pytest
import sympy as sp

from clmini import symbolic as S
from clmini.symbolic import s, tau, tau_max, tau_min


def is_zero(expr) -> bool:
    return sp.simplify(expr) == 0


def random_similarities(rng: random.Random, n: int) -> list[float]:
    return [rng.uniform(-0.95, 0.95) for _ in range(n)]


def numeric(expr, values: dict) -> float:
    return float(expr.subs(values).evalf(30))


# --------------------------------------------------------------------------- one anchor's loss
def test_anchor_loss_infonce_is_wang_liu_eq1():
    loss = S.anchor_loss("infonce", 1, 2)
    (p,), (n1, n2) = loss.positives, loss.negatives
    eq1 = -sp.log(sp.exp(p / tau) / (sp.exp(p / tau) + sp.exp(n1 / tau) + sp.exp(n2 / tau)))
    assert loss.expr == eq1
    assert loss.params == (tau,)
    assert r"\log" in sp.latex(loss.expr) and r"\tau" in sp.latex(loss.expr)


def test_anchor_loss_supcon_denominator_holds_all_positives_sincere_only_its_own():
    supcon, sincere = S.anchor_loss("supcon", 2, 1), S.anchor_loss("sincere", 2, 1)
    p1, p2 = supcon.positives
    (n1,) = supcon.negatives
    e = lambda x: sp.exp(x / tau)  # noqa: E731
    assert is_zero(supcon.expr - (-sp.log(e(p1) / (e(p1) + e(p2) + e(n1))) - sp.log(e(p2) / (e(p1) + e(p2) + e(n1)))) / 2)
    assert is_zero(sincere.expr - (-sp.log(e(p1) / (e(p1) + e(n1))) - sp.log(e(p2) / (e(p2) + e(n1)))) / 2)


def test_anchor_loss_simple_default_lambda_and_hard_variants():
    simple = S.anchor_loss("simple", 2, 3, lam=None)
    p1, p2 = simple.positives
    assert is_zero(simple.expr - (-(p1 + p2) / 2 + sp.Add(*simple.negatives) / 4))
    assert S.anchor_loss("hard", 1, 2).expr == S.anchor_loss("infonce", 1, 2).expr
    assert S.anchor_loss("hard-simple", 1, 2).expr == S.anchor_loss("simple", 1, 2).expr
    assert S.anchor_loss("infonce", 1, 2, temperature=sp.Rational(1, 5)).params == ()


def test_anchor_loss_rejects_bad_arguments():
    with pytest.raises(ValueError, match="name"):
        S.anchor_loss("ntxent", 1, 2)
    with pytest.raises(ValueError, match="n_pos"):
        S.anchor_loss("infonce", 0, 2)
    with pytest.raises(ValueError, match="tau"):
        S.evaluate_anchor("infonce", [0.1], [0.2])


def test_no_negatives_gives_zero_infonce_but_not_supcon():
    assert S.anchor_loss("infonce", 2, 0).expr == 0
    assert is_zero(S.anchor_loss("supcon", 2, 0).expr.subs(dict.fromkeys(S.positive_similarities(2), s))
                   - sp.log(2))


@pytest.mark.parametrize("name, params", [
    ("infonce", {"tau": 0.3}), ("supcon", {"tau": 0.2}), ("sincere", {"tau": 0.5}),
    ("temperature-free", {}), ("dystress", {"tau_min": 0.07, "tau_max": 0.2}),
    ("simple", {"lam": 0.7}), ("hard", {"tau": 0.1}), ("hard-simple", {"lam": 0.25}),
])
def test_evaluated_gradient_is_the_derivative_of_the_evaluated_value(name, params):
    """Central differences in 40-digit arithmetic against the lambdified gradient (dystress: not detached)."""
    rng = random.Random(len(name))
    s_pos, s_neg = random_similarities(rng, 2), random_similarities(rng, 3)
    at = S.evaluate_anchor(name, s_pos, s_neg, detach=False, **params)
    loss = S.anchor_loss(name, 2, 3, detach=False)
    value_fn = loss.value_function("mpmath")
    args = [params[str(p).replace("lambda", "lam")] for p in loss.params]
    with mpmath.workdps(40):
        point = [mpmath.mpf(x) for x in s_pos + s_neg]
        assert float(value_fn(*point, *args)) == pytest.approx(at.value, rel=1e-14)
        for k, expected in enumerate(at.grad_positives + at.grad_negatives):
            derivative = mpmath.diff(lambda x: value_fn(*point[:k], x, *point[k + 1:], *args), point[k])
            assert float(derivative) == pytest.approx(expected, rel=1e-12, abs=1e-14)


def test_simple_default_lambda_is_one_over_denominator_terms():
    default = S.evaluate_anchor("simple", [0.5], [0.1, 0.2, 0.3])
    assert default.grad_negatives == (0.25, 0.25, 0.25)
    assert default.value == pytest.approx(-0.5 + 0.6 / 4, rel=1e-15)


def test_dystress_detached_gradient_holds_tau_constant_and_full_gradient_does_not():
    rng = random.Random(3)
    s_pos, s_neg = random_similarities(rng, 1), random_similarities(rng, 2)
    params = {"tau_min": 0.07, "tau_max": 0.2}
    detached = S.evaluate_anchor("dystress", s_pos, s_neg, detach=True, **params)
    full = S.evaluate_anchor("dystress", s_pos, s_neg, detach=False, **params)
    assert detached.value == full.value
    schedule = sp.lambdify((s, tau_min, tau_max), S.dystress_temperature(s), "mpmath")
    with mpmath.workdps(40):
        point = [mpmath.mpf(x) for x in s_pos + s_neg]
        frozen = [schedule(x, 0.07, 0.2) for x in point]

        def loss(xs, taus):
            logits = [x / t for x, t in zip(xs, taus)]
            return mpmath.log(sum(mpmath.exp(v) for v in logits)) - logits[0]

        for k in range(3):
            def moved(x, k=k):
                return [x if j == k else v for j, v in enumerate(point)]
            d_frozen = mpmath.diff(lambda x: loss(moved(x), frozen), point[k])
            d_full = mpmath.diff(lambda x: loss(moved(x), [schedule(v, 0.07, 0.2) for v in moved(x)]), point[k])
            grads = (detached.grad_positives + detached.grad_negatives, full.grad_positives + full.grad_negatives)
            assert grads[0][k] == pytest.approx(float(d_frozen), rel=1e-12)
            assert grads[1][k] == pytest.approx(float(d_full), rel=1e-12)
            assert abs(grads[0][k] - grads[1][k]) > 1e-6 * abs(grads[0][k])


# --------------------------------------------------------------------------- Wang & Liu
@pytest.mark.parametrize("n_neg", [1, 3])
def test_eq4_gradients_equal_the_derivative_of_eq1(n_neg):
    g = S.infonce_gradients(n_neg)
    for x in (g.positive, *g.negatives):
        assert is_zero(g.derived[x] - g.eq4[x])
        assert is_zero(g.weights[x] - sp.exp(x / tau) / sp.Add(*(sp.exp(y / tau) for y in (g.positive, *g.negatives))))
    # the negatives' gradients sum to minus the positive's
    assert is_zero(sp.Add(*(g.derived[j] for j in g.negatives)) + g.derived[g.positive])


def test_relative_penalty_is_a_boltzmann_distribution():
    r = S.relative_penalty(3)
    assert is_zero(sp.Add(*r) - 1)
    negatives = S.negative_similarities(3)
    # r_j / r_k = e^{(s_j - s_k)/tau}
    assert is_zero(r[0] / r[1] - sp.exp((negatives[0] - negatives[1]) / tau))


@pytest.mark.parametrize("n_neg", [2, 3])
def test_entropy_derivative_is_variance_over_tau_cubed(n_neg):
    e = S.penalty_entropy(n_neg)
    assert is_zero(sp.expand_log(e.derivative - e.variance_form, force=True))
    rng = random.Random(n_neg)
    negatives = S.negative_similarities(n_neg)
    for _ in range(5):
        point = dict(zip(negatives, random_similarities(rng, n_neg)))
        t = rng.uniform(0.05, 2)
        assert numeric(e.derivative, {**point, tau: t}) > 0
        # entropy at a smaller tau is smaller
        assert numeric(e.entropy, {**point, tau: t / 2}) < numeric(e.entropy, {**point, tau: t})


def test_entropy_extremes():
    e = S.penalty_entropy(3)
    point = dict(zip(S.negative_similarities(3), [sp.Rational(1, 2), sp.Rational(1, 5), -sp.Rational(1, 3)]))
    assert sp.limit(e.entropy.subs(point), tau, sp.oo) == sp.log(3)   # uniform penalty
    assert numeric(e.entropy, {**point, tau: sp.Rational(1, 200)}) < 1e-20  # all on the hardest


@pytest.mark.parametrize("s_pos, s_neg, expected", [
    (sp.Rational(1, 2), [sp.Rational(7, 10), sp.Rational(1, 5), -sp.Rational(1, 3)], sp.Rational(1, 5)),
    (sp.Rational(9, 10), [sp.Rational(7, 10), sp.Rational(1, 5)], 0),
    (0, [sp.Rational(-1, 2), sp.Rational(3, 4)], sp.Rational(3, 4)),
])
def test_low_temperature_limit_is_the_triplet_loss(s_pos, s_neg, expected):
    limit, triplet = S.low_temperature_limit_at(s_pos, s_neg)
    assert limit == triplet == expected


def test_low_temperature_sandwich():
    low = S.low_temperature_limit(3)
    negatives = S.negative_similarities(3)
    (positive,) = S.positive_similarities(1)
    rng = random.Random(7)
    for _ in range(10):
        point = dict(zip((positive, *negatives), random_similarities(rng, 4)))
        t = rng.choice([1e-3, 0.05, 0.5, 3.0])
        values = [numeric(e, {**point, tau: t}) for e in (low.triplet, low.scaled_loss, low.upper)]
        assert values[0] <= values[1] + 1e-15 <= values[2] + 2e-15
    assert is_zero(low.upper - low.triplet - tau * sp.log(4))


@pytest.mark.parametrize("n_neg", [1, 3])
def test_high_temperature_expansion_is_eq7_and_the_simple_loss(n_neg):
    high = S.high_temperature_expansion(n_neg)
    assert is_zero(high.series - high.eq7)
    n = n_neg + 1
    simple = S.anchor_loss("simple", 1, n_neg, lam=high.simple_weight).expr
    assert is_zero(tau * (high.eq7 - sp.log(n)) - sp.Rational(n - 1, n) * simple)
    # and it is the expansion: the remainder is O(1/tau^2)
    point = dict(zip(S.positive_similarities(1) + S.negative_similarities(n_neg), [0.3, -0.2, 0.6, 0.1][: n]))
    remainder = [abs(numeric(high.loss - high.eq7, {**point, tau: t})) for t in (10.0, 100.0)]
    assert remainder[1] < remainder[0] / 50


# --------------------------------------------------------------------------- temperature-free
def test_temperature_free_logit_forms():
    f = S.temperature_free_logit()
    # equal on (-1, 1): same derivative and same value at 0
    assert is_zero(sp.diff(f.logit - f.log_form, s)) and (f.logit - f.log_form).subs(s, 0) == 0
    assert is_zero(f.slope - 2 / (1 - s ** 2))
    assert is_zero(f.effective_temperature - 1 / f.slope)
    assert f.slope.subs(s, 0) == 2                                    # behaves like tau = 0.5 near 0
    assert is_zero(sp.exp(f.logit).rewrite(sp.log) - f.odds)
    assert sp.latex(f.effective_temperature) == r"\frac{1 - s^{2}}{2}"


@pytest.mark.parametrize("n_neg", [1, 3])
def test_only_the_temperature_free_loss_vanishes_at_the_ideal(n_neg):
    ideal = S.ideal_configuration(n_neg)
    assert ideal.free_loss_limit == 0
    assert all(v == 0 for v in ideal.free_gradient_limits.values())
    assert is_zero(ideal.scaled_loss - ideal.scaled_loss_closed_form)
    for t in (sp.Rational(1, 10), 1, 10):
        assert ideal.scaled_loss.subs(tau, t).evalf() > 0
        positive = S.positive_similarities(1)[0]
        assert ideal.scaled_gradient[positive].subs(tau, t).evalf() < 0


def test_scaled_positive_gradient_vanishes_at_small_tau():
    v = S.scaled_vanishing_gradient(3)
    assert v.limit == 0
    (positive,), negatives = S.positive_similarities(1), S.negative_similarities(3)
    rng = random.Random(11)
    for _ in range(10):
        point = dict(zip((positive, *negatives), random_similarities(rng, 4)))
        margin = point[positive] - max(point[n] for n in negatives)
        if margin <= 0:
            continue
        t = rng.choice([0.01, 0.05, 0.2])
        assert abs(numeric(v.gradient, {**point, tau: t})) <= numeric(v.bound, {v.margin: margin, tau: t}) * (1 + 1e-12)


def test_tangent_factor():
    f = S.tangent_factor()
    assert is_zero(f.factor - sp.sqrt(1 - s ** 2))
    assert is_zero(f.free - 2 / sp.sqrt(1 - s ** 2))
    rng = random.Random(5)
    for _ in range(5):
        zi, zj = ([rng.gauss(0, 1) for _ in range(3)] for _ in range(2))
        zi, zj = ([x / math.sqrt(sum(y * y for y in z)) for x in z] for z in (zi, zj))
        cosine = sum(a * b for a, b in zip(zi, zj))
        tangent = [b - cosine * a for a, b in zip(zi, zj)]
        assert math.sqrt(sum(x * x for x in tangent)) == pytest.approx(float(f.factor.subs(s, cosine)), rel=1e-12)


# --------------------------------------------------------------------------- DySTreSS
def test_dystress_schedule():
    d = S.dystress_schedule()
    assert is_zero(d.cos_form - d.sin_form)
    assert d.extremes == {-1: tau_max, 0: tau_min, 1: tau_max}
    assert is_zero(d.slope - sp.diff(d.cos_form, s))
    assert all(d.slope.subs(s, v) == 0 for v in (-1, 0, 1))
    assert is_zero(d.logit_slope - sp.diff(d.logit, s))
    # between the extremes when tau_min <= tau_max
    values = {tau_min: sp.Rational(7, 100), tau_max: sp.Rational(1, 5)}
    for v in (-0.9, -0.3, 0.2, 0.7):
        assert 0.07 <= numeric(d.sin_form, {**values, s: v}) <= 0.2


def test_dystress_gradients():
    g = S.dystress_gradients(2)
    for x in g.detached:
        assert is_zero(g.detached[x] - g.detached_form[x])
        assert is_zero(sp.expand(g.full[x] - g.full_form[x]))
    # with the concrete schedule, the general forms are the anchor losses' gradients
    schedule = sp.Lambda(s, S.dystress_temperature(s))
    concrete = {S.temperature_function: schedule}
    point = {**dict(zip(S.positive_similarities(1) + S.negative_similarities(2), [0.4, 0.1, -0.5])),
             tau_min: 0.07, tau_max: 0.2}
    for detach, forms in ((True, g.detached_form), (False, g.full_form)):
        gradient = S.anchor_loss("dystress", 1, 2, detach=detach).gradient()
        for x, form in forms.items():
            form = form.subs(concrete).doit()
            if detach:
                form = form.subs({t: expr.subs(concrete).doit() for t, expr in g.pair_temperatures.items()})
            assert numeric(form, point) == pytest.approx(numeric(gradient[x], point), rel=1e-20)


def test_dystress_with_equal_temperatures_is_infonce():
    loss = S.anchor_loss("dystress", 2, 2, tau_min=tau, tau_max=tau).explicit
    assert is_zero(loss - S.anchor_loss("infonce", 2, 2).expr)


# --------------------------------------------------------------------------- SupCon vs SINCERE
@pytest.mark.parametrize("n_pos, n_neg", [(2, 1), (3, 2)])
def test_supcon_repels_other_positives_sincere_does_not(n_pos, n_neg):
    g = S.same_class_gradients(n_pos, n_neg)
    assert is_zero(g.supcon_term - g.supcon_term_form)
    assert g.sincere_term == 0
    assert is_zero(g.supcon_anchor - g.supcon_anchor_form)
    assert is_zero(g.sincere_anchor - g.sincere_anchor_form)
    symbols = S.positive_similarities(n_pos) + S.negative_similarities(n_neg)
    rng = random.Random(n_pos)
    supcon_anchor_signs = set()
    for _ in range(20):
        point = {**dict(zip(symbols, random_similarities(rng, len(symbols)))), tau: rng.choice([0.1, 0.5])}
        assert numeric(g.supcon_term, point) > 0
        assert numeric(g.sincere_anchor, point) < 0
        supcon_anchor_signs.add(numeric(g.supcon_anchor, point) > 0)
    # q = s_p2 closest: it gets more than its share 1/|P| of the softmax and is pushed away
    closest = {**dict(zip(symbols, [0.1, 0.9] + [0.0] * (len(symbols) - 2))), tau: 0.1}
    assert numeric(g.supcon_anchor, closest) > 0
    assert supcon_anchor_signs == {True, False}


@pytest.mark.parametrize("n_pos", [2, 3])
def test_supcon_minimum_is_log_positives_sincere_zero(n_pos):
    m = S.class_minimum(n_pos, 2)
    assert m.supcon_infimum == sp.log(n_pos)
    assert m.sincere_infimum == 0
    rng = random.Random(n_pos)
    loss = S.anchor_loss("supcon", n_pos, 2)
    for _ in range(10):
        point = {**dict(zip(loss.similarities, random_similarities(rng, n_pos + 2))), tau: 0.05}
        assert numeric(loss.expr, point) >= math.log(n_pos)


def test_one_positive_supcon_and_sincere_are_infonce():
    o = S.one_positive(3)
    assert is_zero(o.supcon - o.infonce) and is_zero(o.sincere - o.infonce)


def test_sincere_bound():
    bound = S.sincere_bound(2, 3)
    assert is_zero(bound - (sp.log(4) - S.anchor_loss("sincere", 2, 3).expr))
    point = {**dict(zip(S.positive_similarities(2) + S.negative_similarities(3), [0.9, 0.8, -0.5, -0.6, -0.9])),
             tau: 0.1}
    assert 0 < numeric(bound, point) < math.log(4)


def test_lambdify_for_plots():
    import numpy as np
    f = S.lambdify(S.dystress_schedule().sin_form, (s, tau_min, tau_max))
    grid = np.linspace(-1, 1, 5)
    assert np.allclose(f(grid, 0.07, 0.2), [0.2, 0.135, 0.07, 0.135, 0.2])
    g = S.anchor_loss("infonce", 1, 2).gradient_function()
    assert np.isclose(sum(g(0.5, 0.1, -0.2, 0.2)), 0.0)
