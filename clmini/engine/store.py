"""Published results: one compact record per run, read before the run cache.

A *store* is a directory of records, ``<store>/<config hash>.json`` (the book keeps one per profile
in ``results/<profile>/``). A record holds what the chapters read from a run — its config and hash,
the final metrics, the per-epoch history, the measurements the chapters took of its network
(:meth:`clmini.engine.runs.Run.measure`: the small arrays their figures draw) — and its provenance: engine and torch versions, device,
precision, training and evaluation seconds, the date the run finished and the commit it was
published from. It never holds weights, so a published run cannot give back its network
(:meth:`clmini.engine.runs.Run.model` says so and how to train it locally).

A record is *stale* when the current code no longer produces its hash from its config (another
``ENGINE_VERSION``, a changed config field or default): :func:`read_record` refuses it with
:class:`StaleRecord`, naming why, and :func:`find` then falls back to training. Published numbers
never outlive the code that computed them.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

from clmini.engine import rundir
from clmini.engine.config import ENGINE_VERSION, TrainConfig

#: The version of the record format (not of the engine, whose version is in the hash).
RECORD_VERSION = 1
#: Provenance fields copied from a run's ``metrics.json`` into its record.
PROVENANCE = ("engine_version", "torch_version", "device", "device_name", "precision", "train_seconds",
              "eval_seconds")
#: Metrics that describe files of the run directory, not the run: left out of a record.
_LOCAL_ONLY = ("sha256",)
#: Environment variable naming the stores train_or_load reads first (``os.pathsep``-separated).
STORES_ENV = "CLMINI_RESULTS"


class StaleRecord(Exception):
    """A record that the current code would not produce: unreadable, malformed, or computed for
    another engine version or config definition."""


def record_path(store: str | Path, config_hash: str) -> Path:
    return Path(store) / f"{config_hash}.json"


def default_stores() -> list[Path]:
    """The stores named by ``$CLMINI_RESULTS`` (none when unset)."""
    return [Path(p) for p in os.environ.get(STORES_ENV, "").split(os.pathsep) if p]


def make_record(run, commit: str | None, measured: Iterable[str] = ()) -> dict:
    """The record of a complete local run (a :class:`clmini.engine.runs.Run` with its directory),
    with its measurements named in ``measured`` (keys of ``run.measurements``)."""
    missing = sorted(set(measured) - set(run.measurements))
    if missing:
        raise KeyError(f"run {run.config.hash} has no measurement {missing[0]} to publish")
    metrics = {k: v for k, v in run.metrics.items() if k not in _LOCAL_ONLY}
    finished = (Path(run.dir) / rundir.METRICS).stat().st_mtime
    provenance = {k: run.metrics.get(k) for k in PROVENANCE}
    provenance.update(
        wall_seconds=(run.metrics.get("train_seconds") or 0.0) + (run.metrics.get("eval_seconds") or 0.0),
        finished=_dt.datetime.fromtimestamp(finished, _dt.timezone.utc).isoformat(timespec="seconds"),
        commit=commit)
    return {"record_version": RECORD_VERSION, "hash": run.config.hash, "engine_version": ENGINE_VERSION,
            "config": run.config.to_dict(), "metrics": metrics, "history": run.history,
            "measurements": {key: run.measurements[key] for key in sorted(set(measured))}, "provenance": provenance}


def write_record(store: str | Path, run, commit: str | None, measured: Iterable[str] = ()) -> Path:
    """Write (atomically) the record of ``run`` (with the measurements ``measured``) into ``store``;
    returns its path."""
    path = record_path(store, run.config.hash)
    rundir.make_run_dir(path.parent)
    record = make_record(run, commit, measured)
    rundir.atomic_write_bytes(path, (json.dumps(record, indent=None, separators=(",", ":"), allow_nan=True)
                                     + "\n").encode())
    return path


def read_record(path: str | Path) -> tuple[TrainConfig, dict]:
    """The config and the record in ``path``, checked against the current code; :class:`StaleRecord`
    (naming the file and why) for anything the current code would not have written."""
    path = Path(path)
    try:
        record = rundir.read_json(path, dict)
    except (rundir.CorruptRun, OSError) as err:
        raise StaleRecord(f"{path}: unreadable ({err})") from None
    if record.get("record_version") != RECORD_VERSION:
        raise StaleRecord(f"{path}: record format {record.get('record_version')!r}, this code reads {RECORD_VERSION}")
    if record.get("engine_version") != ENGINE_VERSION:
        raise StaleRecord(f"{path}: computed by engine version {record.get('engine_version')!r}, this code is "
                          f"version {ENGINE_VERSION}")
    for key, kind in (("config", dict), ("metrics", dict), ("history", list), ("measurements", dict),
                      ("provenance", dict), ("hash", str)):
        if not isinstance(record.get(key), kind):
            raise StaleRecord(f"{path}: {key!r} must be a JSON {kind.__name__}")
    try:
        config = TrainConfig.from_dict(record["config"])
    except (ValueError, TypeError) as err:
        raise StaleRecord(f"{path}: its config is not valid for this code ({err})") from None
    if config.hash != record["hash"] or path.stem != record["hash"]:
        raise StaleRecord(f"{path}: its config hashes to {config.hash} under this code, the record says "
                          f"{record['hash']} (a config field or default changed since it was published)")
    if not all(isinstance(epoch, dict) for epoch in record["history"]):
        raise StaleRecord(f"{path}: 'history' must hold one JSON object per epoch")
    return config, record


def find(config: TrainConfig, stores: Iterable[str | Path]) -> Path | None:
    """The path of the first current record of ``config`` in ``stores``, or None. A stale record is
    skipped (the run is then trained as if it had never been published)."""
    for store in stores:
        path = record_path(store, config.hash)
        if not path.is_file():
            continue
        try:
            found, record = read_record(path)
        except StaleRecord:
            continue
        if found == config:
            return path
    return None


def stale_records(stores: Sequence[str | Path]) -> list[str]:
    """Why each record of ``stores`` is stale (empty when every record is current)."""
    problems = []
    for store in stores:
        for path in sorted(Path(store).glob("*.json")):
            try:
                read_record(path)
            except StaleRecord as err:
                problems.append(str(err))
    return problems
