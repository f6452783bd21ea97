"""DySTreSS (Manna et al.): the cosine temperature schedule and its gradients (chapter 3)."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Mapping

import sympy as sp

from clmini.symbolic.core import (anchor_loss, dystress_logit, dystress_temperature, negative_similarities,
                                 positive_similarities, s, tau, tau_min)
from clmini.symbolic.core import _pair_temperature

__all__ = [
    "DystressSchedule", "dystress_schedule", "temperature_function", "DystressGradients",
    "dystress_gradients", "negatives_only_anchor_loss", "CollapsedLoss", "collapsed_loss", "n_negatives",
    "DystressPenalty", "dystress_relative_penalty",
]


@dataclass(frozen=True)
class DystressSchedule:
    """DySTreSS's temperature schedule ``tau(s)`` and its logit.

    ``cos_form`` (the paper's) equals ``sin_form``; ``extremes = {-1: tau_max, 0: tau_min, 1: tau_max}``;
    ``slope = tau'(s) = (pi/2)(tau_max - tau_min) sin(pi s)``: 0 at ``s = -1, 0, 1``, so the
    temperature is flat near both ends and near orthogonality; ``logit = s / tau(s)``;
    ``logit_slope = (tau - s tau')/tau^2``, the factor the non-detached gradient carries instead of
    ``1/tau``.
    """

    cos_form: sp.Expr
    sin_form: sp.Expr
    extremes: Mapping[int, sp.Expr]
    slope: sp.Expr
    logit: sp.Expr
    logit_slope: sp.Expr


@functools.lru_cache(maxsize=None)
def dystress_schedule() -> DystressSchedule:
    """Manna et al.'s ``tau(s) = tau_min + (tau_max - tau_min)/2 (1 + cos(pi (1 + s)))`` **[paper formula]**."""
    cos_form, sin_form = dystress_temperature(s, "cos"), dystress_temperature(s, "sin")
    extremes = {v: sp.simplify(sin_form.subs(s, v)) for v in (-1, 0, 1)}
    slope = sp.simplify(sp.diff(sin_form, s))
    logit = s / sin_form
    return DystressSchedule(cos_form, sin_form, extremes, slope, logit,
                            sp.together(sp.diff(logit, s)))


#: An unspecified per-pair temperature function ``tau(s)``: the non-detached gradient in terms of
#: ``tau`` and ``tau'`` reads like the chain rule; ``.subs(temperature_function, Lambda(s, ...))`` makes it concrete.
temperature_function = sp.Function("tau")


@dataclass(frozen=True)
class DystressGradients:
    """DySTreSS's InfoNCE gradients for one positive, detached and not.

    ``loss`` is written with per-pair temperature symbols ``tau_p1, tau_n1, ...`` and ``weights[x] = P_x``
    is the softmax of ``s_x / tau_x``. Detached (``s / tau(sg[s])``, the official code): ``detached``
    (by differentiation, the ``tau_x`` held constant) equals ``detached_form``:
    ``-(1 - P_p1)/tau_p1`` for the positive and ``P_nj / tau_nj`` for a negative, i.e. eq. 4 with a
    per-pair temperature. Not detached: with ``tau_x = tau(s_x)`` for a function ``tau``
    (:data:`temperature_function`), ``full`` (by differentiation) equals ``full_form``, where each
    ``1/tau_x`` of the detached form becomes ``(tau - s tau')/tau^2`` at ``s_x`` (``logit_slope``).
    """

    loss: sp.Expr
    pair_temperatures: Mapping[sp.Symbol, sp.Expr]
    weights: Mapping[sp.Symbol, sp.Expr]
    detached: Mapping[sp.Symbol, sp.Expr]
    detached_form: Mapping[sp.Symbol, sp.Expr]
    logit_slope: sp.Expr
    full: Mapping[sp.Symbol, sp.Expr]
    full_form: Mapping[sp.Symbol, sp.Expr]


@functools.lru_cache(maxsize=None)
def dystress_gradients(n_neg: int = 2) -> DystressGradients:
    """The detached gradient ``P_ij/tau_ij``, ``-(1 - P_i+)/tau_i+`` and the full one's extra factor."""
    loss = anchor_loss("dystress", 1, n_neg, detach=True)
    pair = {x: _pair_temperature(x) for x in loss.similarities}
    as_function = {pair[x]: temperature_function(x) for x in loss.similarities}
    partition = sp.Add(*(sp.exp(x / pair[x]) for x in loss.similarities))
    weights = {x: sp.exp(x / pair[x]) / partition for x in loss.similarities}
    positive = loss.positives[0]
    detached_form = {positive: -(1 - weights[positive]) / pair[positive]}
    detached_form.update({x: weights[x] / pair[x] for x in loss.negatives})
    detached = {x: sp.simplify(sp.diff(loss.expr, x)) for x in loss.similarities}
    # Chain rule through tau(s): d(s / tau(s))/ds = (tau - s tau')/tau^2 replaces the 1/tau.
    logit_slope = sp.diff(s / temperature_function(s), s)
    full_form = {x: (g * pair[x] * logit_slope.subs(s, x)).subs(as_function) for x, g in detached_form.items()}
    full_expr = loss.expr.subs(as_function)
    full = {x: sp.diff(full_expr, x) for x in loss.similarities}
    return DystressGradients(loss.expr, {pair[x]: temperature_function(x) for x in loss.similarities},
                             weights, detached, detached_form, sp.together(logit_slope), full, full_form)


# --------------------------------------------------------------------------- the ablation's formula
def negatives_only_anchor_loss(n_neg: int = 3) -> tuple[sp.Expr, tuple[sp.Symbol, ...], sp.Symbol]:
    """One anchor's loss when only the negatives get ``tau(s)`` (``DySTreSS(positive_temperature=tau_p)``).

    The explicit function (``tau`` not detached); returns ``(expr, (s_p1, s_n1, ...), tau_p)`` with
    ``tau_p`` the positive's fixed temperature.
    """
    tau_p = sp.Symbol("tau_p", positive=True)
    (positive,), negatives = positive_similarities(1), negative_similarities(n_neg)
    numerator = sp.exp(positive / tau_p)
    denominator = numerator + sp.Add(*(sp.exp(dystress_logit(x)) for x in negatives))
    return -sp.log(numerator / denominator), (positive, *negatives), tau_p


#: The number of negatives of one anchor, ``|N(i)|`` (``2B - 2`` in a two-view batch of ``B`` images).
n_negatives = sp.Symbol(r"\lvert\mathcal{N}(i)\rvert", positive=True, integer=True)


@dataclass(frozen=True)
class CollapsedLoss:
    """One anchor's loss when the embedding has collapsed: every similarity is 1 **[derived]**.

    ``negatives_only``: the negatives-only ablation (positive at the fixed ``tau_min``, each negative at
    ``tau(1) = tau_max``), ``log(1 + |N| e^{1/tau_max - 1/tau_min})``; ``exponent`` is
    ``1/tau(1) - 1/tau_min = 1/tau_max - 1/tau_min <= 0``, so every negative's term is *smaller* than the
    positive's. ``as_designed``: DySTreSS as the authors define it, and InfoNCE at any ``tau``: every
    logit is the same number, so the loss is ``log(|N| + 1)``, the log of the denominator's number of terms.
    ``at(n)``: :func:`negatives_only_anchor_loss` with ``n`` negatives at ``s = 1``, by substitution, for
    a check that ``negatives_only`` is that loss.
    """

    negatives_only: sp.Expr
    as_designed: sp.Expr
    exponent: sp.Expr
    positive_logit: sp.Expr
    negative_logit: sp.Expr

    @staticmethod
    def at(n: int) -> sp.Expr:
        expr, symbols, tau_p = negatives_only_anchor_loss(n)
        return sp.simplify(expr.subs({x: 1 for x in symbols}).subs(tau_p, tau_min))


@functools.lru_cache(maxsize=None)
def collapsed_loss() -> CollapsedLoss:
    """The loss of a fully collapsed batch, for the negatives-only ablation and as designed **[derived]**.

    Collapse puts every cosine at 1: the positive's logit is ``1/tau_min`` (its fixed temperature, the
    chapter's ``positive_temperature = tau_min``), each of the ``|N|`` negatives' is ``l(1) = 1/tau(1)``.
    """
    positive_logit = sp.Integer(1) / tau_min
    negative_logit = sp.simplify(dystress_logit(sp.Integer(1)))
    exponent = negative_logit - positive_logit
    # -log(e^a / (e^a + |N| e^b)) = log(1 + |N| e^{b - a})
    loss = -sp.log(sp.exp(positive_logit) / (sp.exp(positive_logit) + n_negatives * sp.exp(negative_logit)))
    negatives_only = sp.log(1 + n_negatives * sp.exp(exponent))
    # equal logs of positive arguments: compare the arguments (SymPy does not cancel log differences)
    if sp.simplify(sp.exp(loss) - sp.exp(negatives_only)) != 0:  # pragma: no cover - a derivation error
        raise AssertionError("the collapsed negatives-only loss does not simplify to log(1 + |N| e^(b - a))")
    # as designed, the positive's logit is l(1) too: |N| + 1 equal terms
    as_designed = sp.simplify(-sp.log(sp.exp(negative_logit) / ((n_negatives + 1) * sp.exp(negative_logit))))
    return CollapsedLoss(negatives_only, as_designed, exponent, positive_logit, negative_logit)


# --------------------------------------------------------------------------- relative penalty
@dataclass(frozen=True)
class DystressPenalty:
    """The relative penalty of negative ``s_n1`` under per-pair temperatures (detached).

    ``derived``: ``dL/ds_n1 / sum_k dL/ds_nk`` from :func:`clmini.dystress_gradients`;
    ``form``: ``(e^{s_n1/tau_n1}/tau_n1) / sum_k (e^{s_nk/tau_nk}/tau_nk)``; they are equal.
    ``fixed``: the same ratio when every ``tau_x`` is one ``tau`` (Wang & Liu eq. 5).
    """

    derived: sp.Expr
    form: sp.Expr
    fixed: sp.Expr


@functools.lru_cache(maxsize=None)
def dystress_relative_penalty(n_neg: int = 2) -> DystressPenalty:
    """The relative penalty ``r_1`` of the first negative with a temperature per pair **[derived]**."""
    gradients = dystress_gradients(n_neg)
    negatives = negative_similarities(n_neg)
    total = sp.Add(*(gradients.detached_form[x] for x in negatives))
    derived = sp.simplify(gradients.detached_form[negatives[0]] / total)
    temperature = {x: sp.Symbol(f"tau_{x.name[2:]}", positive=True) for x in negatives}
    weight = {x: sp.exp(x / temperature[x]) / temperature[x] for x in negatives}
    form = weight[negatives[0]] / sp.Add(*weight.values())
    fixed = sp.simplify(form.subs({t: tau for t in temperature.values()}))
    return DystressPenalty(derived, form, fixed)
