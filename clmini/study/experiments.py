"""What every chapter's experiment does: a base config, variants of it, their runs, one table.

A chapter describes its runs as *variants* of one base :class:`~clmini.engine.TrainConfig` (a loss
and its arguments, a seed, ...). :func:`run_variants` trains or loads each one from the run cache,
so chapters that share a base config share their runs: chapter 2 reuses chapter 1's temperature
sweep without retraining. :func:`results_table` turns runs into a ``pandas`` table (one row per
run, the final metrics as columns) and :func:`seed_summary` folds seeds into mean, standard
deviation and count, so a figure can show the spread beside the mean.

The random-initialisation baseline is a run too (:func:`baseline`): ``epochs=0`` through the same
evaluation code path, so "what did training add?" is always answered by a difference of numbers
measured the same way.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from types import MappingProxyType
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from clmini.engine import Run, TrainConfig, load_dataset, resolve_device, train_or_load
from clmini.engine.config import RECIPES

# Final metrics shown in the chapters' tables (keys of ``Run.metrics``).
METRICS = ("knn_acc", "linear_probe_acc", "uniformity", "tolerance", "alignment", "separation",
           "pos_sim", "neg_sim")

# Readable names for the columns and axes of tables and figures.
LABELS = {
    "knn_acc": "kNN accuracy", "linear_probe_acc": "linear-probe accuracy",
    "uniformity": "uniformity −L_unif (t = 2)", "tolerance": "tolerance (mean same-class cos)",
    "alignment": "alignment (mean ‖z₁−z₂‖²)", "separation": "embedding separation",
    "pos_sim": "mean positive cos", "neg_sim": "mean negative cos", "train_seconds": "training time (s)",
}


#: The book's SimCLR base run: chapters 1-3 build every run from it, so equal changes give equal
#: configs and one cached run serves all three. A chapter's ``simclr`` parameter (and a profile,
#: through it) says what changes; the values live here and nowhere else.
SIMCLR_BASE = MappingProxyType({"epochs": 3, "n_train": 15000, "batch_size": 256,
                                "eval_train_size": 10000, "probe_iters": 300})

#: The run settings every training chapter takes as its own parameters (``None``: the engine's
#: default, :class:`~clmini.engine.TrainConfig`): the data set, the encoder, the optimiser's recipe.
CHOICES = ("dataset", "arch", "optimizer")


def choices(**values) -> dict:
    """The chapter-level run settings (:data:`CHOICES`) that are set (not ``None``), as config changes."""
    unknown = sorted(set(values) - set(CHOICES))
    if unknown:
        raise ValueError(f"choices: unknown {unknown}; valid: {list(CHOICES)}")
    return {name: value for name, value in values.items() if value is not None}


def simclr_config(loss: str = "infonce", loss_args: dict | None = None, **changes) -> TrainConfig:
    """The SimCLR base run (:data:`SIMCLR_BASE`) with ``changes`` (any :class:`TrainConfig` field),
    for self-supervised two-view training with ``loss``."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"loss", "loss_args", "mode"}
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise ValueError(f"simclr: unknown run settings {unknown}; valid: {sorted(fields)}")
    return TrainConfig(**{**SIMCLR_BASE, **changes}, loss=loss, loss_args=dict(loss_args or {}), mode="simclr")


def variant(base: TrainConfig, **changes) -> TrainConfig:
    """``base`` with some fields changed (e.g. ``loss="hard", loss_args={...}, seed=1``).

    A new ``loss`` without ``loss_args`` starts from that loss's defaults: the base's arguments
    belong to the base's loss (``variant(base, loss="simple")`` must not pass it a temperature).
    Likewise a new ``optimizer`` gets its own recipe's learning rate, weight decay and warm-up
    unless they are given (Adam must not inherit SGD's learning rate).
    """
    if "loss" in changes and changes["loss"] != base.loss:
        changes.setdefault("loss_args", {})
    if "optimizer" in changes and changes["optimizer"] != base.optimizer:
        for name in RECIPES[base.optimizer]:  # the base's lr etc. belong to its optimiser's recipe
            changes.setdefault(name, None)
    return dataclasses.replace(base, **changes)


def baseline(base: TrainConfig, seed: int | None = None) -> TrainConfig:
    """The random-initialisation baseline of ``base``: no training step, same evaluation.

    The loss does not matter for an untrained network, so it is fixed: every chapter sharing
    ``base`` (up to the loss) shares one baseline run.
    """
    return variant(base, epochs=0, warmup_epochs=0.0, loss="infonce", loss_args={"temperature": 0.1},
                   seed=base.seed if seed is None else seed)


def run_variants(configs: Iterable[TrainConfig], runs_dir: str | Path | None = None, *, device: str = "auto",
                 progress: bool = False, data=None, root: str | Path | None = None, download: bool = False,
                 **kwargs) -> list[Run]:
    """Train (or load from the cache) each config in order; each data set is loaded once.

    ``runs_dir``: the run cache (default ``$CLMINI_RUNS`` or ``runs``, as :func:`clmini.engine.train_or_load`).
    ``data``: an already loaded :class:`~clmini.engine.data.ImageData` for every config (tests, notebooks
    that loaded it anyway); otherwise ``root``/``download`` are passed to the loader.
    """
    loaded = {} if data is None else {data.name: data}
    result = []
    for config in configs:
        if config.dataset not in loaded:
            loaded[config.dataset] = load_dataset(config.dataset, root, download=download,
                                                  device=resolve_device(device))
        result.append(train_or_load(config, runs_dir, device=device, progress=progress,
                                    data=loaded[config.dataset], **kwargs))
    return result


def describe(config: TrainConfig) -> dict:
    """The identifying columns of a run: loss, its arguments, epochs, seed."""
    row = {"loss": config.loss if config.epochs else "random init", "epochs": config.epochs, "seed": config.seed}
    if config.epochs:
        row.update(config.loss_args)
    return row


def results_table(runs: Iterable[Run], metrics: Iterable[str] = METRICS, **extra_columns) -> pd.DataFrame:
    """One row per run: :func:`describe` columns, the final metrics, training time, run id.

    ``extra_columns``: name -> function of a :class:`~clmini.engine.Run` (e.g. a label).
    """
    rows = []
    for run in runs:
        row = describe(run.config)
        row.update({name: fn(run) for name, fn in extra_columns.items()})
        row.update({m: run.metrics[m] for m in metrics})
        row["train_seconds"] = run.metrics["train_seconds"]
        row["run"] = run.config.hash
        rows.append(row)
    return pd.DataFrame(rows)


def seed_summary(table: pd.DataFrame, by: list[str], metrics: Iterable[str] = METRICS) -> pd.DataFrame:
    """Mean, standard deviation (ddof = 1; NaN for one seed) and number of seeds per group."""
    metrics = [m for m in metrics if m in table]
    grouped = table.groupby(by, dropna=False, sort=False)[metrics]
    summary = grouped.agg(["mean", "std", "count"])
    summary.columns = [f"{m}_{stat}" for m, stat in summary.columns]
    return summary.reset_index()


def history_table(runs: Iterable[Run], names: Iterable[str] | None = None) -> pd.DataFrame:
    """Per-epoch history of several runs, long format, with a ``label`` column (default: the loss), the
    run's hash (``run``) and its ``seed``."""
    runs = list(runs)
    names = list(names) if names is not None else [describe(run.config)["loss"] for run in runs]
    if len(names) != len(runs):
        raise ValueError(f"names: got {len(names)} for {len(runs)} runs")
    frames = [pd.DataFrame(run.history).assign(label=name, run=run.config.hash, seed=run.config.seed)
              for run, name in zip(runs, names)]
    return pd.concat(frames, ignore_index=True)


def seed_values(frame: pd.DataFrame, label, metric: str, seeds: Sequence[int] | None = None, *,
                column: str = "label") -> np.ndarray:
    """``metric`` of the configuration whose ``column`` is ``label``, one value per seed in the order
    of ``seeds`` (default: the configuration's seeds, sorted): the pairing that
    :func:`clmini.study.verdicts.paired` needs. ``frame`` has a ``seed`` column (as
    :func:`results_table` gives).

    ``ValueError`` when a seed is missing or appears twice: paired values must come from one run per seed.
    """
    rows = frame[frame[column] == label]
    if rows.empty:
        raise ValueError(f"no runs with {column} {label!r}; {column}s: {sorted(map(str, frame[column].unique()))}")
    if rows["seed"].duplicated().any():
        raise ValueError(f"{label!r}: more than one run per seed {sorted(rows['seed'])}")
    by_seed = rows.set_index("seed")[metric]
    seeds = sorted(by_seed.index) if seeds is None else list(seeds)
    missing = [s for s in seeds if s not in by_seed.index]
    if missing:
        raise ValueError(f"{label!r}: no run for seeds {missing}")
    return by_seed.loc[seeds].to_numpy(dtype=float)


def best(table: pd.DataFrame, metric: str, by: str) -> tuple:
    """The value of column ``by`` whose mean ``metric`` (over seeds) is highest, and that mean."""
    means = table.groupby(by)[metric].mean()
    return means.idxmax(), float(means.max())
