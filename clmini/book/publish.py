"""Published results of a profile: build from them, publish them, verify them.

The book keeps one results store per profile, ``results/<profile>/`` under the book root
(:mod:`clmini.engine.store`: a compact record per run, no weights). :func:`published_results` makes a
book build read that store before the run cache and tells afterwards where every run came from.
:func:`publish` runs a profile's chapters and writes the records of every run they used;
:func:`verify` retrains a sample of records and compares the numbers.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import random
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Iterator

from clmini.book.errors import NotebookError, ParameterError
from clmini.book.runner import run_chapters
from clmini.engine import default_runs_dir, load_run, train_or_load
from clmini.engine.runs import LEDGER_ENV, load_published
from clmini.engine.store import STORES_ENV, StaleRecord, write_record

RESULTS_DIR = "results"
#: What must be committed before publishing: the code and the chapters that computed the numbers.
PUBLISHED_SOURCES = ("clmini", "notebooks", "pyproject.toml", "requirements.txt")
#: verify: metrics compared, and the tolerance when the run was published from another device,
#: precision or torch (on the same ones the CPU engine is deterministic: the numbers must be equal).
VERIFIED_METRICS = ("knn_acc", "linear_probe_acc", "uniformity", "tolerance", "alignment", "pos_sim", "neg_sim")
CROSS_DEVICE_TOLERANCE = 0.02


def results_store(root: str | Path, profile: str) -> Path:
    return Path(root) / RESULTS_DIR / profile


def _ledger_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def read_ledger(path: Path) -> list[dict]:
    """The ledger's runs, each once (its first appearance)."""
    seen, entries = set(), []
    for entry in _ledger_lines(path):
        if "source" in entry and entry["hash"] not in seen:
            seen.add(entry["hash"])
            entries.append(entry)
    return entries


def ledger_measurements(path: Path) -> dict[str, set[str]]:
    """The measurements the ledger lists, by run hash."""
    measured: dict[str, set[str]] = {}
    for entry in _ledger_lines(path):
        if "measurement" in entry:
            measured.setdefault(entry["hash"], set()).add(entry["measurement"])
    return measured


def ledger_summary(entries: list[dict], store: Path | None) -> str:
    """One sentence: how many runs came from the published results (with their devices and dates),
    how many from the local run cache, how many were trained here."""
    counts = Counter(entry["source"] for entry in entries)
    published = [e for e in entries if e["source"] == "published"]
    parts = []
    if published:
        devices = sorted({f"{e.get('device_name')} ({e.get('precision')})" for e in published})
        dates = sorted(str(e.get("finished", ""))[:10] for e in published)
        parts.append(f"{len(published)} loaded from the published results in {store} "
                     f"(trained on {', '.join(devices)}, {dates[0]} to {dates[-1]})")
    parts.append(f"{counts['cache']} loaded from the local run cache")
    parts.append(f"{counts['trained']} trained on this machine")
    return f"{len(entries)} run{'' if len(entries) == 1 else 's'}: " + ", ".join(parts) + "."


def this_build(entries: list[dict], profile: str, day: datetime.date | None = None) -> str:
    """The book's sentence on where a build's runs came from: its profile, the day it ran, and
    :func:`ledger_summary` (the store named relative to the book root)."""
    return (f"**This build** (profile `{profile}`, run on {(day or datetime.date.today()).isoformat()}): "
            f"{ledger_summary(entries, results_store(Path(), profile))}")


@contextlib.contextmanager
def published_results(root: str | Path, profile: str, use_store: bool = True) -> Iterator[Path]:
    """Within the block, chapters read ``results/<profile>/`` first (unless ``use_store`` is False or
    ``$CLMINI_RESULTS`` is set already) and log every run they use; yields the ledger file."""
    store = results_store(root, profile)
    saved = {name: os.environ.get(name) for name in (STORES_ENV, LEDGER_ENV)}
    with tempfile.TemporaryDirectory(prefix="clmini-ledger-") as tmp:
        ledger = Path(tmp) / "ledger.jsonl"
        os.environ[LEDGER_ENV] = str(ledger)
        if not use_store:
            os.environ[STORES_ENV] = ""
        elif saved[STORES_ENV] is None and store.is_dir():
            os.environ[STORES_ENV] = str(store)
        try:
            yield ledger
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def committed_revision(root: Path) -> str:
    """The commit of ``root``'s working tree; :class:`ParameterError` if the package or the chapters
    have uncommitted changes (the records would describe code no one can check out)."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        if done.returncode != 0:
            raise ParameterError(f"publish needs a git checkout of the book ({root}): git {' '.join(args)}: "
                                 f"{done.stderr.strip()}")
        return done.stdout
    changed = git("status", "--porcelain", "--", *PUBLISHED_SOURCES).strip()
    if changed:
        raise ParameterError("publish refuses a working tree with uncommitted changes to the code or the "
                             "chapters; commit them first:\n" + changed)
    return git("rev-parse", "HEAD").strip()


def publish(root: str | Path, profile: str) -> Path:
    """Run ``profile``'s chapters (training what the local run cache lacks; a killed publish resumes
    from the cache) and write the record of every run they used into ``results/<profile>/``; records
    of runs no chapter uses any more are removed. Returns the store."""
    root = Path(root)
    commit = committed_revision(root)
    store = results_store(root, profile)
    with published_results(root, profile, use_store=False) as ledger:
        run_chapters(root, profile)
        entries, measured = read_ledger(ledger), ledger_measurements(ledger)
    if not entries:
        raise NotebookError(f"profile {profile}: the chapters used no run, nothing to publish")
    cache = root / default_runs_dir()  # the chapters' run cache: they run with the book root as cwd
    written = {write_record(store, load_run(cache / e["hash"], e["hash"]), commit,
                            measured.get(e["hash"], ())).name for e in entries}
    removed = [p for p in store.glob("*.json") if p.name not in written]
    for path in removed:
        path.unlink()
    print(f"published {len(written)} records into {store} (commit {commit[:12]})"
          + (f"; removed {len(removed)} that no chapter uses" if removed else ""))
    return store


def verify(root: str | Path, profile: str, sample: int = 3, seed: int | None = None,
           runs_dir: str | Path | None = None) -> list[str]:
    """Retrain ``sample`` records of ``results/<profile>/`` drawn at random (``seed``) into
    ``runs_dir`` (default: a temporary directory) and compare their metrics with the published ones.

    Equal when device, precision and torch match the record's (the CPU engine is deterministic);
    within :data:`CROSS_DEVICE_TOLERANCE` otherwise. Returns the mismatches (empty: verified).
    """
    store = results_store(root, profile)
    paths = sorted(store.glob("*.json"))
    if not paths:
        raise ParameterError(f"no published records in {store}")
    chosen = random.Random(seed).sample(paths, min(sample, len(paths)))
    problems = []
    with contextlib.ExitStack() as stack:
        cache = Path(runs_dir) if runs_dir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        for path in chosen:
            try:
                published = load_published(path)
            except StaleRecord as err:
                problems.append(str(err))
                continue
            local = train_or_load(published.config, cache, stores=[], progress=False)
            same = all(local.metrics.get(k) == published.published.get(k)
                       for k in ("device", "precision", "torch_version"))
            tolerance = 0.0 if same else CROSS_DEVICE_TOLERANCE
            for name in VERIFIED_METRICS:
                mine, theirs = local.metrics.get(name), published.metrics.get(name)
                if mine is None or theirs is None:
                    continue
                if not math.isclose(mine, theirs, rel_tol=0, abs_tol=tolerance):
                    problems.append(f"{path.name}: {name} published {theirs:.6g}, retrained here {mine:.6g} "
                                    f"(tolerance {tolerance:g})")
            print(f"  {path.name}: {'equal' if same else f'within {tolerance:g}'} check, "
                  f"{sum(p.startswith(path.name) for p in problems)} mismatch(es)", flush=True)
    return problems


__all__ = ["RESULTS_DIR", "results_store", "published_results", "read_ledger", "ledger_measurements", "ledger_summary",
           "committed_revision", "publish", "verify"]
