"""Does bf16 cost accuracy? The quick SimCLR run in float32 and in bf16, paired by seed.

Each seed trains the book's SimCLR base run (:data:`clmini.study.experiments.SIMCLR_BASE`, InfoNCE
with tau = 0.2) once with ``precision="fp32"`` and once with ``"bf16"``, and evaluates the
random-init encoder of that seed in both precisions as the baseline. The same seed gives the same
initialisation, batches and augmentations in both precisions, so the per-seed differences are
paired. Runs go through the run cache (``--runs-dir``): an interrupted comparison resumes, a
finished one is re-tabled in seconds. Writes a markdown table (``--markdown``), e.g.

    python benchmarks/precision.py --seeds 0 1 2 --markdown benchmarks/results/precision_cpu.md
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import seeded  # noqa: E402  (benchmarks/seeded.py: the shared command line)

from clmini.engine import native_bf16, train_or_load  # noqa: E402
from clmini.study.experiments import baseline, simclr_config  # noqa: E402

METRICS = {"knn_acc": "kNN", "linear_probe_acc": "linear probe"}


def runs(seeds, runs_dir, device) -> dict:
    """``{(kind, precision, seed): metrics}`` for the trained and the random-init encoders."""
    table = {}
    for seed in seeds:
        for precision in ("fp32", "bf16"):
            config = simclr_config(loss_args={"temperature": 0.2}, precision=precision, seed=seed)
            for kind, c in (("trained", config), ("random init", baseline(config))):
                table[kind, precision, seed] = train_or_load(c, runs_dir, device=device, progress=False).metrics
    return table


def markdown(table: dict, seeds, device_name: str) -> str:
    c = simclr_config(loss_args={"temperature": 0.2})
    lines = [f"Device: {device_name}, torch {torch.__version__}. The quick SimCLR run ({c.epochs} epochs of "
             f"{c.n_train or 'all'} training images, batch {c.batch_size}, {c.optimizer} lr {c.lr:g}, InfoNCE "
             f"τ = 0.2, {c.arch}, {c.dataset}), seeds {', '.join(map(str, seeds))}; "
             "kNN (k = 200) and linear probe on the 10 000 test images.", "",
             "| metric | encoder | seed | fp32 | bf16 | bf16 − fp32 |", "|---|---|---|---|---|---|"]
    for metric, name in METRICS.items():
        for kind in ("trained", "random init"):
            diffs = []
            for seed in seeds:
                a, b = table[kind, "fp32", seed][metric], table[kind, "bf16", seed][metric]
                diffs.append(b - a)
                lines.append(f"| {name} | {kind} | {seed} | {a:.4f} | {b:.4f} | {b - a:+.4f} |")
            spread = f" ± {statistics.stdev(diffs):.4f} (sd over seeds)" if len(diffs) > 1 else ""
            lines.append(f"| {name} | {kind} | mean | "
                         f"{statistics.mean(table[kind, 'fp32', s][metric] for s in seeds):.4f} | "
                         f"{statistics.mean(table[kind, 'bf16', s][metric] for s in seeds):.4f} | "
                         f"{statistics.mean(diffs):+.4f}{spread} |")
    seconds = {p: statistics.mean(table["trained", p, s]["train_seconds"] for s in seeds) for p in ("fp32", "bf16")}
    lines += ["", f"Mean training time per run: fp32 {seconds['fp32']:.0f} s, bf16 {seconds['bf16']:.0f} s "
                  "(not a speed benchmark: the runs were not timed on an idle machine; see throughput.py)."]
    return "\n".join(lines) + "\n"


def _warn_emulated(device) -> None:
    if not native_bf16(device):
        print(f"note: {device} has no native bf16; the bf16 runs are emulated (slow, same numbers)")


def main(argv=None) -> int:
    return seeded.main(__doc__, runs, markdown, argv, check_device=_warn_emulated)


if __name__ == "__main__":
    sys.exit(main())
