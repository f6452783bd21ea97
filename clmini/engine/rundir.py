"""Run directories: ``<runs_dir>/<config hash>/``, written atomically, checked before reuse.

A run directory holds

- ``config.json``   the full config and its hash (written when the run starts);
- ``checkpoint.pt`` model, optimiser, position and history so far (while training; removed once
  the run is complete), with ``checkpoint.pt.sha256``, the digests it may have (no ``metrics.json``
  vouches for it, so it carries its own: a flipped bit must not pass as a resumable state);
- ``weights.pt``    the final model ``state_dict`` (loadable with ``weights_only=True``);
- ``history.json``  one record per epoch;
- ``metrics.json``  the final evaluation plus the SHA-256 of ``weights.pt`` and ``history.json``,
  written last: a run is complete exactly when ``metrics.json`` exists and every file matches it;
- ``measurements.json`` (optional, after the run) what the chapters measured on the trained network
  (:meth:`clmini.engine.runs.Run.measure`), so that a published record can carry it.

Every file is written to a temporary name, flushed to disk and renamed over the target, so a
process killed at any moment (``kill -9``) leaves either the old or the new file, never half of one.

Two kinds of failure: :class:`CorruptRun`, a run directory whose content cannot be trusted (the run
is redone), and :class:`RunDirError`, a run cache that cannot be used at all (not a directory,
read-only, disk full: redoing would not help, so it stops the command with one line).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import torch

CONFIG, CHECKPOINT, WEIGHTS, HISTORY, METRICS, MEASUREMENTS = (
    "config.json", "checkpoint.pt", "weights.pt", "history.json", "metrics.json", "measurements.json")
CHECKPOINT_DIGEST = CHECKPOINT + ".sha256"
CHECKPOINT_FILES = (CHECKPOINT, CHECKPOINT_DIGEST)
# Files whose digest metrics.json records (and that must match for the run to be reused).
_DIGESTED = (WEIGHTS, HISTORY)


class CorruptRun(Exception):
    """A run directory whose files are missing, unreadable, invalid or do not match each other."""


class RunDirError(OSError):
    """The run cache cannot be used (not a directory, read-only, disk full).

    Not the run's fault, so not repaired by redoing it: the message is one line naming the path
    and the cause, for the command line to print as it is.
    """

    def __init__(self, path: str | Path, cause: str, code: int | None = None):
        super().__init__(code, cause)
        self.path, self.cause = Path(path), cause

    def __str__(self) -> str:
        return f"cannot use the run cache at {self.path}: {self.cause}"

    @classmethod
    def wrap(cls, path: str | Path, action: str, err: OSError) -> "RunDirError":
        """``path``: what cannot be used; ``action``: what failed on it, ``err``: why."""
        return cls(path, f"{action} ({err.strerror or err})", err.errno)


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
    """Write ``data`` to ``path`` through a temporary file, ``fsync`` and ``rename``.

    A failed write (disk full, read-only) removes its temporary file, leaves ``path`` as it was
    and raises :class:`RunDirError`.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
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
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, RunDirError):
            raise RunDirError.wrap(path.parent, f"cannot write {path.name}", err) from err
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, allow_nan=True) + "\n").encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    """``torch.save`` through :func:`atomic_write_bytes`; a checkpoint's digest is recorded first.

    The record keeps the digest of the checkpoint it replaces too (when that one checks out), so a
    process killed between the two renames leaves an old checkpoint its record still accepts.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    if path.name == CHECKPOINT:
        kept = [digest for digest in (_vouched_digest(path),) if digest]
        atomic_write_bytes(_digest_path(path), "\n".join([_sha256(data), *kept]).encode() + b"\n")
    atomic_write_bytes(path, data)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _recorded_digests(path: Path) -> list[str]:
    """The digests ``path``'s record accepts (none if there is no readable record)."""
    try:
        return _digest_path(path).read_text().split()
    except (FileNotFoundError, IsADirectoryError, ValueError):
        return []


def _vouched_digest(path: Path) -> str | None:
    """The digest of the file at ``path`` if its record accepts it."""
    if not path.is_file():
        return None
    digest = sha256_file(path)
    return digest if digest in _recorded_digests(path) else None


def _read_bytes(path: Path) -> bytes:
    """A run file's content: missing -> :class:`CorruptRun`, not readable -> :class:`RunDirError`."""
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError) as err:
        raise CorruptRun(f"{path}: {err.strerror}") from None
    except OSError as err:
        raise RunDirError.wrap(path.parent, f"cannot read {path.name}", err) from err


def read_json(path: Path, kind: type | None = None) -> Any:
    """The JSON in ``path``, of type ``kind`` if given; anything else -> :class:`CorruptRun`."""
    try:
        value = json.loads(_read_bytes(path))
    except ValueError as err:  # not UTF-8, not JSON
        raise CorruptRun(f"{path}: {err}") from None
    if kind is not None and not isinstance(value, kind):
        raise CorruptRun(f"{path}: expected a JSON {kind.__name__}, got {type(value).__name__}")
    return value


def torch_load(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True`` (no pickled code runs); damage -> :class:`CorruptRun`.

    A checkpoint must match its recorded digest: torch reads a zip with a flipped bit in a tensor
    without complaint.
    """
    data = _read_bytes(path)
    if path.name == CHECKPOINT and _sha256(data) not in _recorded_digests(path):
        raise CorruptRun(f"{path}: does not match its recorded digest ({CHECKPOINT_DIGEST}): damaged, "
                         f"or written by an older engine")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, bad pickle opcode, ...: all mean "do not trust it"
        raise CorruptRun(f"{path}: {err}") from None


def _string_field(path: Path, document: dict, key: str) -> str:
    value = document.get(key)
    if not isinstance(value, str):
        raise CorruptRun(f"{path}: {key!r} must be a string, got {value!r}")
    return value


def verify_complete(run_dir: Path, expected_hash: str | None = None) -> dict:
    """The run's ``metrics.json`` if the run is complete and consistent, else :class:`CorruptRun`.

    Checks the shape of what it reads (types, not just values): a run directory is input that
    other engine versions, editors and disks may have changed.
    """
    if not (run_dir / METRICS).exists():
        raise CorruptRun(f"{run_dir}: no {METRICS} (the run has not finished)")
    metrics = read_json(run_dir / METRICS, dict)
    config = read_json(run_dir / CONFIG, dict)
    hashes = {_string_field(run_dir / METRICS, metrics, "config_hash"),
              _string_field(run_dir / CONFIG, config, "hash")}
    if len(hashes) != 1 or (expected_hash is not None and hashes != {expected_hash}):
        raise CorruptRun(f"{run_dir}: config hashes disagree ({sorted(hashes)}, expected {expected_hash})")
    recorded = metrics.get("sha256")
    if not isinstance(recorded, dict):
        raise CorruptRun(f"{run_dir / METRICS}: 'sha256' must map file names to digests, got {recorded!r}")
    for name in _DIGESTED:
        _string_field(run_dir / METRICS, recorded, name)
        path = run_dir / name
        if not path.is_file() or recorded[name] != sha256_file(path):
            raise CorruptRun(f"{run_dir}: {name} is missing or does not match its recorded digest")
    return metrics


def digests(run_dir: Path) -> dict[str, str]:
    return {name: sha256_file(run_dir / name) for name in _DIGESTED}


def make_run_dir(run_dir: Path) -> None:
    """Create ``run_dir`` (and the cache above it), or say in one line why the cache cannot be used."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # the cache is a file, read-only, ...
        raise RunDirError.wrap(run_dir.parent, f"cannot create {run_dir.name}", err) from err


def discard(run_dir: Path, names: tuple[str, ...], reason: str) -> None:
    """Remove ``names`` from ``run_dir`` (with a warning saying why)."""
    present = [n for n in names if (run_dir / n).exists()]
    if present:
        warnings.warn(f"{run_dir}: {reason}; discarding {', '.join(present)} and redoing", stacklevel=3)
        for name in present:
            try:
                (run_dir / name).unlink()
            except OSError as err:
                raise RunDirError.wrap(run_dir, f"cannot remove {name}", err) from err


@contextmanager
def locked(run_dir: Path):
    """An exclusive lock on ``run_dir`` so two processes never train the same run at once."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; atomic writes still keep files whole
        yield
        return
    try:
        handle = open(run_dir / ".lock", "w")
    except OSError as err:
        raise RunDirError.wrap(run_dir, "cannot take its lock to write the run", err) from err
    with handle:
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
