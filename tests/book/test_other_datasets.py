"""Chapters rerun on other data (issue 13, item 6): chapter 1 under `smoke` on tiny real-format CIFAR-10 files.

The chapter must pass its `dataset` and `data_root` parameters to every run it trains: the test
reads the run cache afterwards and fails if any run used another data set (the engine's default,
Fashion-MNIST, is what a chapter that ignores `dataset` would load) or other files than the tiny
ones under `data_root` (a copy of CIFAR-10 in the loader's default place has 10 000 test images).
"""
from __future__ import annotations

import json
from pathlib import Path


from book_helpers import glued, run_on_tiny_cifar10

REPO = Path(__file__).resolve().parents[2]
CHAPTER = REPO / "notebooks" / "01_infonce_temperature.md"
# Small enough for 5 x 24 = 120 training and 24 test images; smoke's own sizes need more.
TINY_RUN = {"epochs": 1, "n_train": 96, "batch_size": 32, "eval_train_size": 96, "probe_iters": 5,
            "monitor_train_size": 64, "monitor_test_size": 24}


def test_chapter_1_runs_on_tiny_cifar10_files(tmp_path, monkeypatch):
    output, runs_dir = run_on_tiny_cifar10(CHAPTER, tmp_path, monkeypatch, 24,
                                           {"simclr": TINY_RUN, "temperatures": [0.1, 0.5],
                                            "hard_temperatures": [0.1, 0.5]})

    configs = [json.loads(p.read_text())["config"] for p in runs_dir.glob("*/config.json")]
    # 2 InfoNCE + 2 hard + Simple + HardSimple + random init, for each of smoke's 2 seeds; and the picture
    # of the embedding: random init and InfoNCE at both ends of the grid with a 3-D head, first seed only
    assert len(configs) == 14 + 3
    assert sorted(c["proj_dim"] for c in configs if c["proj_dim"] == 3) == [3, 3, 3]
    assert {c["dataset"] for c in configs} == {"cifar10"}
    assert {c["n_train"] for c in configs} == {TINY_RUN["n_train"]}
    # ... read from data_root: every run was tested on the tiny files' 24 test images (not another copy's 10 000)
    tested_on = {json.loads(p.read_text())["eval_test_size"] for p in runs_dir.glob("*/metrics.json")}
    assert tested_on == {24}
    # The prose is glued from the data the runs used, not typed: it names CIFAR-10.
    assert glued(output, "ch1_dataset") == "'CIFAR-10'"
    # The chapter recorded its claims in the isolated cache, resting on these runs only.
    record = json.loads((runs_dir / "claims" / "smoke" / "01_infonce_temperature.json").read_text())
    hashes = {p.parent.name for p in runs_dir.glob("*/config.json")}
    assert record["claims"] and all(set(c["runs"]) <= hashes for c in record["claims"])
