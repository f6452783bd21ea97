"""Which training recipe learns most at the quick budget? Adam against SGD with momentum, paired by seed.

Every candidate trains the book's SimCLR base run at the ``quick`` budget (InfoNCE, tau = 0.2, the
small CNN, Fashion-MNIST; the budget's epochs and training subset are :data:`BUDGET`) with one
optimiser setting (:data:`CANDIDATES`: Adam at the old default and a higher rate; SGD with momentum
0.9, linear warm-up and cosine decay over a small learning-rate sweep). The same seed gives the same
initialisation, batches and augmentations to every candidate, so candidates are compared with the
book's one comparison rule (:func:`clmini.study.verdicts.paired`) on per-seed differences against
the reference candidate (the old default). The random-init encoder of each seed is the baseline.

Runs go through the run cache (``--runs-dir``): an interrupted calibration resumes, a finished one
is re-tabled in seconds::

    python benchmarks/recipe.py --seeds 0 1 2 --markdown benchmarks/results/recipe_cpu.md
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import seeded  # noqa: E402  (benchmarks/seeded.py: the shared command line)

from clmini.engine import train_or_load  # noqa: E402
from clmini.study.experiments import SIMCLR_BASE, baseline, simclr_config  # noqa: E402
from clmini.study.verdicts import paired  # noqa: E402

#: The quick budget the recipe is chosen for: the images a quick run trains on (what the book's
#: 30-minute budget affords per run), evaluated as every run is.
BUDGET = {"epochs": 3, "n_train": 15000}
TEMPERATURE = 0.2
#: name -> optimiser settings (TrainConfig fields). The first is the reference (the old default).
CANDIDATES = {
    "Adam 1e-3 (old default)": {"optimizer": "adam", "lr": 1e-3, "warmup_epochs": 0.0, "weight_decay": 1e-6},
    "Adam 3e-3, warm-up, cosine": {"optimizer": "adam", "lr": 3e-3, "warmup_epochs": 0.3, "weight_decay": 1e-6},
    "Adam 1e-2, warm-up, cosine": {"optimizer": "adam", "lr": 1e-2, "warmup_epochs": 0.3, "weight_decay": 1e-6},
    "SGD 0.03, warm-up, cosine": {"optimizer": "sgd", "lr": 0.03, "warmup_epochs": 0.3, "weight_decay": 5e-4},
    "SGD 0.1, warm-up, cosine": {"optimizer": "sgd", "lr": 0.1, "warmup_epochs": 0.3, "weight_decay": 5e-4},
    "SGD 0.3, warm-up, cosine": {"optimizer": "sgd", "lr": 0.3, "warmup_epochs": 0.3, "weight_decay": 5e-4},
}
METRICS = {"knn_acc": "kNN", "linear_probe_acc": "linear probe"}


def config(settings: dict, seed: int):
    return simclr_config(loss_args={"temperature": TEMPERATURE}, **{**BUDGET, **settings, "seed": seed})


def train(seeds, runs_dir, device) -> dict:
    """``{(candidate, seed): metrics}``, with ``("random init", seed)`` for the baseline."""
    table = {}
    for seed in seeds:  # seed-major: a stopped calibration has every candidate on the first seeds
        for name, settings in CANDIDATES.items():
            table[name, seed] = train_or_load(config(settings, seed), runs_dir, device=device, progress=False).metrics
        table["random init", seed] = train_or_load(baseline(config({}, seed)), runs_dir, device=device, progress=False).metrics
    return table


def choose(table: dict, seeds) -> str:
    """The calibration's rule: the recipe with the highest mean kNN accuracy among those resolved above
    the old default (the first candidate) in both kNN and linear probe; the old default if none is."""
    reference = next(iter(CANDIDATES))
    better = [name for name in CANDIDATES if name != reference and all(
        paired([table[name, s][m] for s in seeds], [table[reference, s][m] for s in seeds]).resolved == 1
        for m in METRICS)]
    return max(better, key=lambda name: sum(table[name, s]["knn_acc"] for s in seeds), default=reference)


def markdown(table: dict, seeds, device_name: str) -> str:
    reference = next(iter(CANDIDATES))
    rows = [f"Device: {device_name}, torch {torch.__version__}. SimCLR, InfoNCE τ = {TEMPERATURE}, small CNN, "
            f"Fashion-MNIST, {BUDGET['epochs']} epochs of {BUDGET['n_train']} training images, batch "
            f"{SIMCLR_BASE['batch_size']}; kNN (k = 200, bank of {SIMCLR_BASE['eval_train_size']} training "
            f"images) and linear probe on the 10 000 test images; seeds {', '.join(map(str, seeds))}. "
            f"Δ: paired difference to {reference!r} (mean over seeds, 95 % interval), with the verdict of "
            "the book's comparison rule.", ""]
    rows += ["| recipe | " + " | ".join(f"{n} (mean ± sd)" for n in METRICS.values())
             + " | " + " | ".join(f"Δ {n} [95 % CI]: verdict" for n in METRICS.values()) + " |",
             "|---" * (1 + 2 * len(METRICS)) + "|"]
    for name in ["random init", *CANDIDATES]:
        cells = []
        for metric in METRICS:
            values = [table[name, s][metric] for s in seeds]
            mean = sum(values) / len(values)
            sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
            cells.append(f"{mean:.4f} ± {sd:.4f}")
        for metric in METRICS:
            if name == reference:
                cells.append("reference")
                continue
            result = paired([table[name, s][metric] for s in seeds], [table[reference, s][metric] for s in seeds],
                            a=name, b=reference)
            cells.append(f"{result.mean:+.4f} [{result.low:+.4f}, {result.high:+.4f}]: {result.verdict}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    chosen = choose(table, seeds)
    rows += ["", f"**Chosen: {chosen}** — the rule of the calibration: among the recipes resolved above the old "
             "default on both metrics, the one with the highest mean kNN accuracy (the old default if none is). "
             "Its paired differences to every other recipe:", "",
             "| against | " + " | ".join(f"Δ {n} [95 % CI]: verdict" for n in METRICS.values()) + " |",
             "|---" * (1 + len(METRICS)) + "|"]
    for name in CANDIDATES:
        if name == chosen:
            continue
        cells = []
        for metric in METRICS:
            result = paired([table[chosen, s][metric] for s in seeds], [table[name, s][metric] for s in seeds],
                            a=chosen, b=name)
            cells.append(f"{result.mean:+.4f} [{result.low:+.4f}, {result.high:+.4f}]: {result.verdict}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def main(argv=None) -> int:
    return seeded.main(__doc__, train, markdown, argv)


if __name__ == "__main__":
    sys.exit(main())
