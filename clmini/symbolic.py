"""SymPy derivations of the loss family and of the results the chapters show.

Everything here is exact: SymPy expressions in symbols that read as the papers' notation, so a
chapter can ``glue`` them as math and a test can check the tensor code of :mod:`clmini.losses`
against them. Notation (the book's notation page, ``../shared/PAPERS.md`` section 0):

* one anchor ``i`` with positive similarities ``s_p1, s_p2, ...`` (same label) and negative
  similarities ``s_n1, s_n2, ...`` (other labels); all are cosines in ``[-1, 1]``;
* a *logit map* ``l(s)``: ``s / tau`` (InfoNCE, SupCon, SINCERE, the hard loss),
  ``2 artanh(s)`` (temperature-free), ``s / tau(s)`` with DySTreSS's cosine schedule;
* ``N`` in Wang & Liu's formulas counts the terms of the InfoNCE denominator, i.e. the positive and
  ``N - 1`` negatives.

Two layers:

1. :func:`anchor_loss` -- one anchor's loss for every loss of :data:`clmini.losses.LOSSES` as an
   :class:`AnchorLoss` (expression, gradient, lambdified functions), and :func:`evaluate_anchor`,
   its value and gradient in high precision (mpmath, 30 digits) at given similarities: the oracle
   of ``tests/test_losses_vs_symbolic.py``.
2. One function per result a chapter shows, each returning SymPy objects (a small frozen
   dataclass whose fields are named after the math), with the paper equation in its docstring.

Derivations are cached (``functools.lru_cache``): call them freely with the same small sizes.
This module does not import torch.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import mpmath
import sympy as sp

__all__ = [
    # symbols
    "s", "tau", "tau_min", "tau_max", "lam", "u",
    "positive_similarities", "negative_similarities",
    # logit maps
    "scaled_logit", "artanh_logit", "dystress_temperature", "dystress_logit", "LOGIT_MAPS",
    # one anchor's loss
    "AnchorLoss", "AnchorValue", "LOSS_NAMES", "anchor_loss", "evaluate_anchor", "lambdify",
    # Wang & Liu
    "WangLiuGradients", "infonce_gradients", "relative_penalty", "PenaltyEntropy", "penalty_entropy",
    "LowTemperatureLimit", "low_temperature_limit", "low_temperature_limit_at",
    "HighTemperatureExpansion", "high_temperature_expansion",
    # temperature-free
    "TemperatureFreeLogit", "temperature_free_logit", "IdealConfiguration", "ideal_configuration",
    "VanishingGradient", "scaled_vanishing_gradient", "TangentFactor", "tangent_factor",
    # DySTreSS
    "DystressSchedule", "dystress_schedule", "temperature_function", "DystressGradients", "dystress_gradients",
    # SupCon vs SINCERE
    "SameClassGradients", "same_class_gradients", "ClassMinimum", "class_minimum",
    "OnePositive", "one_positive", "sincere_bound",
]

# --------------------------------------------------------------------------- symbols
#: A cosine similarity (real; the losses see it in [-1, 1]).
s = sp.Symbol("s", real=True)
#: The temperature; positive, so SymPy may simplify ``log(e^{x/tau})`` and take ``tau -> 0+``.
tau = sp.Symbol("tau", positive=True)
#: DySTreSS's temperature range (same names and assumptions as :class:`clmini.losses.CosineTemperature`).
tau_min, tau_max = sp.symbols("tau_min tau_max", positive=True)
#: The simple loss's weight on the negatives (Wang & Liu eq. 3).
lam = sp.Symbol("lambda", nonnegative=True)
#: ``u = 1 / tau``: the expansion variable around ``tau = infinity`` (eq. 7).
u = sp.Symbol("u", positive=True)

# Keyword names accepted for parameter values (``temperature`` as the losses spell it).
_PARAMETERS = {"tau": tau, "temperature": tau, "tau_min": tau_min, "tau_max": tau_max, "lam": lam}


def positive_similarities(n: int) -> tuple[sp.Symbol, ...]:
    """``(s_p1, ..., s_pn)``: the anchor's similarities to its positives."""
    return tuple(sp.Symbol(f"s_p{k}", real=True) for k in range(1, n + 1))


def negative_similarities(n: int) -> tuple[sp.Symbol, ...]:
    """``(s_n1, ..., s_nn)``: the anchor's similarities to its negatives."""
    return tuple(sp.Symbol(f"s_n{k}", real=True) for k in range(1, n + 1))


def _pair_temperature(x: sp.Symbol) -> sp.Symbol:
    """The per-pair temperature symbol ``tau_x`` of DySTreSS (``tau_p1`` for ``s_p1``)."""
    return sp.Symbol(f"tau_{x.name[2:]}", positive=True)


# --------------------------------------------------------------------------- logit maps
def scaled_logit(x: sp.Expr = s) -> sp.Expr:
    """``l(s) = s / tau``: the classic temperature."""
    return x / tau


def artanh_logit(x: sp.Expr = s) -> sp.Expr:
    """``l(s) = 2 artanh(s)`` (Kim & Kim): the log-odds of ``(1 + s) / 2``, no temperature."""
    return 2 * sp.atanh(x)


def dystress_temperature(x: sp.Expr = s, form: str = "cos") -> sp.Expr:
    """DySTreSS's per-pair temperature (Manna et al.).

    ``form="cos"``: the paper's ``tau_min + (tau_max - tau_min)/2 (1 + cos(pi (1 + s)))``;
    ``form="sin"``: the equal ``tau_min + (tau_max - tau_min) sin^2(pi s / 2)``
    (:func:`dystress_schedule` proves them equal).
    """
    if form == "cos":
        # ``(tau_max - tau_min) * (...) / 2`` keeps the paper's 1/2 outside (SymPy would distribute it).
        return tau_min + (tau_max - tau_min) * (1 + sp.cos(sp.pi * (1 + x))) / 2
    if form == "sin":
        return tau_min + (tau_max - tau_min) * sp.sin(sp.pi * x / 2) ** 2
    raise ValueError(f"form must be 'cos' or 'sin', got {form!r}")


def dystress_logit(x: sp.Expr = s) -> sp.Expr:
    """``l(s) = s / tau(s)``, the temperature depending on the pair's own similarity."""
    return x / dystress_temperature(x)


#: The logit maps by the name the chapters use.
LOGIT_MAPS: dict[str, Callable[[sp.Expr], sp.Expr]] = {
    "scaled": scaled_logit, "artanh": artanh_logit, "cosine-temperature": dystress_logit,
}


# --------------------------------------------------------------------------- one anchor's loss
#: Every loss of :data:`clmini.losses.LOSSES`, by the same key.
LOSS_NAMES = ("infonce", "temperature-free", "dystress", "supcon", "sincere", "simple", "hard",
              "hard-simple")


@dataclass(frozen=True)
class AnchorLoss:
    """One anchor's loss as a SymPy expression.

    ``expr`` is written as the paper writes it; for DySTreSS the per-pair temperatures appear as
    symbols ``tau_p1, tau_n1, ...`` whose definitions ``tau(s_p1), ...`` are in
    ``pair_temperatures``. ``explicit`` substitutes them. ``gradient()`` honours ``detach``: with
    ``detach=True`` (DySTreSS's official code, ``s / tau(sg[s])``) the temperatures are constants
    while differentiating and substituted afterwards.
    """

    name: str
    expr: sp.Expr
    positives: tuple[sp.Symbol, ...]
    negatives: tuple[sp.Symbol, ...]
    params: tuple[sp.Symbol, ...]
    pair_temperatures: tuple[tuple[sp.Symbol, sp.Expr], ...] = ()
    detach: bool = True

    @property
    def similarities(self) -> tuple[sp.Symbol, ...]:
        """The arguments: positives first, then negatives."""
        return self.positives + self.negatives

    @property
    def explicit(self) -> sp.Expr:
        """``expr`` with every per-pair temperature replaced by its definition."""
        return self.expr.subs(dict(self.pair_temperatures))

    def gradient(self, simplify: bool = False) -> dict[sp.Symbol, sp.Expr]:
        """``{s_x: dL/ds_x}`` for every similarity of the anchor (``simplify`` for display; slower)."""
        definitions = dict(self.pair_temperatures)
        if self.detach:
            gradient = {x: sp.diff(self.expr, x).subs(definitions) for x in self.similarities}
        else:
            explicit = self.explicit
            gradient = {x: sp.diff(explicit, x) for x in self.similarities}
        return {x: sp.simplify(g) for x, g in gradient.items()} if simplify else gradient

    def subs(self, **values) -> "AnchorLoss":
        """Fix parameters, e.g. ``loss.subs(tau=sp.Rational(1, 5))`` (``temperature`` works too)."""
        mapping = {_PARAMETERS[k]: sp.sympify(v) for k, v in values.items()}
        return AnchorLoss(
            self.name, self.expr.subs(mapping), self.positives, self.negatives,
            tuple(p for p in self.params if p not in mapping),
            tuple((t, d.subs(mapping)) for t, d in self.pair_temperatures), self.detach)

    def value_function(self, modules: str | Sequence = "numpy") -> Callable:
        """``f(s_p1, ..., s_n1, ..., *params)``: the loss as a numerical function (for plots)."""
        return lambdify(self.explicit, self.similarities + self.params, modules)

    def gradient_function(self, modules: str | Sequence = "numpy") -> Callable:
        """``f(s_p1, ..., s_n1, ..., *params) -> [dL/ds_p1, ..., dL/ds_n1, ...]``."""
        gradient = self.gradient()
        return lambdify([gradient[x] for x in self.similarities], self.similarities + self.params, modules)


def lambdify(expr, args: Sequence[sp.Symbol], modules: str | Sequence = "numpy") -> Callable:
    """``sympy.lambdify`` with the argument order made explicit (NumPy by default, for plots)."""
    return sp.lambdify(tuple(args), expr, modules=modules)


def _contrastive(logit: Callable, positives, negatives, denominator: str) -> sp.Expr:
    """``(1/|P|) sum_p -log(e^{l(s_p)} / D_p)``: the shared shape of the contrastive losses.

    ``D_p = e^{l(s_p)} + sum_n e^{l(s_n)}`` ("positive+negatives": InfoNCE, SINCERE, the hard loss)
    or ``sum_q e^{l(s_q)} + sum_n e^{l(s_n)}`` ("all": SupCon L_out, the other positives compete too).
    """
    repulsion = sp.Add(*(sp.exp(logit(x)) for x in negatives))
    attraction = sp.Add(*(sp.exp(logit(q)) for q in positives))
    terms = []
    for p in positives:
        numerator = sp.exp(logit(p))
        denominator_p = attraction + repulsion if denominator == "all" else numerator + repulsion
        terms.append(-sp.log(numerator / denominator_p))
    return sp.Add(*terms) / len(positives)


def _simple(positives, negatives, weight) -> sp.Expr:
    """Wang & Liu eq. 3 for one anchor: ``-(1/|P|) sum_p s_p + lambda sum_n s_n``."""
    return -sp.Add(*positives) / len(positives) + weight * sp.Add(*negatives)


@functools.lru_cache(maxsize=None)
def _anchor_loss(name: str, n_pos: int, n_neg: int, detach: bool) -> AnchorLoss:
    if name not in LOSS_NAMES:
        raise ValueError(f"name must be one of {LOSS_NAMES}, got {name!r}")
    if n_pos < 1 or n_neg < 0:
        raise ValueError(f"need n_pos >= 1 and n_neg >= 0 (an anchor without positive has no loss), "
                         f"got n_pos={n_pos}, n_neg={n_neg}")
    positives, negatives = positive_similarities(n_pos), negative_similarities(n_neg)
    temperatures: tuple = ()
    if name in ("infonce", "sincere", "hard"):
        # "hard" takes the already selected hardest negatives: the formula is InfoNCE's (eq. 9).
        expr, params = _contrastive(scaled_logit, positives, negatives, "positive+negatives"), (tau,)
    elif name == "supcon":
        expr, params = _contrastive(scaled_logit, positives, negatives, "all"), (tau,)
    elif name == "temperature-free":
        expr, params = _contrastive(artanh_logit, positives, negatives, "positive+negatives"), ()
    elif name == "dystress":
        expr = _contrastive(lambda x: x / _pair_temperature(x), positives, negatives, "positive+negatives")
        temperatures = tuple((_pair_temperature(x), dystress_temperature(x)) for x in positives + negatives)
        params = (tau_min, tau_max)
    else:  # "simple", "hard-simple" (the latter over the already selected negatives)
        expr, params = _simple(positives, negatives, lam), (lam,)
    return AnchorLoss(name, expr, positives, negatives, params, temperatures,
                      bool(detach) if name == "dystress" else True)


def anchor_loss(name: str, n_pos: int = 1, n_neg: int = 3, *, detach: bool = True, **values) -> AnchorLoss:
    """One anchor's loss with ``n_pos`` positives and ``n_neg`` negatives, for ``name`` in :data:`LOSS_NAMES`.

    Parameters stay symbols unless given: ``anchor_loss("infonce", 1, 3, tau=sp.Rational(1, 5))``.
    For ``"simple"``/``"hard-simple"``, ``lam=None`` means the losses' default ``1 / (n_neg + 1)``.
    ``"hard"``/``"hard-simple"`` take the already selected negatives (``n_neg`` = how many were kept).
    ``detach`` matters for ``"dystress"`` only.
    """
    loss = _anchor_loss(name, n_pos, n_neg, bool(detach))
    if values.get("lam", 0) is None:
        values["lam"] = sp.Rational(1, n_neg + 1)
    return loss.subs(**values) if values else loss


@dataclass(frozen=True)
class AnchorValue:
    """An anchor's loss and gradient evaluated at numbers (floats rounded from 30-digit mpmath)."""

    value: float
    grad_positives: tuple[float, ...]
    grad_negatives: tuple[float, ...]


@functools.lru_cache(maxsize=None)
def _compiled(name: str, n_pos: int, n_neg: int, detach: bool):
    loss = _anchor_loss(name, n_pos, n_neg, detach)
    args = loss.similarities + loss.params
    return loss.params, loss.value_function("mpmath"), loss.gradient_function("mpmath"), args


def evaluate_anchor(name: str, s_pos: Sequence[float], s_neg: Sequence[float], *, detach: bool = True,
                    dps: int = 30, **values) -> AnchorValue:
    """Value and gradient of one anchor's loss at the given similarities, in ``dps``-digit arithmetic.

    ``values`` gives the parameters (``tau``/``temperature``, ``tau_min``, ``tau_max``, ``lam``;
    ``lam=None`` or missing means the default ``1 / (len(s_neg) + 1)``). The inputs are taken as the
    exact binary numbers they are (a float64 similarity matrix's entries), so the result is the
    exact loss of those inputs, correctly rounded to float64 up to ~1e-30 relative error.
    """
    params, value_fn, grad_fn, _ = _compiled(name, len(s_pos), len(s_neg), bool(detach))
    given = {_PARAMETERS[k]: v for k, v in values.items()}
    if lam in params and given.get(lam) is None:
        given[lam] = mpmath.mpf(1) / (len(s_neg) + 1)
    missing = [p for p in params if p not in given]
    if missing:
        raise ValueError(f"{name}: give a value for {', '.join(map(str, missing))}")
    with mpmath.workdps(dps):
        args = [mpmath.mpf(float(x)) for x in list(s_pos) + list(s_neg)]
        args += [mpmath.mpf(given[p]) if not isinstance(given[p], sp.Basic) else mpmath.mpf(str(sp.N(given[p], dps)))
                 for p in params]
        value = float(value_fn(*args))
        gradient = [float(g) for g in grad_fn(*args)]
    return AnchorValue(value, tuple(gradient[:len(s_pos)]), tuple(gradient[len(s_pos):]))


# =========================================================================== Wang & Liu (CVPR 2021)
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


# =========================================================================== temperature-free (Kim & Kim)
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


# =========================================================================== DySTreSS (Manna et al.)
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


# =========================================================================== SupCon vs SINCERE
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
