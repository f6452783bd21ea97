"""Wang & Liu (CVPR 2021): InfoNCE's gradients, relative penalty, its limits in the temperature (chapter 1)."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Mapping, Sequence

import sympy as sp

from clmini.symbolic.core import anchor_loss, negative_similarities, tau, u

__all__ = [
    "WangLiuGradients", "infonce_gradients", "relative_penalty", "PenaltyEntropy", "penalty_entropy",
    "LowTemperatureLimit", "low_temperature_limit", "low_temperature_limit_at", "HighTemperatureExpansion",
    "high_temperature_expansion",
]


@dataclass(frozen=True)
class WangLiuGradients:
    """InfoNCE's gradients with respect to the similarities, derived and as eq. 4 writes them.

    ``weights[x]`` is ``P_ix`` (eq. 2, the softmax over positive and negatives);
    ``derived[x] = dL/ds_x`` by differentiating eq. 1; ``eq4[x]`` the paper's form:
    ``-(1/tau) sum_k P_ik`` for the positive, ``P_ij / tau`` for a negative. They are equal
    (``simplify(derived[x] - eq4[x]) == 0``) and the negatives' gradients sum to minus the positive's.
    """

    loss: sp.Expr
    positive: sp.Symbol
    negatives: tuple[sp.Symbol, ...]
    weights: Mapping[sp.Symbol, sp.Expr]
    derived: Mapping[sp.Symbol, sp.Expr]
    eq4: Mapping[sp.Symbol, sp.Expr]


@functools.lru_cache(maxsize=None)
def infonce_gradients(n_neg: int = 3) -> WangLiuGradients:
    """Wang & Liu eq. 1, 2 and 4 for one positive and ``n_neg`` negatives."""
    loss = anchor_loss("infonce", 1, n_neg)
    (positive,), negatives = loss.positives, loss.negatives
    partition = sp.Add(*(sp.exp(x / tau) for x in loss.similarities))
    weights = {x: sp.exp(x / tau) / partition for x in loss.similarities}
    eq4 = {positive: -sp.Add(*(weights[k] for k in negatives)) / tau}
    eq4.update({j: weights[j] / tau for j in negatives})
    return WangLiuGradients(loss.expr, positive, negatives, weights, loss.gradient(simplify=True), eq4)


@functools.lru_cache(maxsize=None)
def relative_penalty(n_neg: int = 3) -> tuple[sp.Expr, ...]:
    """Wang & Liu eq. 5: ``r_i(s_ij) = e^{s_ij/tau} / sum_k e^{s_ik/tau}`` over the negatives only.

    The ratio of negative ``j``'s gradient to the sum of all negatives' gradients: a Boltzmann
    distribution with temperature ``tau``, which concentrates on the hardest negatives as ``tau``
    falls (:func:`penalty_entropy`).
    """
    negatives = negative_similarities(n_neg)
    partition = sp.Add(*(sp.exp(x / tau) for x in negatives))
    return tuple(sp.exp(x / tau) / partition for x in negatives)


@dataclass(frozen=True)
class PenaltyEntropy:
    """The entropy of the relative penalty and its derivative in ``tau``.

    ``entropy = -sum_j r_j log r_j``; ``derivative = dH/dtau`` (by differentiation);
    ``variance_form = Var_r(s) / tau^3`` with ``mean = E_r[s]``, ``variance = E_r[(s - mean)^2]``.
    ``derivative == variance_form`` (simplify to 0), and a variance is >= 0: the entropy falls
    (strictly, unless all negatives are equally similar) as ``tau`` falls.
    """

    penalties: tuple[sp.Expr, ...]
    entropy: sp.Expr
    derivative: sp.Expr
    mean: sp.Expr
    variance: sp.Expr
    variance_form: sp.Expr


@functools.lru_cache(maxsize=None)
def penalty_entropy(n_neg: int = 3) -> PenaltyEntropy:
    """Wang & Liu's claim that the relative penalty's entropy decreases as tau decreases.

    One line instead of the supplement's proof: ``dH/dtau = Var_r(s) / tau^3 >= 0`` **[derived]**.
    """
    penalties = relative_penalty(n_neg)
    negatives = negative_similarities(n_neg)
    entropy = -sp.Add(*(r * sp.log(r) for r in penalties))
    mean = sp.Add(*(r * x for r, x in zip(penalties, negatives)))
    variance = sp.Add(*(r * (x - mean) ** 2 for r, x in zip(penalties, negatives)))
    return PenaltyEntropy(penalties, entropy, sp.diff(entropy, tau), mean, variance, variance / tau ** 3)


@dataclass(frozen=True)
class LowTemperatureLimit:
    """``tau -> 0+`` (Wang & Liu eq. 6): InfoNCE becomes a triplet loss on the hardest negative.

    ``scaled_loss = tau L``; ``triplet = max(s_max - s_p1, 0)`` with ``s_max`` the largest negative
    similarity; the exact sandwich ``triplet <= tau L <= triplet + tau log(|N| + 1)`` (``upper``)
    squeezes ``tau L`` onto ``triplet`` as ``tau -> 0+``, so ``L ~ triplet / tau``.
    """

    scaled_loss: sp.Expr
    triplet: sp.Expr
    upper: sp.Expr


@functools.lru_cache(maxsize=None)
def low_temperature_limit(n_neg: int = 3) -> LowTemperatureLimit:
    """Wang & Liu eq. 6 for one positive and ``n_neg`` negatives, with its bounds.

    Why the bounds hold: with ``m = max(s_max - s_p1, 0)``, ``tau L = tau log(1 + sum_n e^{(s_n - s_p1)/tau})``
    and ``e^{m/tau} <= 1 + sum_n e^{(s_n - s_p1)/tau} <= (|N| + 1) e^{m/tau}`` (the largest term is
    ``e^{m/tau}``, there are ``|N| + 1`` terms).
    """
    loss = anchor_loss("infonce", 1, n_neg)
    (positive,), negatives = loss.positives, loss.negatives
    triplet = sp.Max(sp.Max(*negatives) - positive, 0)
    return LowTemperatureLimit(tau * loss.expr, triplet, triplet + tau * sp.log(n_neg + 1))


def low_temperature_limit_at(s_pos, s_neg: Sequence) -> tuple[sp.Expr, sp.Expr]:
    """``(lim_{tau->0+} tau L, max(s_max - s_pos, 0))`` at concrete (rational) similarities, by ``sympy.limit``."""
    values = [sp.nsimplify(x) for x in [s_pos, *s_neg]]
    loss = anchor_loss("infonce", 1, len(s_neg))
    at = tau * loss.expr.subs(dict(zip(loss.similarities, values)))
    return sp.limit(at, tau, 0, "+"), sp.Max(max(values[1:]) - values[0], 0) if s_neg else sp.Integer(0)


@dataclass(frozen=True)
class HighTemperatureExpansion:
    """``tau -> infinity`` (Wang & Liu eq. 7): InfoNCE becomes the simple loss.

    ``series``: the first-order expansion of ``L`` in ``u = 1/tau`` (by ``sympy.series``), written
    back with ``tau``; ``eq7 = log N - (N-1)/(N tau) s_p1 + 1/(N tau) sum_n s_n`` with ``N = |N(i)| + 1``
    (equal to ``series``); ``simple_weight = 1/(N - 1)``: ``tau (eq7 - log N)`` is
    ``(N - 1)/N`` times the simple loss (eq. 3) with ``lambda = simple_weight``.
    """

    loss: sp.Expr
    series: sp.Expr
    eq7: sp.Expr
    simple_weight: sp.Expr


@functools.lru_cache(maxsize=None)
def high_temperature_expansion(n_neg: int = 3) -> HighTemperatureExpansion:
    """Wang & Liu eq. 7 for one positive and ``n_neg`` negatives (first order in ``1/tau``)."""
    loss = anchor_loss("infonce", 1, n_neg)
    (positive,), negatives = loss.positives, loss.negatives
    n = n_neg + 1
    series = sp.series(loss.expr.subs(tau, 1 / u), u, 0, 2).removeO().subs(u, 1 / tau)
    eq7 = sp.log(n) - sp.Rational(n - 1, n) * positive / tau + sp.Add(*negatives) / (n * tau)
    return HighTemperatureExpansion(loss.expr, sp.expand(series), eq7,
                                    sp.Rational(1, n - 1) if n > 1 else sp.oo)
