"""One anchor whose ``K`` negatives share one similarity: losses and gradients in closed form.

:func:`clmini.symbolic.anchor_loss` writes an anchor's loss with one symbol per negative, which
is exact but fixes their number. Many arguments about a logit map only need the positive's
similarity ``s_+`` and a typical negative's ``s_-``, for any number ``K`` of negatives (a SimCLR
batch of ``B`` images gives each anchor ``K = 2B - 2``)::

    L = -log( e^{l(s_+)} / (e^{l(s_+)} + K e^{l(s_-)}) )

which is InfoNCE with logit map ``l`` evaluated where all negatives coincide. Chapter 2 uses it to
compare ``l(s) = s / tau`` with Kim & Kim's ``l(s) = 2 artanh(s)`` where the positive approaches
``s_+ = 1`` (:func:`aligned_positive`), and to draw gradients for a realistic ``K``.

Gradients come in two coordinates. With respect to a similarity (``dL/ds``) and with respect to
the embedding: on the unit sphere a similarity's gradient moves ``z`` only through its tangent
part, of norm ``sqrt(1 - s^2)`` (:func:`clmini.symbolic.tangent_factor`), so the embedding-space
magnitude of a pair's term is ``|dL/ds| sqrt(1 - s^2)``.

All results are **[derived]** (worked out here, not taken from the paper). No torch import.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import sympy as sp

from clmini.symbolic.core import LOGIT_MAPS, lambdify, tau

__all__ = ["K", "s_pos", "s_neg", "EqualNegatives", "equal_negatives", "AlignedPositive",
           "aligned_positive"]

#: The number of negatives of the anchor.
K = sp.Symbol("K", positive=True, integer=True)
#: The similarity to the positive, and the one shared by every negative.
s_pos = sp.Symbol("s_+", real=True)
s_neg = sp.Symbol("s_-", real=True)

# The maps of :data:`clmini.symbolic.LOGIT_MAPS` with a closed form here (a fixed map, no per-pair temperature).
_SUPPORTED = ("scaled", "artanh")




def _odds_form(expr: sp.Expr) -> sp.Expr:
    """``e^{2 artanh(x)} -> (1 + x)/(1 - x)``: rational expressions, exact limits at ``x = 1``."""
    return expr.rewrite(sp.log) if expr.has(sp.atanh) else expr


@dataclass(frozen=True)
class EqualNegatives:
    """Loss and gradient magnitudes of an anchor with ``K`` negatives at ``s_-``.

    ``loss``: ``L(s_+, s_-, K[, tau])``; ``positive_gradient = dL/ds_+`` (negative: the loss falls
    as the positive comes closer); ``negative_gradient = dL/ds_n`` for *one* of the ``K`` negatives
    (positive: it pushes that negative away); ``positive_embedding`` and ``negative_embedding`` are
    the corresponding embedding-space magnitudes ``|dL/ds| sqrt(1 - s^2)``.
    """

    logit: str
    loss: sp.Expr
    positive_gradient: sp.Expr
    negative_gradient: sp.Expr
    positive_embedding: sp.Expr
    negative_embedding: sp.Expr

    @property
    def args(self) -> tuple[sp.Symbol, ...]:
        """Argument order of :meth:`function`: ``(s_+, s_-, K)``, then ``tau`` for ``"scaled"``."""
        return (s_pos, s_neg, K) + ((tau,) if self.logit == "scaled" else ())

    def function(self, field: str, modules: str = "numpy") -> Callable:
        """A field (``"loss"``, ``"positive_gradient"``, ...) as a numerical function of :attr:`args`."""
        return lambdify(getattr(self, field), self.args, modules)


@functools.lru_cache(maxsize=None)
def equal_negatives(logit: str = "artanh") -> EqualNegatives:
    """The anchor's loss and gradients for ``logit`` in ``"scaled"`` (``s/tau``) or ``"artanh"``."""
    if logit not in _SUPPORTED:
        raise ValueError(f"logit must be one of {sorted(_SUPPORTED)}, got {logit!r}")
    ell = LOGIT_MAPS[logit]
    # -log(e^a / (e^a + K e^b)) = log(1 + K e^{b - a}); for artanh e^{b - a} is a ratio of odds
    loss = sp.log(1 + K * _odds_form(sp.exp(ell(s_neg) - ell(s_pos))))
    positive = sp.factor(sp.simplify(sp.diff(loss, s_pos)))
    negative = sp.factor(sp.simplify(sp.diff(loss, s_neg) / K))
    # magnitudes: dL/ds_+ <= 0 and dL/ds_n >= 0 everywhere
    return EqualNegatives(logit, loss, positive, negative,
                          sp.simplify(-positive * sp.sqrt(1 - s_pos ** 2)),
                          sp.simplify(negative * sp.sqrt(1 - s_neg ** 2)))


@dataclass(frozen=True)
class AlignedPositive:
    """What happens as the positive reaches ``s_+ = 1`` while the negatives stay at ``s_- < 1``.

    Temperature-free (``2 artanh``): ``free_loss -> 0`` whatever ``s_-`` (the positive's logit
    grows without bound and wins the softmax alone); the similarity gradient on the positive tends
    to ``free_gradient = -(K/2)(1 + s_-)/(1 - s_-)``, finite and 0 only when ``s_- = -1`` (the ideal
    configuration); in embedding space the factor ``sqrt(1 - s_+^2)`` takes it to
    ``free_embedding_gradient = 0``. With ``s / tau``: ``scaled_loss = log(1 + K e^{(s_- - 1)/tau})``
    and ``scaled_gradient`` (the value at ``s_+ = 1``) stay positive and non-zero, for every ``s_-``.

    The other end: a negative that comes close to the anchor (``s_- -> 1``, ``s_+ < 1`` fixed)
    is pushed, per unit of embedding, by ``P_n l'(s_-) sqrt(1 - s_-^2)``: ``free_colliding_negative``
    (``l' = 2/(1 - s^2)``: only half cancelled by the tangent factor, unbounded) and
    ``scaled_colliding_negative`` (``l' = 1/tau``: the push fades to 0).
    """

    free_loss: sp.Expr
    free_gradient: sp.Expr
    free_embedding_gradient: sp.Expr
    scaled_loss: sp.Expr
    scaled_gradient: sp.Expr
    free_colliding_negative: sp.Expr
    scaled_colliding_negative: sp.Expr


@functools.lru_cache(maxsize=None)
def aligned_positive() -> AlignedPositive:
    """Limits of :func:`equal_negatives` at ``s_+ -> 1-`` (and ``s_- -> 1-``) **[derived]**."""
    free, scaled = equal_negatives("artanh"), equal_negatives("scaled")

    def at_one(expr, x=s_pos):
        return sp.simplify(sp.limit(expr, x, 1, "-"))

    return AlignedPositive(
        at_one(free.loss), at_one(free.positive_gradient), at_one(free.positive_embedding),
        sp.simplify(scaled.loss.subs(s_pos, 1)), sp.simplify(scaled.positive_gradient.subs(s_pos, 1)),
        at_one(free.negative_embedding, s_neg), at_one(scaled.negative_embedding, s_neg))
