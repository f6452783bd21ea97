"""Run directories: ``<runs_dir>/<config hash>/``, written atomically, checked before reuse.

A run directory holds

- ``config.json``   the full config and its hash (written when the run starts);
- ``checkpoint.pt`` model, optimiser, position and history so far (while training; removed once
  the run is complete);
- ``weights.pt``    the final model ``state_dict`` (loadable with ``weights_only=True``);
- ``history.json``  one record per epoch;
- ``metrics.json``  the final evaluation plus the SHA-256 of ``weights.pt`` and ``history.json``,
  written last: a run is complete exactly when ``metrics.json`` exists and every file matches it.

Every file is written to a temporary name, flushed to disk and renamed over the target, so a
process killed at any moment (``kill -9``) leaves either the old or the new file, never half of one.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import torch

CONFIG, CHECKPOINT, WEIGHTS, HISTORY, METRICS = (
    "config.json", "checkpoint.pt", "weights.pt", "history.json", "metrics.json")
# Files whose digest metrics.json records (and that must match for the run to be reused).
_DIGESTED = (WEIGHTS, HISTORY)


class CorruptRun(Exception):
    """A run directory whose files are missing, unreadable or do not match each other."""


def config_hash(payload: dict) -> str:
    """16 hex digits of SHA-256 over the canonical JSON of ``payload``."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, ``fsync`` and ``rename``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    # The rename itself must reach the disk too, or a crash could leave neither name.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, allow_nan=True) + "\n").encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CorruptRun(f"{path}: {err}") from None


def torch_load(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True`` (no pickled code runs); damage -> :class:`CorruptRun`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, bad pickle opcode, ...: all mean "do not trust it"
        raise CorruptRun(f"{path}: {err}") from None


def verify_complete(run_dir: Path, expected_hash: str | None = None) -> dict:
    """The run's ``metrics.json`` if the run is complete and consistent, else :class:`CorruptRun`."""
    if not (run_dir / METRICS).exists():
        raise CorruptRun(f"{run_dir}: no {METRICS} (the run has not finished)")
    metrics = read_json(run_dir / METRICS)
    config = read_json(run_dir / CONFIG)
    if not isinstance(metrics, dict) or not isinstance(config, dict):
        raise CorruptRun(f"{run_dir}: {METRICS} or {CONFIG} is not a JSON object")
    hashes = {metrics.get("config_hash"), config.get("hash")}
    if len(hashes) != 1 or (expected_hash is not None and hashes != {expected_hash}):
        raise CorruptRun(f"{run_dir}: config hashes disagree ({sorted(map(str, hashes))}, "
                         f"expected {expected_hash})")
    digests = metrics.get("sha256", {})
    for name in _DIGESTED:
        path = run_dir / name
        if not path.exists() or digests.get(name) != sha256_file(path):
            raise CorruptRun(f"{run_dir}: {name} is missing or does not match its recorded digest")
    return metrics


def digests(run_dir: Path) -> dict[str, str]:
    return {name: sha256_file(run_dir / name) for name in _DIGESTED}


def discard(run_dir: Path, names: tuple[str, ...], reason: str) -> None:
    """Remove ``names`` from ``run_dir`` (with a warning saying why)."""
    present = [n for n in names if (run_dir / n).exists()]
    if present:
        warnings.warn(f"{run_dir}: {reason}; discarding {', '.join(present)} and redoing", stacklevel=3)
        for name in present:
            (run_dir / name).unlink()


@contextmanager
def locked(run_dir: Path):
    """An exclusive lock on ``run_dir`` so two processes never train the same run at once."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; atomic writes still keep files whole
        yield
        return
    with open(run_dir / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def periodic(every_seconds: float, clock: Callable[[], float]) -> Callable[[], bool]:
    """A predicate that is true once every ``every_seconds`` (always true for 0)."""
    last = [clock()]

    def due() -> bool:
        now = clock()
        if now - last[0] >= every_seconds:
            last[0] = now
            return True
        return False

    return due
