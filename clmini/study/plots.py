"""Figures the chapters share: metric curves with seed spread and baseline, histograms, histories.

Every function draws on a given (or new) matplotlib ``Axes`` and labels its axes with units, so
a chapter cell stays one line. Nothing here computes a number that is not in its inputs.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from clmini.study.experiments import LABELS


#: The book's figure style: figures are drawn about 10 inches wide and shown in a column of about
#: 690 px, so text is set a little larger than matplotlib's default to stay readable there.
BOOK_STYLE = {"font.size": 11, "axes.titlesize": "medium", "legend.fontsize": "small", "figure.dpi": 100}
#: The book's table display: a cell is never cut to "..." (pandas cuts text beyond 50 characters by
#: default, which would hide the end of an interval or a claim).
TABLE_OPTIONS = {"display.max_colwidth": None}


def use_book_style() -> None:
    """Apply :data:`BOOK_STYLE` to matplotlib and :data:`TABLE_OPTIONS` to pandas (a chapter calls it
    once, in its imports cell)."""
    plt.rcParams.update(BOOK_STYLE)
    for option, value in TABLE_OPTIONS.items():
        pd.set_option(option, value)


def _axes(ax):
    return ax if ax is not None else plt.subplots(figsize=(5, 3.5))[1]


def baseline_band(ax, values, *, label: str = "random init"):
    """The random-init baseline: its mean as a dashed line and, with several seeds, the band from
    its lowest to its highest seed. ``values``: one number or the per-seed values."""
    values = np.atleast_1d(np.asarray(values, dtype=float))
    n = values.size
    ax.axhline(values.mean(), color="grey", linestyle="--", linewidth=1,
               label=f"{label} ({n} seed{'s' if n > 1 else ''})")
    if n > 1:
        ax.axhspan(values.min(), values.max(), color="grey", alpha=0.15, linewidth=0)
    return ax


def metric_curve(table: pd.DataFrame, x: str, metric: str, *, label: str | None = None, baseline=None,
                 ax=None, logx: bool = False, xlabel: str | None = None, **style):
    """Mean of ``metric`` over seeds against ``x`` with every seed drawn as a small dot beside it,
    error bars = one standard deviation over seeds (none with a single seed), and the random-init
    ``baseline`` (a number or its per-seed values) as a dashed line with its seed band."""
    ax = _axes(ax)
    stats = table.groupby(x)[metric].agg(["mean", "std", "count"]).sort_index()
    yerr = stats["std"].where(stats["count"] > 1)
    line = ax.errorbar(stats.index, stats["mean"], yerr=None if yerr.isna().all() else yerr.fillna(0),
                       marker="o", capsize=3, label=label, **style)
    if (stats["count"] > 1).any():
        ax.scatter(table[x], table[metric], s=9, alpha=0.5, color=line[0].get_color(), linewidths=0, zorder=3)
    if baseline is not None:
        baseline_band(ax, baseline)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel or LABELS.get(x, x))
    ax.set_ylabel(LABELS.get(metric, metric))
    ax.grid(alpha=0.3)
    return ax


def metric_point(table: pd.DataFrame, metric: str, at: float, *, label: str, ax, **style):
    """One configuration drawn at abscissa ``at`` beside a curve: mean ± std over seeds, and each seed."""
    values = table[metric]
    err = values.std() if len(values) > 1 else None
    line = ax.errorbar([at], [values.mean()], yerr=None if err is None else [err], marker="*", markersize=12,
                       linestyle="none", capsize=3, label=label, **style)
    if len(values) > 1:
        ax.scatter([at] * len(values), values, s=9, alpha=0.5, color=line[0].get_color(), linewidths=0, zorder=3)
    return ax


def similarity_histogram(histograms: dict, *, ax=None, title: str | None = None,
                         names: tuple[str, str] = ("positive pairs", "negative pairs")):
    """Densities over cosine similarity from :func:`clmini.metrics.similarity_histograms`."""
    ax = _axes(ax)
    edges = np.asarray(histograms["edges"])
    centres, width = (edges[1:] + edges[:-1]) / 2, edges[1] - edges[0]
    for key, name in zip(("positive", "negative"), names):
        ax.bar(centres, histograms[key], width=width, alpha=0.5, label=name)
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    ax.set_xlim(-1, 1)
    if title:
        ax.set_title(title)
    return ax


def history_curves(history: pd.DataFrame, metric: str, *, ax=None, skip_epoch0: bool = False,
                   labels=None, ylabel: str | None = None, label_column: str = "label", color=None, **style):
    """Per-epoch ``metric`` of each label of a long history table (one row per run and epoch, as
    :func:`clmini.study.experiments.history_table` gives): the mean over the label's seeds as a line,
    a band of one standard deviation, and every seed's own trajectory as a thin line of the same
    colour (several seeds). ``labels`` picks and orders the curves; ``skip_epoch0`` leaves out the
    random initialisation; ``color`` fixes one colour for every curve drawn."""
    ax = _axes(ax)
    names = list(labels) if labels is not None else list(dict.fromkeys(history[label_column]))
    for name in names:
        frame = history[history[label_column] == name]
        frame = frame[frame["epoch"] > 0] if skip_epoch0 else frame
        frame = frame.dropna(subset=[metric])
        stats = frame.groupby("epoch")[metric].agg(["mean", "std", "count"])
        (line,) = ax.plot(stats.index, stats["mean"], marker=".", label=str(name), color=color, **style)
        if (stats["count"] > 1).any():
            sd = stats["std"].fillna(0)
            ax.fill_between(stats.index, stats["mean"] - sd, stats["mean"] + sd, color=line.get_color(),
                            alpha=0.2, linewidth=0)
            if "seed" in frame:
                for _, seed_frame in frame.groupby("seed"):
                    ax.plot(seed_frame["epoch"], seed_frame[metric], color=line.get_color(), alpha=0.35,
                            linewidth=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel or LABELS.get(metric, metric))
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    return ax


def sphere_embedding(z, labels, *, ax=None, title: str | None = None, class_names=None, size: float = 4):
    """Points of a 2- or 3-dimensional embedding on their unit circle or sphere, one colour per class.

    3-D: longitude and latitude of each normalised point on an equal-area (Mollweide) map, so equal
    areas of the sphere get equal areas of the plot and a uniform embedding fills it evenly; ``ax``
    must then be made with ``projection="mollweide"``. 2-D: the points on the unit circle (the
    angle, with the class as a small radial offset so that classes stay visible where they overlap).
    """
    z = np.asarray(z, dtype=float)
    labels = np.asarray(labels)
    if z.ndim != 2 or z.shape[1] not in (2, 3):
        raise ValueError(f"sphere_embedding: z must be n x 2 or n x 3, got shape {z.shape}")
    if len(labels) != len(z):
        raise ValueError(f"sphere_embedding: {len(z)} points but {len(labels)} labels")
    z = z / np.clip(np.linalg.norm(z, axis=1, keepdims=True), 1e-12, None)
    classes = np.unique(labels)
    if z.shape[1] == 3:
        if ax is None:
            ax = plt.subplots(figsize=(5, 3), subplot_kw={"projection": "mollweide"})[1]
        if ax.name != "mollweide":
            raise ValueError("sphere_embedding: a 3-D embedding needs an Axes made with projection='mollweide'")
        x, y = np.arctan2(z[:, 1], z[:, 0]), np.arcsin(np.clip(z[:, 2], -1, 1))
        ax.set_xticklabels([])
        ax.set_yticklabels([])
    else:
        ax = _axes(ax)
        angle = np.arctan2(z[:, 1], z[:, 0])
        radius = 1 + 0.03 * np.searchsorted(classes, labels)
        x, y = radius * np.cos(angle), radius * np.sin(angle)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    for i, c in enumerate(classes):
        chosen = labels == c
        name = class_names[c] if class_names is not None else str(c)
        ax.scatter(x[chosen], y[chosen], s=size, color=plt.cm.tab10(i % 10), alpha=0.6, linewidths=0, label=name)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return ax


def formula_curves(xs: np.ndarray, curves: dict, *, xlabel: str, ylabel: str, ax=None, logy: bool = False):
    """Several functions of one variable (e.g. lambdified SymPy results), one line each."""
    ax = _axes(ax)
    for name, ys in curves.items():
        ax.plot(xs, ys, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return ax
