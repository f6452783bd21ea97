"""Which SimCLR recipe lets the ``standard`` profile clear its bar on a 2-core CPU?

The published book (profile ``standard``, notebooks/profiles.yaml) trains about sixty SimCLR runs
on the whole Fashion-MNIST training set within about three hours of a 2-core CPU: some 150 s per
run, four epochs. Its bar: the best InfoNCE run reaches kNN accuracy 0.82 and linear-probe accuracy
0.87 on the whole test set, with the whole training set as kNN bank and probe training set. Each
candidate below trains InfoNCE (tau = 0.1 unless it says otherwise) from the book's SimCLR base
with the same evaluation; the random-init encoder is the baseline.

This is a screening on one seed (the default ``--seeds 0``), not a comparison: the rule of the
book (paired seeds, :mod:`clmini.study.verdicts`) judges the chosen recipe's runs in the chapters,
with three seeds each. The rule here: the cheapest candidate (fewest epochs, then the listed order)
whose every seed clears both bars.

Runs go through the run cache (``--runs-dir``): re-tabling a finished screening takes seconds::

    python benchmarks/standard_recipe.py --runs-dir runs-standard --markdown benchmarks/results/standard_recipe.md
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import seeded  # noqa: E402  (benchmarks/seeded.py: the shared command line)

from clmini.engine import train_or_load  # noqa: E402
from clmini.study.experiments import baseline, simclr_config  # noqa: E402

#: What every candidate shares: the whole training set, evaluated on the whole test set.
SHARED = {"n_train": None, "eval_train_size": None, "probe_iters": 500}
BAR = {"knn_acc": 0.82, "linear_probe_acc": 0.87}
TEMPERATURE = 0.1
#: name -> changes to the SimCLR base run (TrainConfig fields).
CANDIDATES = {
    "Adam, batch 256, 4 epochs": {"optimizer": "adam", "batch_size": 256, "epochs": 4},
    "Adam, batch 256, 6 epochs": {"optimizer": "adam", "batch_size": 256, "epochs": 6},
    "Adam, batch 256, 10 epochs": {"optimizer": "adam", "batch_size": 256, "epochs": 10},
    "SGD, batch 256, 4 epochs": {"optimizer": "sgd", "batch_size": 256, "epochs": 4},
    "SGD, batch 256, 4 epochs, τ = 0.2": {"optimizer": "sgd", "batch_size": 256, "epochs": 4,
                                          "loss_args": {"temperature": 0.2}},
    "Adam, batch 128, 4 epochs": {"optimizer": "adam", "batch_size": 128, "epochs": 4},
    "SGD, batch 128, 4 epochs": {"optimizer": "sgd", "batch_size": 128, "epochs": 4},
    "SGD, batch 128, 4 epochs, crops 40-100 %": {"optimizer": "sgd", "batch_size": 128, "epochs": 4,
                                                 "augment": {"crop_scale": [0.4, 1.0]}},
}
METRICS = {"knn_acc": "kNN (k = 200)", "linear_probe_acc": "linear probe"}


def config(settings: dict, seed: int):
    settings = {"loss_args": {"temperature": TEMPERATURE}, **SHARED, **settings, "seed": seed}
    return simclr_config(**settings)


def train(seeds, runs_dir, device) -> dict:
    """``{(candidate, seed): metrics}``, with ``("random init", seed)`` for the baseline."""
    table = {}
    for seed in seeds:
        table["random init", seed] = train_or_load(baseline(config({}, seed)), runs_dir, device=device,
                                                   progress=False, stores=[]).metrics
        for name, settings in CANDIDATES.items():
            table[name, seed] = train_or_load(config(settings, seed), runs_dir, device=device, progress=False,
                                              stores=[]).metrics
    return table


def clears(table: dict, name: str, seeds) -> bool:
    return all(table[name, s][m] >= bar for s in seeds for m, bar in BAR.items())


def choose(table: dict, seeds) -> str | None:
    """The cheapest candidate (fewest epochs, then listed order) clearing both bars on every seed."""
    cleared = [name for name in CANDIDATES if clears(table, name, seeds)]
    return min(cleared, key=lambda name: CANDIDATES[name]["epochs"], default=None)


def markdown(table: dict, seeds, device_name: str) -> str:
    rows = [f"Device: {device_name}, torch {torch.__version__}. SimCLR on the whole Fashion-MNIST training set "
            f"(60 000 images), InfoNCE τ = {TEMPERATURE} unless stated, the small CNN, each optimiser's recipe "
            "(clmini.engine.config.RECIPES); kNN (k = 200, the whole training set as bank) and linear probe on "
            f"the 10 000 test images; seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}. "
            f"Bar: kNN ≥ {BAR['knn_acc']}, probe ≥ {BAR['linear_probe_acc']}. Seconds: training, then "
            "evaluation, of one run (timings of runs that shared the CPU with other work are not comparable).", "",
            "| recipe | " + " | ".join(METRICS.values()) + " | clears the bar | train s | eval s |",
            "|---" * (len(METRICS) + 4) + "|"]
    for name in ["random init", *CANDIDATES]:
        cells = [" / ".join(f"{table[name, s][m]:.4f}" for s in seeds) for m in METRICS]
        cells.append("—" if name == "random init" else ("yes" if clears(table, name, seeds) else "no"))
        for key in ("train_seconds", "eval_seconds"):
            cells.append(" / ".join(f"{table[name, s].get(key, 0.0):.0f}" for s in seeds))
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    chosen = choose(table, seeds)
    rows += ["", f"**Chosen: {chosen}**: the cheapest candidate that clears both bars." if chosen else
             "**No candidate clears both bars.**"]
    return "\n".join(rows) + "\n"


def main(argv=None) -> int:
    return seeded.main(__doc__, train, markdown, argv, default_seeds=(0,))


if __name__ == "__main__":
    sys.exit(main())
