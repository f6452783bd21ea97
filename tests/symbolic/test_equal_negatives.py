"""clmini.symbolic.equal_negatives: the closed forms against clmini.symbolic and against the tensor loss."""
from __future__ import annotations

import math

import mpmath
import pytest
import sympy as sp
import torch

from clmini import symbolic as S
from clmini.symbolic.equal_negatives import K, aligned_positive, equal_negatives, s_neg, s_pos
from clmini.losses import InfoNCE, TemperatureFree


def is_zero(expr) -> bool:
    return sp.simplify(expr) == 0


@pytest.mark.parametrize("name, logit", [("temperature-free", "artanh"), ("infonce", "scaled")])
def test_equal_negatives_is_the_anchor_loss_with_its_negatives_merged(name, logit):
    """K = 3 negatives at one similarity: the same loss and gradients as three separate symbols."""
    closed = equal_negatives(logit)
    anchor = S.anchor_loss(name, 1, 3)
    (positive,), negatives = anchor.positives, anchor.negatives
    merge = {positive: sp.Rational(3, 10), **dict.fromkeys(negatives, sp.Rational(-1, 5))}
    point = {s_pos: sp.Rational(3, 10), s_neg: sp.Rational(-1, 5), K: 3}
    values = {S.tau: sp.Rational(1, 4)}
    gradient = anchor.gradient()
    for mine, theirs in ((closed.loss, anchor.expr), (closed.positive_gradient, gradient[positive]),
                         (closed.negative_gradient, gradient[negatives[0]])):
        assert sp.N(mine.subs(point).subs(values) - theirs.subs(merge).subs(values), 30) == pytest.approx(0, abs=1e-25)


def test_embedding_magnitudes_carry_the_tangent_factor():
    free = equal_negatives("artanh")
    assert is_zero(free.positive_embedding + free.positive_gradient * sp.sqrt(1 - s_pos ** 2))
    assert is_zero(free.negative_embedding - free.negative_gradient * sp.sqrt(1 - s_neg ** 2))


@pytest.mark.parametrize("logit, loss_fn", [("artanh", TemperatureFree(eps=1e-12)), ("scaled", InfoNCE(0.2))])
def test_closed_form_matches_the_tensor_loss(logit, loss_fn):
    """An anchor and K negatives at exact similarities (2-D unit vectors), float64, gradient included."""
    k, s_p, s_n = 5, 0.6, -0.3
    angle = lambda s: math.acos(s)
    vectors = [(1.0, 0.0), (math.cos(angle(s_p)), math.sin(angle(s_p)))]
    # K negatives at similarity s_n to the anchor; the loss of the anchor (row 0) only
    vectors += [(math.cos(angle(s_n)), (-1) ** j * math.sin(angle(s_n))) for j in range(k)]
    sim = torch.tensor(vectors, dtype=torch.float64)
    sim = (sim @ sim.T).requires_grad_()
    labels = torch.tensor([0, 0] + list(range(1, k + 1)))
    loss_fn.reduction = "none"
    per_anchor = loss_fn.from_similarity(sim, labels)
    per_anchor[0].backward()
    closed = equal_negatives(logit)
    params = (0.2,) if logit == "scaled" else ()
    assert per_anchor[0].item() == pytest.approx(closed.function("loss")(s_p, s_n, k, *params), rel=1e-10)
    assert sim.grad[0, 1].item() == pytest.approx(closed.function("positive_gradient")(s_p, s_n, k, *params), rel=1e-9)
    assert sim.grad[0, 2].item() == pytest.approx(closed.function("negative_gradient")(s_p, s_n, k, *params), rel=1e-9)


def test_aligned_positive_limits():
    aligned = aligned_positive()
    assert aligned.free_loss == 0
    assert is_zero(aligned.free_gradient + K * (1 + s_neg) / (2 * (1 - s_neg)))
    assert aligned.free_embedding_gradient == 0
    assert is_zero(sp.expand_log(aligned.scaled_loss - sp.log(1 + K * sp.exp((s_neg - 1) / S.tau)), force=True))
    assert aligned.free_colliding_negative == sp.oo
    assert aligned.scaled_colliding_negative == 0
    # with every negative at -1 the temperature-free pull vanishes too: the ideal configuration
    assert aligned.free_gradient.subs(s_neg, -1) == 0
    # and the scaled floor at the ideal configuration is symbolic.ideal_configuration's
    assert is_zero(aligned.scaled_loss.subs({s_neg: -1, K: 3}) - S.ideal_configuration(3).scaled_loss_closed_form)


def test_free_gradient_limit_numerically():
    """The limit against the lambdified gradient just below s_+ = 1 (30 digits)."""
    gradient = equal_negatives("artanh").function("positive_gradient", "mpmath")
    with mpmath.workdps(30):
        value = gradient(1 - mpmath.mpf("1e-20"), mpmath.mpf("0.25"), 7)
    assert float(value) == pytest.approx(-7 * 1.25 / (2 * 0.75), rel=1e-15)


def test_unknown_logit_is_an_error():
    with pytest.raises(ValueError, match="logit must be one of"):
        equal_negatives("cosine")
