"""How a chapter prints its numbers: mean ± std over seeds, and results tables like a paper's.

These functions only format numbers. Whether one configuration is above another, or a metric
rises with τ, is decided by the book's one comparison rule, :mod:`clmini.study.verdicts`.
:func:`wide_table` lays runs out one column per configuration, with mean ± std over seeds.
"""
from __future__ import annotations

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
