"""SupCon vs SINCERE (Feeney & Hughes): same-class gradients, the class minimum, the bound (chapter 4)."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Mapping

import sympy as sp

from clmini.symbolic.core import anchor_loss, negative_similarities, positive_similarities, tau

__all__ = [
    "SameClassGradients", "same_class_gradients", "ClassMinimum", "class_minimum", "OnePositive",
    "one_positive", "sincere_bound",
]


@dataclass(frozen=True)
class SameClassGradients:
    """What a positive pair's term does to *another* positive ``q = s_p2`` of the same anchor.

    Per term ``(i, p1)``: ``supcon_term = d l_{i,p1}/d s_p2 = e^{s_p2/tau} / (tau D)`` (``supcon_term_form``,
    ``D`` the SupCon denominator) ``> 0``: SupCon's loss *grows* as ``s_p2`` grows, pushing a same-class
    sample away; ``sincere_term = 0`` (``s_p2`` is not in SINCERE's term for ``p1``).
    Per anchor (all terms, ``|P|`` positives): ``supcon_anchor = dL/ds_p2``, equal to
    ``supcon_anchor_form = (1/tau)(q_p2 - 1/|P|)`` with ``q`` the softmax over all other samples
    (positive when ``s_p2`` gets more than its share); ``sincere_anchor = dL/ds_p2``, equal to
    ``sincere_anchor_form = -(1 - P^{(p2)}_{p2})/(|P| tau) <= 0``.
    """

    supcon_term: sp.Expr
    supcon_term_form: sp.Expr
    sincere_term: sp.Expr
    softmax: Mapping[sp.Symbol, sp.Expr]
    supcon_anchor: sp.Expr
    supcon_anchor_form: sp.Expr
    sincere_anchor: sp.Expr
    sincere_anchor_form: sp.Expr


def _pair_terms(name: str, n_pos: int, n_neg: int) -> list[sp.Expr]:
    """The per-positive terms ``-log(e^{l_p}/D_p)`` of SupCon or SINCERE (before the ``1/|P|``)."""
    positives, negatives = positive_similarities(n_pos), negative_similarities(n_neg)
    repulsion = sp.Add(*(sp.exp(x / tau) for x in negatives))
    everyone = sp.Add(*(sp.exp(x / tau) for x in positives)) + repulsion
    return [-sp.log(sp.exp(p / tau) / (everyone if name == "supcon" else sp.exp(p / tau) + repulsion))
            for p in positives]


@functools.lru_cache(maxsize=None)
def same_class_gradients(n_pos: int = 3, n_neg: int = 2) -> SameClassGradients:
    """Feeney & Hughes's argument against SupCon (needs ``n_pos >= 2``) **[derived, matches paper]**."""
    if n_pos < 2:
        raise ValueError(f"n_pos must be >= 2 (another positive to differentiate by), got {n_pos}")
    positives, negatives = positive_similarities(n_pos), negative_similarities(n_neg)
    q = positives[1]  # another positive than the pair (i, p1) differentiated
    others = positives + negatives
    partition = sp.Add(*(sp.exp(x / tau) for x in others))
    softmax = {x: sp.exp(x / tau) / partition for x in others}
    supcon_terms, sincere_terms = _pair_terms("supcon", n_pos, n_neg), _pair_terms("sincere", n_pos, n_neg)
    sincere_own = sp.exp(q / tau) / (sp.exp(q / tau) + sp.Add(*(sp.exp(x / tau) for x in negatives)))
    return SameClassGradients(
        sp.diff(supcon_terms[0], q), sp.exp(q / tau) / (tau * partition), sp.diff(sincere_terms[0], q),
        softmax,
        sp.diff(anchor_loss("supcon", n_pos, n_neg).expr, q), (softmax[q] - sp.Rational(1, n_pos)) / tau,
        sp.diff(anchor_loss("sincere", n_pos, n_neg).expr, q), -(1 - sincere_own) / (n_pos * tau))


@dataclass(frozen=True)
class ClassMinimum:
    """The lowest loss an anchor can reach: SupCon's ``log|P|``, SINCERE's 0.

    With all positives at one similarity ``s_pos`` and all negatives at ``s_neg``:
    ``supcon``/``sincere`` are the losses there and ``supcon_infimum``/``sincere_infimum`` their limits
    as ``s_neg -> -infinity`` (the negatives infinitely far below; on the sphere, ``tau -> 0+`` does
    the same): ``log|P|`` and ``0``. SupCon cannot go lower, since by Jensen
    ``(1/|P|) sum_p -log(e^{l_p}/D) >= log sum_q e^{l_q} - mean_q l_q >= log|P|``.
    """

    s_pos: sp.Symbol
    s_neg: sp.Symbol
    supcon: sp.Expr
    sincere: sp.Expr
    supcon_infimum: sp.Expr
    sincere_infimum: sp.Expr


@functools.lru_cache(maxsize=None)
def class_minimum(n_pos: int = 3, n_neg: int = 2) -> ClassMinimum:
    """SupCon's minimum grows with the number of same-class samples; SINCERE's does not."""
    s_pos, s_neg = sp.Symbol("s_+", real=True), sp.Symbol("s_-", real=True)
    collapse = {**{p: s_pos for p in positive_similarities(n_pos)},
                **{n: s_neg for n in negative_similarities(n_neg)}}
    supcon = sp.simplify(anchor_loss("supcon", n_pos, n_neg).expr.subs(collapse))
    sincere = sp.simplify(anchor_loss("sincere", n_pos, n_neg).expr.subs(collapse))
    return ClassMinimum(s_pos, s_neg, supcon, sincere,
                        sp.limit(supcon, s_neg, -sp.oo), sp.limit(sincere, s_neg, -sp.oo))


@dataclass(frozen=True)
class OnePositive:
    """With one positive per anchor (two-view batches) SupCon, SINCERE and InfoNCE are one loss."""

    infonce: sp.Expr
    supcon: sp.Expr
    sincere: sp.Expr


@functools.lru_cache(maxsize=None)
def one_positive(n_neg: int = 3) -> OnePositive:
    """``|P| = 1``: ``supcon - infonce`` and ``sincere - infonce`` simplify to 0."""
    return OnePositive(*(anchor_loss(name, 1, n_neg).expr for name in ("infonce", "supcon", "sincere")))


@functools.lru_cache(maxsize=None)
def sincere_bound(n_pos: int = 2, n_neg: int = 3) -> sp.Expr:
    """``log(|N| + 1) - L_SINCERE``: the per-anchor bound value SINCERE's official code reports.

    **[paper code; exact form of the bound not seen]** It relates to the symmetrised KL divergence
    between the target class's and the other classes' embedding distributions; it is at most
    ``log(|N| + 1)`` (``L >= 0``) and reaches it only as the loss reaches 0.
    """
    return sp.log(n_neg + 1) - anchor_loss("sincere", n_pos, n_neg).expr
