"""Temperature-free InfoNCE (Kim & Kim): the artanh logit, the ideal configuration, vanishing gradients (chapter 2)."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Mapping

import sympy as sp

from clmini.symbolic.core import anchor_loss, artanh_logit, s, tau

__all__ = [
    "TemperatureFreeLogit", "temperature_free_logit", "IdealConfiguration", "ideal_configuration",
    "VanishingGradient", "scaled_vanishing_gradient", "TangentFactor", "tangent_factor",
]


@dataclass(frozen=True)
class TemperatureFreeLogit:
    """The temperature-free logit map and what it implies locally.

    ``logit = 2 artanh(s)``, ``log_form = log((1 + s)/(1 - s))`` (equal on ``(-1, 1)``: same
    derivative, both 0 at ``s = 0``); ``odds = e^{logit} = (1 + s)/(1 - s)``;
    ``slope = dlogit/ds = 2/(1 - s^2)``; ``effective_temperature = 1/slope = (1 - s^2)/2``: near
    ``s = 0`` the map behaves like ``s / 0.5``, and the temperature shrinks to 0 at ``s = +-1``.
    """

    logit: sp.Expr
    log_form: sp.Expr
    odds: sp.Expr
    slope: sp.Expr
    effective_temperature: sp.Expr


@functools.lru_cache(maxsize=None)
def temperature_free_logit() -> TemperatureFreeLogit:
    """Kim & Kim's logit map ``l(s) = 2 artanh(s)`` **[secondary]** and its local temperature **[derived]**."""
    logit = artanh_logit(s)
    slope = sp.diff(logit, s)                                     # 2 / (1 - s^2)
    # Unevaluated so it reads (1 - s^2)/2 rather than the auto-distributed 1/2 - s^2/2.
    effective_temperature = sp.Mul(1 - s ** 2, sp.Pow(2, -1, evaluate=False), evaluate=False)
    return TemperatureFreeLogit(logit, sp.log((1 + s) / (1 - s)), sp.exp(logit).rewrite(sp.log),
                                slope, effective_temperature)


@dataclass(frozen=True)
class IdealConfiguration:
    """Loss and gradient at the ideal configuration (positive at +1, every negative at -1).

    Temperature-free: along ``s_p1 = 1 - t``, ``s_nk = -1 + t``, ``t -> 0+`` the loss and every
    gradient entry tend to 0 (``free_loss_limit``, ``free_gradient_limits``). With ``s / tau``:
    the loss there is ``scaled_loss = log(1 + |N| e^{-2/tau}) > 0`` and the gradient
    ``scaled_gradient`` is not 0, so training keeps pushing an already perfect configuration.
    """

    t: sp.Symbol
    free_loss_path: sp.Expr
    free_loss_limit: sp.Expr
    free_gradient_limits: Mapping[sp.Symbol, sp.Expr]
    scaled_loss: sp.Expr
    scaled_loss_closed_form: sp.Expr
    scaled_gradient: Mapping[sp.Symbol, sp.Expr]


@functools.lru_cache(maxsize=None)
def ideal_configuration(n_neg: int = 3) -> IdealConfiguration:
    """Kim & Kim's motivation **[derived]**: only the temperature-free loss is 0, with 0 gradient, at the optimum."""
    t = sp.Symbol("t", positive=True)
    free = anchor_loss("temperature-free", 1, n_neg)
    # e^{2 artanh(s)} = (1 + s)/(1 - s): rational in t along the path, so the limits are exact.
    odds = {sp.exp(artanh_logit(x)): sp.exp(artanh_logit(x)).rewrite(sp.log) for x in free.similarities}
    path = {free.positives[0]: 1 - t, **{x: -1 + t for x in free.negatives}}

    def along_path(expr: sp.Expr) -> sp.Expr:
        return sp.simplify(expr.subs(odds).subs(path))

    free_loss_path = along_path(free.expr)
    limits = {x: sp.limit(along_path(g), t, 0, "+") for x, g in free.gradient().items()}
    scaled = anchor_loss("infonce", 1, n_neg)
    ideal = {scaled.positives[0]: 1, **{x: -1 for x in scaled.negatives}}
    return IdealConfiguration(
        t, free_loss_path, sp.limit(free_loss_path, t, 0, "+"), limits,
        sp.simplify(scaled.expr.subs(ideal)), sp.log(1 + n_neg * sp.exp(-2 / tau)),
        {x: sp.simplify(g.subs(ideal)) for x, g in scaled.gradient().items()})


@dataclass(frozen=True)
class VanishingGradient:
    """With ``s / tau`` and a small ``tau`` the positive stops being pulled long before ``s_p1 = 1``.

    With ``Delta = s_p1 - max_n s_n > 0`` (the margin to the hardest negative):
    ``|dL/ds_p1| = (1/tau)(1 - P_p1) <= bound = (|N|/tau) e^{-Delta/tau}`` and
    ``limit = lim_{tau->0+} bound = 0``; ``gradient`` is ``dL/ds_p1`` in terms of the margins.
    """

    margin: sp.Symbol
    gradient: sp.Expr
    bound: sp.Expr
    limit: sp.Expr


@functools.lru_cache(maxsize=None)
def scaled_vanishing_gradient(n_neg: int = 3) -> VanishingGradient:
    """The small-``tau`` side of the temperature-free argument **[derived]**."""
    margin = sp.Symbol("Delta", positive=True)
    loss = anchor_loss("infonce", 1, n_neg)
    positive = loss.positives[0]
    gradient = sp.simplify(loss.gradient()[positive])
    bound = n_neg * sp.exp(-margin / tau) / tau
    return VanishingGradient(margin, gradient, bound, sp.limit(bound, tau, 0, "+"))


@dataclass(frozen=True)
class TangentFactor:
    """From a similarity's gradient to the embedding's: the factor ``sqrt(1 - s^2)``.

    For unit ``z_i, z_j`` with ``s = z_i . z_j``, ``ds/dz_i = z_j``, and its part tangent to the
    sphere at ``z_i`` (the part that moves ``z_i``) is ``z_j - s z_i`` of norm ``sqrt(1 - s^2)``
    (``factor``; derived in 2-D with ``z_i = (1, 0)``, ``z_j = (cos theta, sin theta)``, no loss of
    generality). Per-pair embedding-gradient magnitudes: ``free = l'(s) sqrt(1 - s^2) = 2/sqrt(1 - s^2)``
    for the temperature-free map, ``scaled = sqrt(1 - s^2)/tau`` for ``s / tau`` (times ``P`` or ``1 - P``).
    """

    factor: sp.Expr
    free: sp.Expr
    scaled: sp.Expr


@functools.lru_cache(maxsize=None)
def tangent_factor() -> TangentFactor:
    """The embedding-space factor of a similarity gradient **[derived]**."""
    theta = sp.Symbol("theta", real=True)
    z_i, z_j = sp.Matrix([1, 0]), sp.Matrix([sp.cos(theta), sp.sin(theta)])
    cosine = (z_i.T * z_j)[0]
    tangent = z_j - cosine * z_i                                  # (0, sin theta)
    squared_norm = (tangent.T * tangent)[0]                       # sin^2 theta = 1 - cos^2 theta
    squared_norm = squared_norm.subs(sp.sin(theta) ** 2, 1 - sp.cos(theta) ** 2).subs(sp.cos(theta), s)
    factor = sp.sqrt(squared_norm)
    return TangentFactor(factor, temperature_free_logit().slope * factor, factor / tau)
