"""clmini sweep: workers sharing one run cache claim runs through locks: every run is trained exactly
once, whatever the number of workers, and a killed worker's run is resumed by another."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from clmini.engine import rundir
from clmini.engine.sweep import claimed
from engine_helpers import write_fashion_mnist

REPO = Path(__file__).resolve().parents[2]
TINY = ["--n-train", "96", "--width", "4", "--proj-dim", "16", "--batch-size", "24", "--monitor-train-size", "64",
        "--monitor-test-size", "32", "--knn-k", "20", "--probe-iters", "20", "--device", "cpu", "--no-progress"]


def clmini(tmp: Path, *args: str, ledger: Path, wait: bool = True):
    env = {**os.environ, "CLMINI_LEDGER": str(ledger), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "clmini", "sweep", *TINY, "--root", str(tmp / "data"), "--runs-dir",
               str(tmp / "runs"), *args]
    if not wait:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def trained(ledger: Path) -> Counter:
    return Counter(json.loads(line)["hash"] for line in ledger.read_text().splitlines()
                   if json.loads(line).get("source") == "trained")


def test_two_workers_train_every_run_once(tmp_path):
    write_fashion_mnist(tmp_path / "data", n_train=120, n_test=40)
    ledger = tmp_path / "ledger.jsonl"
    done = clmini(tmp_path, "--workers", "2", "--epochs", "1", "--grid", "temperature=0.1,0.5",
                  "--grid", "seed=0,1,2", ledger=ledger)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sweep: 6 runs, 2 worker(s)" in done.stdout
    counts = trained(ledger)
    assert len(counts) == 6 and set(counts.values()) == {1}, counts  # each run once, by one worker
    for key in counts:
        rundir.verify_complete(tmp_path / "runs" / key, key)
    again = clmini(tmp_path, "--workers", "2", "--epochs", "1", "--grid", "temperature=0.1,0.5",
                   "--grid", "seed=0,1,2", ledger=tmp_path / "again.jsonl")
    assert again.returncode == 0 and "sweep: 0 trained" in again.stdout


def test_a_killed_workers_run_is_resumed_by_another(tmp_path):
    write_fashion_mnist(tmp_path / "data", n_train=600, n_test=40)
    ledger = tmp_path / "ledger.jsonl"
    args = ["--epochs", "3", "--n-train", "480", "--grid", "seed=0,1", "--checkpoint-every", "0"]
    first = clmini(tmp_path, *args, ledger=ledger, wait=False)
    deadline = time.time() + 300
    while not list((tmp_path / "runs").glob("*/checkpoint.pt")) and time.time() < deadline and first.poll() is None:
        time.sleep(0.1)
    os.kill(first.pid, signal.SIGKILL)
    first.communicate()
    [checkpoint] = list((tmp_path / "runs").glob("*/checkpoint.pt"))
    held = checkpoint.parent
    with claimed(held) as mine:
        assert mine, "a killed worker's claim is released with it"
    second = clmini(tmp_path, *args, ledger=ledger)
    assert second.returncode == 0, second.stderr[-3000:]
    counts = trained(ledger)
    assert held.name in counts and len(counts) == 2 and set(counts.values()) == {1}
    assert not (held / "checkpoint.pt").exists() and (held / "metrics.json").exists()


def test_a_claimed_run_is_left_to_its_holder(tmp_path):
    run_dir = tmp_path / "runs" / "abc"
    with claimed(run_dir) as first:
        code = ("import sys; from pathlib import Path; from clmini.engine.sweep import claimed\n"
                f"with claimed(Path({str(run_dir)!r})) as mine: sys.exit(0 if not mine else 1)")
        assert first and subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_bad_grid_is_refused_by_name(tmp_path):
    done = clmini(tmp_path, "--grid", "temperature", ledger=tmp_path / "l.jsonl")
    assert done.returncode == 2 and "--grid 'temperature': expected NAME=V1,V2" in done.stderr
    with pytest.raises(ValueError, match="workers must be"):
        from clmini.engine.sweep import sweep
        sweep([], workers=0)
