"""Symbols, logit maps, and one anchor's loss for every loss of the registry (the tests' oracle)."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Sequence

import mpmath
import sympy as sp

from clmini.losses import LOSSES, Artanh, CosineTemperature, Scaled

__all__ = [
    # symbols
    "s", "tau", "tau_min", "tau_max", "lam", "u", "progress", "periods", "alpha", "a0", "mean_positive",
    "positive_similarities", "negative_similarities", "positive_weights",
    # logit maps
    "scaled_logit", "artanh_logit", "dystress_temperature", "dystress_logit", "LOGIT_MAPS",
    # temperatures that are not constants
    "scheduled_temperature", "macl_temperature", "temperature_derivative",
    # one anchor's loss
    "AnchorLoss", "AnchorValue", "LOSS_NAMES", "anchor_loss", "evaluate_anchor", "lambdify",
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
#: Training progress ``p`` in [0, 1] and the cycles of a temperature schedule over it (Kukleva et al.).
progress = sp.Symbol("p", nonnegative=True)
periods = sp.Symbol("k", positive=True)
#: MACL's temperature slope, reference alignment and the batch's mean positive similarity ``A``.
alpha = sp.Symbol("alpha", nonnegative=True)
a0 = sp.Symbol("A_0", real=True)
mean_positive = sp.Symbol("A", real=True)

# Keyword names accepted for parameter values (``temperature`` as the losses spell it).
_PARAMETERS = {"tau": tau, "temperature": tau, "tau_min": tau_min, "tau_max": tau_max, "lam": lam}


def positive_similarities(n: int) -> tuple[sp.Symbol, ...]:
    """``(s_p1, ..., s_pn)``: the anchor's similarities to its positives."""
    return tuple(sp.Symbol(f"s_p{k}", real=True) for k in range(1, n + 1))


def negative_similarities(n: int) -> tuple[sp.Symbol, ...]:
    """``(s_n1, ..., s_nn)``: the anchor's similarities to its negatives."""
    return tuple(sp.Symbol(f"s_n{k}", real=True) for k in range(1, n + 1))


def positive_weights(n: int) -> tuple[sp.Symbol, ...]:
    """``(w_p1, ..., w_pn)``: constant weights of the anchor's positive terms (DCLW's von Mises-Fisher
    weights, MACL's reweighting ``V``), computed from the whole batch and detached."""
    return tuple(sp.Symbol(f"w_p{k}", real=True) for k in range(1, n + 1))


def _pair_temperature(x: sp.Symbol) -> sp.Symbol:
    """The per-pair temperature symbol ``tau_x`` of DySTreSS (``tau_p1`` for ``s_p1``)."""
    return sp.Symbol(f"tau_{x.name[2:]}", positive=True)


# --------------------------------------------------------------------------- logit maps
def scaled_logit(x: sp.Expr = s) -> sp.Expr:
    """``l(s) = s / tau``: the classic temperature (:meth:`clmini.losses.Scaled.symbolic`)."""
    return Scaled.symbolic(x)


def artanh_logit(x: sp.Expr = s) -> sp.Expr:
    """``l(s) = 2 artanh(s)`` (Kim & Kim): the log-odds of ``(1 + s) / 2``, no temperature
    (:meth:`clmini.losses.Artanh.symbolic`)."""
    return Artanh.symbolic(x)


def dystress_temperature(x: sp.Expr = s, form: str = "cos") -> sp.Expr:
    """DySTreSS's per-pair temperature (Manna et al.).

    ``form="cos"``: the paper's ``tau_min + (tau_max - tau_min)/2 (1 + cos(pi (1 + s)))``, as
    :meth:`clmini.losses.CosineTemperature.symbolic_temperature` writes it; ``form="sin"``: the
    equal ``tau_min + (tau_max - tau_min) sin^2(pi s / 2)`` (:func:`dystress_schedule` proves them
    equal; the tensor code computes this one).
    """
    if form == "cos":
        return CosineTemperature.symbolic_temperature(x)
    if form == "sin":
        return tau_min + (tau_max - tau_min) * sp.sin(sp.pi * x / 2) ** 2
    raise ValueError(f"form must be 'cos' or 'sin', got {form!r}")


def dystress_logit(x: sp.Expr = s) -> sp.Expr:
    """``l(s) = s / tau(s)``, the temperature depending on the pair's own similarity."""
    return x / dystress_temperature(x)


def scheduled_temperature(p: sp.Expr = progress) -> sp.Expr:
    """Kukleva et al.'s cosine schedule over training progress ``p``:
    ``tau_min + (tau_max - tau_min) (1 + cos(2 pi k p)) / 2`` (``k``: cycles over the run)."""
    return tau_min + (tau_max - tau_min) * (1 + sp.cos(2 * sp.pi * periods * p)) / 2


def macl_temperature(a: sp.Expr = mean_positive) -> sp.Expr:
    """MACL's batch temperature ``tau_0 (1 + alpha (A - A_0))``, ``tau_0`` written ``tau``."""
    return tau * (1 + alpha * (a - a0))


def temperature_derivative(loss: "AnchorLoss") -> sp.Expr:
    """``dL/dtau`` of an anchor's loss: with ``tau = e^{-theta}`` (a learned log-scale ``theta``),
    ``dL/dtheta = -tau dL/dtau``."""
    return sp.diff(loss.explicit, tau)


#: The logit maps by the name the chapters use.
LOGIT_MAPS: dict[str, Callable[[sp.Expr], sp.Expr]] = {
    "scaled": scaled_logit, "artanh": artanh_logit, "cosine-temperature": dystress_logit,
}


# --------------------------------------------------------------------------- one anchor's loss
#: Every loss of :data:`clmini.losses.LOSSES`, by the same key.
LOSS_NAMES = tuple(LOSSES)


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


def _decoupled(logit: Callable, positives, negatives, weights) -> sp.Expr:
    """DCL for one anchor: ``(1/|P|) sum_p (-w_p l(s_p) + log sum_n e^{l(s_n)})`` (``w_p = 1``: DCL)."""
    log_repulsion = sp.log(sp.Add(*(sp.exp(logit(x)) for x in negatives)))
    return sp.Add(*(-w * logit(p) + log_repulsion for p, w in zip(positives, weights))) / len(positives)


def _reweighted(logit: Callable, positives, negatives, weights) -> sp.Expr:
    """MACL for one anchor: ``(1/|P|) sum_p V_p (-log(e^{l(s_p)} / (e^{l(s_p)} + sum_n e^{l(s_n)})))``."""
    repulsion = sp.Add(*(sp.exp(logit(x)) for x in negatives))
    return sp.Add(*(-w * sp.log(sp.exp(logit(p)) / (sp.exp(logit(p)) + repulsion))
                    for p, w in zip(positives, weights))) / len(positives)


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
    if name in ("dcl", "dclw", "macl") and n_neg < 1:
        raise ValueError(f"{name}: the decoupled and reweighted losses need n_neg >= 1, got {n_neg}")
    if name in ("infonce", "sincere", "hard", "learned-temperature", "scheduled-temperature"):
        # "hard" takes the already selected hardest negatives: the formula is InfoNCE's (eq. 9); the
        # learned and the scheduled temperature are InfoNCE's at the temperature of the step.
        expr, params = _contrastive(scaled_logit, positives, negatives, "positive+negatives"), (tau,)
    elif name == "dcl":
        expr, params = _decoupled(scaled_logit, positives, negatives, [1] * n_pos), (tau,)
    elif name == "dclw":
        weights = positive_weights(n_pos)
        expr, params = _decoupled(scaled_logit, positives, negatives, weights), (tau, *weights)
    elif name == "macl":
        # tau is the batch temperature tau_A (macl_temperature), the weights V_p = 1 / (1 - p_p + eps)
        weights = positive_weights(n_pos)
        expr, params = _reweighted(scaled_logit, positives, negatives, weights), (tau, *weights)
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
    ``lam=None`` or missing means the default ``1 / (len(s_neg) + 1)``; ``weights``: one per
    positive, for ``"dclw"`` and ``"macl"``). The inputs are taken as the
    exact binary numbers they are (a float64 similarity matrix's entries), so the result is the
    exact loss of those inputs, correctly rounded to float64 up to ~1e-30 relative error.
    """
    params, value_fn, grad_fn, _ = _compiled(name, len(s_pos), len(s_neg), bool(detach))
    weights = values.pop("weights", None)
    given = {_PARAMETERS[k]: v for k, v in values.items()}
    if weights is not None:
        given.update(zip(positive_weights(len(s_pos)), weights))
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
