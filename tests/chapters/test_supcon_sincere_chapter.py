"""Chapter 4 rerun on other data (issue 13, item 6): under `smoke` on tiny real-format CIFAR-10 files.

Every run the chapter trains (main, cross-entropy, random init, binary, batch composition) must use
the `dataset` and `data_root` parameters; the binary task must take CIFAR-10's own pair (cat vs dog,
the paper's CIFAR-2) when `binary_classes` is not set; the prose names the data set from the data;
and the claims record rests on the runs of this cache only.
"""
from __future__ import annotations

import json
from pathlib import Path


from clmini.chapters.supcon_sincere import CONFUSABLE_PAIRS
from book_helpers import glued, run_on_tiny_cifar10

REPO = Path(__file__).resolve().parents[2]
CHAPTER = REPO / "notebooks" / "04_supcon_sincere.md"
# 5 x 200 = 1000 training and 200 test images (random labels): enough for class-balanced test
# batches of 20 images with 2 classes, the composition runs' smallest.
TINY_RUN = {"epochs": 1, "n_train": 200, "batch_size": 20, "eval_train_size": 200, "probe_iters": 5,
            "monitor_train_size": 100, "monitor_test_size": 50, "binary_n_train": None, "repulsion_batches": 1}


def test_chapter_4_runs_on_tiny_cifar10_files(tmp_path, monkeypatch):
    output, runs_dir = run_on_tiny_cifar10(CHAPTER, tmp_path, monkeypatch, 200, TINY_RUN)

    configs = [json.loads(p.read_text())["config"] for p in runs_dir.glob("*/config.json")]
    assert configs and {c["dataset"] for c in configs} == {"cifar10"}
    binary = [c for c in configs if c["classes"] is not None]
    assert binary and {tuple(c["classes"]) for c in binary} == {CONFUSABLE_PAIRS["cifar10"]}
    # read from data_root: the main runs were tested on the tiny files' 200 test images
    tested_on = {json.loads(p.read_text())["eval_test_size"] for p in runs_dir.glob("*/metrics.json")}
    assert 200 in tested_on and max(tested_on) == 200
    assert glued(output, "ch4_dataset_name") == "'CIFAR-10'"
    record = json.loads((runs_dir / "claims" / "smoke" / "04_supcon_sincere.json").read_text())
    hashes = {p.parent.name for p in runs_dir.glob("*/config.json")}
    assert record["claims"] and all(c["runs"] and set(c["runs"]) <= hashes for c in record["claims"])
    assert {c["section"] for c in record["claims"]} == {"ch4-accuracy", "ch4-separation", "ch4-binary"}
