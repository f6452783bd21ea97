"""The book's one comparison rule: paired seeds, a 95 % interval, a verdict that may be "not resolved".

Every comparative sentence of the book, its results page and its calibration tables comes from
this module, and nothing else in the code decides whether one configuration is above another.

**The rule.** Two configurations A and B are trained with the same seeds. The engine makes a seed
fix the initialisation, the batches and the augmentations, so seed ``s`` of A and seed ``s`` of B
differ only by the configuration: the per-seed differences ``d_s = A_s - B_s`` remove the
seed-to-seed variation that A and B share. Their mean gets a two-sided Student-t interval
(``mean ± t(1 - (1 - confidence)/2, n - 1) · sd / √n``, 95 % by default). The verdict:

- ``"A above B"`` when the whole interval is above 0, ``"B above A"`` when it is below 0;
- ``"not resolved"`` otherwise, and always with fewer than :data:`MIN_SEEDS` paired seeds
  (with two seeds the interval is too wide to mean anything; with one it does not exist).

Trends over a grid (τ, batch size, ...) are judged with the same rule on paired differences:
:func:`trend` (does the metric rise or fall from the first grid point to the last, and does any
step go the other way?) and :func:`peak` (is the best grid point above *both* ends of the grid, a
reverse U?). No correction for multiple comparisons is made: a chapter that tests many pairs
says so, and reads a single resolved difference among many with that in mind.

:func:`sensitivity` answers the question to ask before ranking anything with a metric: can it
move? It sets a metric's range across configurations beside its random-init value and its
seed-to-seed spread, and calls the metric saturated when the configurations do not spread it
more than the seeds do.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

#: Fewer paired seeds than this never resolve a comparison.
MIN_SEEDS = 3
CONFIDENCE = 0.95


def _values(name: str, values) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name}: need one value per seed (a 1-d sequence), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: values must be finite, got {array.tolist()}")
    return array


@dataclass(frozen=True)
class Paired:
    """The comparison of A with B over paired seeds (see the module's rule).

    ``differences``: ``A_s - B_s`` per seed; ``mean``, ``low``, ``high``: their mean and its interval
    (NaN bounds with one seed); ``verdict``: ``"A above B"``, ``"B above A"`` (with the names given)
    or ``"not resolved"``; ``resolved``: +1, -1 or 0 in the same order; ``text``: a fragment for a
    sentence, e.g. "SINCERE is above SupCon by 0.012 (95 % CI 0.004 to 0.020, 3 paired seeds)".
    """

    a: str
    b: str
    differences: tuple[float, ...]
    mean: float
    low: float
    high: float
    confidence: float
    verdict: str
    resolved: int
    text: str
    digits: int = 3

    @property
    def n(self) -> int:
        return len(self.differences)

    @property
    def interval(self) -> str:
        """``"+0.012 [+0.004, +0.020]"``: the mean difference and its interval (``digits`` decimals)."""
        d = self.digits
        if math.isnan(self.low):
            return f"{self.mean:+.{d}f} [interval needs ≥ 2 seeds]"
        return f"{self.mean:+.{d}f} [{self.low:+.{d}f}, {self.high:+.{d}f}]"


def paired(a_values: Sequence[float], b_values: Sequence[float], *, a: str = "A", b: str = "B",
           confidence: float = CONFIDENCE, digits: int = 3, what: str = "") -> Paired:
    """Compare configuration ``a`` with ``b``: ``a_values[i]`` and ``b_values[i]`` come from the same seed.

    ``what``: an optional unit or metric name for the text ("in kNN accuracy").
    """
    x, y = _values(a, a_values), _values(b, b_values)
    if x.size != y.size or x.size == 0:
        raise ValueError(f"paired: need the same, non-zero number of seeds for {a!r} and {b!r}, "
                         f"got {x.size} and {y.size}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    d = x - y
    n, mean = d.size, float(d.mean())
    if n >= 2:
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
        low, high = mean - half, mean + half
    else:
        low = high = math.nan
    resolved = 0
    if n >= MIN_SEEDS:
        resolved = 1 if low > 0 else -1 if high < 0 else 0
    verdict = {1: f"{a} above {b}", -1: f"{b} above {a}", 0: "not resolved"}[resolved]
    pct = f"{100 * confidence:g} %"

    def where(sign: int = 1) -> str:  # the interval of sign * (A - B), as the sentence reads it
        if n < 2:
            return "1 seed, no interval"
        lo, hi = sorted((sign * low, sign * high))
        return f"{pct} CI {lo:+.{digits}f} to {hi:+.{digits}f}, {n} paired seeds"

    suffix = f" {what}" if what else ""
    if resolved:
        upper, lower = (a, b) if resolved > 0 else (b, a)
        text = f"{upper} is above {lower} by {abs(mean):.{digits}f}{suffix} ({where(resolved)})"
    else:
        reason = f"fewer than {MIN_SEEDS} seeds" if n < MIN_SEEDS else "the interval contains 0"
        text = (f"{a} − {b} = {mean:+.{digits}f}{suffix} ({where()}): not resolved, {reason}")
    return Paired(a, b, tuple(float(v) for v in d), mean, low, high, confidence, verdict, resolved, text, digits)


def _grid(x: Sequence[float], runs: Mapping | Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Sort a grid ``x`` with its per-seed values (one row per grid point, one column per seed)."""
    x = np.asarray(x, dtype=float)
    rows = [_values(f"grid point {v:g}", r) for v, r in zip(x, runs)]
    if len(rows) != x.size or len({r.size for r in rows}) != 1:
        raise ValueError(f"need one row of per-seed values per grid point and the same seeds in every row; "
                         f"got {x.size} grid points and rows of sizes {[r.size for r in rows]}")
    values = np.stack(rows)
    if x.size != np.unique(x).size:
        raise ValueError(f"grid points must be distinct, got {x.tolist()}")
    order = np.argsort(x)
    return x[order], values[order]


def _label(name: str, value: float) -> str:
    return f"{name} = {value:g}"


@dataclass(frozen=True)
class Trend:
    """How a metric moves along a grid, judged by :func:`paired` on per-seed values.

    ``direction``: ``"rises"``, ``"falls"`` (last grid point against the first, resolved) or
    ``"not resolved"``; ``overall``: that comparison; ``steps``: each consecutive pair (next
    against previous); ``reversals``: the steps resolved *against* the direction (for a resolved
    trend) — a trend with none is called monotone at this resolution; ``text``: a fragment.
    """

    direction: str
    overall: Paired
    steps: tuple[Paired, ...]
    reversals: tuple[Paired, ...]
    text: str

    @property
    def monotone(self) -> bool:
        return self.direction != "not resolved" and not self.reversals


def trend(x: Sequence[float], runs: Sequence[Sequence[float]], name: str = "τ", *,
          confidence: float = CONFIDENCE, digits: int = 3) -> Trend:
    """Does the metric rise or fall along the grid ``x``? ``runs[i]``: its per-seed values at ``x[i]``
    (the same seeds, in the same order, at every grid point)."""
    x, values = _grid(x, runs)
    if x.size < 2:
        raise ValueError("trend: need at least 2 grid points")
    first, last = _label(name, x[0]), _label(name, x[-1])
    overall = paired(values[-1], values[0], a=last, b=first, confidence=confidence, digits=digits)
    steps = tuple(paired(values[i + 1], values[i], a=_label(name, x[i + 1]), b=_label(name, x[i]),
                         confidence=confidence, digits=digits) for i in range(x.size - 1))
    direction = {1: "rises", -1: "falls", 0: "not resolved"}[overall.resolved]
    reversals = tuple(s for s in steps if overall.resolved and s.resolved == -overall.resolved)
    span = f"from {first} to {last}"
    if direction == "not resolved" and overall.n < MIN_SEEDS:
        text = (f"changes by {overall.mean:+.{digits}f} {span} ({overall.interval}, {overall.n} paired seeds): "
                f"not resolved, fewer than {MIN_SEEDS} seeds")
    elif direction == "not resolved":
        text = f"does not change resolvably {span} ({overall.interval}, {overall.n} paired seeds)"
    else:
        text = f"{direction} {span} by {abs(overall.mean):.{digits}f} ({overall.interval})"
        if reversals:
            back = "; ".join(f"{s.b} to {s.a} ({s.interval})" for s in reversals)
            text += f", but not monotonically: it goes back from {back}"
        elif x.size > 2:
            text += ", with no step resolved the other way"
    return Trend(direction, overall, steps, reversals, text)


@dataclass(frozen=True)
class Peak:
    """Where a metric is highest on a grid, and whether that is a resolved reverse U.

    ``x``: the grid point with the highest mean; ``interior``: it lies strictly inside the grid and
    is resolved above *both* ends (:func:`paired`); ``against_ends``: those two comparisons (empty
    when the best point is an end); ``text``: a fragment.
    """

    x: float
    mean: float
    interior: bool
    against_ends: tuple[Paired, ...]
    text: str


def peak(x: Sequence[float], runs: Sequence[Sequence[float]], name: str = "τ", *,
         confidence: float = CONFIDENCE, digits: int = 3) -> Peak:
    """The grid point with the highest mean and whether it is a resolved interior peak (reverse U)."""
    x, values = _grid(x, runs)
    means = values.mean(axis=1)
    i = int(np.argmax(means))
    where = _label(name, x[i])
    if x.size < 3:
        return Peak(float(x[i]), float(means[i]), False, (),
                    f"highest at {where}; the grid has too few points to show a reverse U")
    if i in (0, x.size - 1):
        end = "smallest" if i == 0 else "largest"
        return Peak(float(x[i]), float(means[i]), False, (),
                    f"highest at {where}, the {end} {name} of the grid: not a reverse U")
    ends = tuple(paired(values[i], values[j], a=where, b=_label(name, x[j]), confidence=confidence, digits=digits)
                 for j in (0, x.size - 1))
    interior = all(c.resolved == 1 for c in ends)
    detail = "; ".join(f"against {c.b}: {c.interval}" for c in ends)
    if interior:
        text = f"highest at {where}, resolved above both ends of the grid ({detail}): a reverse U"
    else:
        text = f"highest at {where}, but not resolved above both ends of the grid ({detail}): no resolved reverse U"
    return Peak(float(x[i]), float(means[i]), interior, ends, text)


@dataclass(frozen=True)
class Sensitivity:
    """Can a metric rank these configurations? Its random-init value, its range across configurations
    (of the seed means) and its seed-to-seed spread (the pooled sd of the configurations' seeds).

    ``saturated``: the configurations spread the metric by no more than twice the seed sd, so
    ranking with it would rank noise; ``text`` says which.
    """

    init: float
    low: float
    high: float
    seed_sd: float
    saturated: bool
    text: str

    @property
    def range(self) -> float:
        return self.high - self.low


def sensitivity(runs: Mapping[str, Sequence[float]], init: Sequence[float] | float, *, metric: str = "the metric",
                digits: int = 3) -> Sensitivity:
    """``runs``: configuration -> its per-seed values; ``init``: the random-init values (or their mean)."""
    groups = {name: _values(name, v) for name, v in runs.items()}
    if not groups or any(v.size == 0 for v in groups.values()):
        raise ValueError("sensitivity: need at least one configuration with at least one seed")
    init_mean = float(np.mean(_values("init", np.atleast_1d(init))))
    means = np.array([v.mean() for v in groups.values()])
    dof = sum(v.size - 1 for v in groups.values())
    seed_sd = (math.sqrt(sum(((v - v.mean()) ** 2).sum() for v in groups.values()) / dof) if dof else math.nan)
    low, high = float(means.min()), float(means.max())
    saturated = bool(math.isnan(seed_sd) or high - low <= 2 * seed_sd)
    text = (f"{metric}: {init_mean:.{digits}f} at random init, {low:.{digits}f} to {high:.{digits}f} across "
            f"the configurations (seed sd {seed_sd:.{digits}f})")
    if math.isnan(seed_sd):
        text += "; one seed per configuration, so whether it can rank them is not known"
    elif saturated:
        text += ": the configurations move it no more than the seeds do, so it cannot rank them here"
    else:
        text += ": it moves more than the seeds do"
    return Sensitivity(init_mean, low, high, seed_sd, saturated, text)
