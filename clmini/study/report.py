"""What a chapter's prose says about its results, computed: trends, peaks, margins, summary tables.

A chapter never types a conclusion: it glues the output of these functions, so the rendered text
says what *this* run shows under any profile. :func:`trend`, :func:`peak` and :func:`compare`
return a small dataclass with the numbers behind the claim and a ``text`` fragment meant to sit
inside a sentence ("as τ grows, uniformity {glue:text}`…`"); :func:`wide_table` lays runs out one
column per configuration, like a paper's results table, with mean ± std over seeds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd


def mean_std(values: Sequence[float], digits: int = 3, scale: float = 1.0) -> str:
    """``"0.812 ± 0.004"`` over seeds (ddof = 1); just ``"0.812"`` for one value."""
    values = np.asarray(values, dtype=float) * scale
    if values.size == 0:
        raise ValueError("values: need at least one value")
    if values.size == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


@dataclass(frozen=True)
class Trend:
    """How ``y`` moves as ``x`` grows, with a tolerance for changes too small to count.

    ``direction``: ``"rises"``, ``"falls"`` or ``"flat"`` (first to last point, ``|change| <= tol``);
    ``monotone``: every consecutive step goes that way (or stays within ``tol``);
    ``change = y_last - y_first``; ``span = max(y) - min(y)``.
    """

    direction: str
    monotone: bool
    change: float
    span: float
    text: str


def trend(x: Sequence[float], y: Sequence[float], tol: float = 0.0, name: str = "τ") -> Trend:
    """The trend of ``y`` against ``x`` (sorted by ``x``); ``tol``: changes this small count as flat
    (e.g. twice the seed standard deviation: a step back within it does not break monotonicity).

    ``text`` says whether the trend is monotone, and if not, where ``y`` is highest and lowest:
    "falls monotonically, by 0.53 from τ = 0.05 to τ = 1" or "is not monotone: highest at τ = 0.2,
    lowest at τ = 1; from τ = 0.05 to τ = 1 it falls by 0.03 overall".
    """
    x = np.asarray(x, dtype=float)
    order = np.argsort(x)
    x, y = x[order], np.asarray(y, dtype=float)[order]
    if y.size < 2:
        return Trend("flat", True, 0.0, 0.0, "cannot show a trend with a single point")
    change, span = float(y[-1] - y[0]), float(y.max() - y.min())
    steps = np.diff(y)
    if abs(change) <= tol:
        direction, monotone = "flat", bool(np.all(np.abs(steps) <= tol))
    else:
        sign = math.copysign(1.0, change)
        direction, monotone = ("rises" if sign > 0 else "falls"), bool(np.all(sign * steps >= -tol))
    ends = f"from {name} = {x[0]:g} to {name} = {x[-1]:g}"
    if monotone and direction == "flat":
        text = (f"changes by no more than the threshold of {tol:.3g} {ends} (range {span:.3g})" if tol > 0
                else f"stays flat {ends}")
    elif monotone:
        text = f"{direction} monotonically, by {abs(change):.3g} {ends}"
    else:
        overall = "ends where it starts" if direction == "flat" else f"{direction} by {abs(change):.3g} overall"
        text = (f"is not monotone: highest at {name} = {x[np.argmax(y)]:g}, lowest at {name} = {x[np.argmin(y)]:g}; "
                f"{ends} it {overall}")
    return Trend(direction, monotone, change, span, text)


@dataclass(frozen=True)
class Peak:
    """Where ``y`` is largest on a grid of ``x``: inside (a reverse U) or at an end."""

    x: float
    y: float
    interior: bool
    text: str


def peak(x: Sequence[float], y: Sequence[float], name: str = "τ", threshold: float = 0.0) -> Peak:
    """The grid point with the largest ``y`` and whether it lies strictly inside the grid.

    An inside peak counts as a reverse U only if it exceeds both ends of the grid by more than
    ``threshold`` (e.g. twice the seed standard deviation); ``interior`` is that verdict.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    order = np.argsort(x)
    x, y = x[order], y[order]
    i = int(np.argmax(y))
    inside = bool(0 < i < x.size - 1)
    clear = inside and bool(y[i] - max(y[0], y[-1]) > threshold)
    if x.size < 3:
        where = "the grid has too few points to show a reverse U"
    elif clear:
        where = "inside the grid, a reverse U"
    elif inside:
        where = (f"inside the grid, but within {threshold:.3g} of an end of the grid: no clear reverse U")
    else:
        where = f"at the {'smallest' if i == 0 else 'largest'} {name} of the grid, not a reverse U"
    return Peak(float(x[i]), float(y[i]), clear, f"{name} = {x[i]:g} ({where})")


@dataclass(frozen=True)
class Comparison:
    """``a - b`` against a margin and the seed spread: does ``a`` beat ``b``?"""

    difference: float
    spread: float
    margin: float
    beats: bool
    text: str


def compare(a: float, b: float, *, spread: float = 0.0, margin: float = 0.0, what: str = "",
            digits: int = 3) -> Comparison:
    """``a`` against ``b``: is the difference larger than both ``margin`` and ``spread`` (e.g. 2 seed stds)?

    ``beats``: ``a`` exceeds ``b`` by more than that threshold. ``text`` reads "is higher by 0.031,
    more than the threshold of 0.010" or "is lower by 0.004, within the threshold of 0.010: not a
    clear difference". ``spread`` NaN (one seed) counts as 0.
    """
    unknown = spread is None or math.isnan(spread)
    spread = 0.0 if unknown else float(spread)
    difference = float(a - b)
    threshold = max(margin, spread)
    beats = difference > threshold
    word = "higher" if difference > 0 else "lower"
    size = f"{word} by {abs(difference):.{digits}f}{' ' + what if what else ''}"
    if abs(difference) > threshold:
        text = f"is {size}, more than the threshold of {threshold:.{digits}f}"
    else:
        text = f"is {size}, within the threshold of {threshold:.{digits}f}: not a clear difference"
    if unknown:  # one seed: the margin alone stands in for the run-to-run noise
        text += " (one seed, so the seed-to-seed spread is not measured)"
    return Comparison(difference, spread, margin, beats, text)


def compare_runs(a: Sequence[float], b: Sequence[float], *, margin: float = 0.0, what: str = "",
                 digits: int = 3) -> Comparison:
    """:func:`compare` of two groups of seeds: their means, against ``margin`` and twice the larger
    seed standard deviation (unknown, so 0, with one seed per group)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    stds = [x.std(ddof=1) for x in (a, b) if x.size > 1]
    spread = 2 * max(stds) if stds else math.nan
    return compare(float(a.mean()), float(b.mean()), spread=spread, margin=margin, what=what, digits=digits)


def agreement(trends: dict[str, Trend], expected: dict[str, str], context: str = "the paper reports",
              name: str = "τ") -> str:
    """A sentence saying which trends go the ``expected`` way (``"rises"``/``"falls"``), and whether monotonically.

    E.g. ``agreement({"uniformity": t1, "tolerance": t2}, {"uniformity": "falls", "tolerance": "rises"})``.
    Only a monotone trend in the expected direction counts as a plain agreement.
    """
    claim = " and ".join(f"{key} {expected[key]}" for key in expected)
    agree = [key for key in expected if trends[key].direction == expected[key]]
    wobbly = [key for key in agree if not trends[key].monotone]
    if len(agree) == len(expected) and not wobbly:
        return f"This is what {context} ({claim})."
    if len(agree) == len(expected):
        verb = "is" if len(wobbly) == 1 else "are"
        return (f"From the smallest to the largest {name} this is the direction {context} ({claim}), but "
                f"{' and '.join(wobbly)} {verb} not monotone along the grid.")
    if agree:
        tail = ", and not monotonically" if wobbly else ""
        return f"Only {' and '.join(agree)} goes the way {context} ({claim}){tail}."
    return f"Neither goes the way {context} ({claim})."


def wide_table(table: pd.DataFrame, column: str, rows: dict[str, str], *, order: Sequence[str] | None = None,
               scale: dict[str, float] | None = None, digits: int | dict[str, int] = 3) -> pd.DataFrame:
    """One row per metric, one column per value of ``table[column]`` (e.g. a configuration label).

    ``rows``: metric column -> row title. Each cell is :func:`mean_std` over the runs (seeds) of
    that column (``"0.812 ± 0.004"``, or ``"0.812"`` for a single seed); ``scale`` multiplies a
    metric first (100 for percentages); ``digits``: one number, or per metric (default 3).
    ``order``: the columns' order (default: first appearance).
    """
    scale = scale or {}
    places = digits if isinstance(digits, dict) else {}
    default = 3 if isinstance(digits, dict) else digits
    order = list(order) if order is not None else list(dict.fromkeys(table[column]))
    cells = {name: {title: mean_std(table.loc[table[column] == name, metric], places.get(metric, default),
                                    scale.get(metric, 1.0))
                    for metric, title in rows.items()}
             for name in order}
    return pd.DataFrame(cells, columns=order).loc[list(rows.values())]
