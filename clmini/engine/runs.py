"""The run cache: :func:`train_or_load` is the one entry point of training.

Published results come first: a config whose record is in one of the stores
(:mod:`clmini.engine.store`, ``$CLMINI_RESULTS``) is loaded from there, without weights.

A :class:`~clmini.engine.config.TrainConfig` hashes to ``<runs_dir>/<hash>/``
(:mod:`clmini.engine.rundir`); a complete run there is loaded, a partial one resumes from its last
checkpoint, a corrupt one (anything in it unreadable or invalid) is redone with a warning, and a
cache that cannot be used raises :class:`~clmini.engine.rundir.RunDirError`. Every objective (contrastive losses, the cross-entropy
baseline) goes through the same path.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from clmini.engine import distributed, rundir, store
from clmini.engine.config import ENGINE_VERSION, TrainConfig
from clmini.engine.data import ImageData, load_dataset
from clmini.engine.device import native_bf16, resolve_device
from clmini.engine.evaluation import evaluate_representation
from clmini.engine.models import ContrastiveNet, build_model
from clmini.engine.trainer import Trainer


class NoWeights(RuntimeError):
    """A published run (a record of the results store) has no network to give back."""


@dataclass
class Run:
    """A finished run: its directory (or, when published, its record), config, per-epoch history and
    final metrics; ``published`` is the record's provenance for a run loaded from a results store;
    ``measurements`` what :meth:`measure` has measured on its network (keyed by :func:`measurement_key`)."""

    dir: Path
    config: TrainConfig
    history: list[dict]
    metrics: dict
    published: dict | None = None
    measurements: dict = field(default_factory=dict)

    def model(self, device: str | torch.device = "cpu") -> ContrastiveNet:
        """The trained network (weights loaded with ``weights_only=True``); :class:`NoWeights` for a
        published run, whose record keeps no weights."""
        if self.published is not None:
            raise NoWeights(f"run {self.config.hash} was loaded from the published results ({self.dir}), which "
                            f"keep no weights; train it locally with train_or_load(config, stores=[])")
        state = rundir.torch_load(self.dir / rundir.WEIGHTS)
        channels = state["standardize.mean"].shape[1]
        model = build_model(self.config.arch, channels, [0.0] * channels, [1.0] * channels,
                            self.config.proj_dim, self.config.width)
        model.load_state_dict(state)  # also restores the standardisation buffers
        return model.to(resolve_device(device)).eval()

    def measure(self, name: str, fn: Callable[[ContrastiveNet], Any], *, device: str | torch.device = "cpu",
                **key: Any) -> Any:
        """``fn(network)`` for this run's trained network (in eval mode, on ``device``), as JSON values
        (:func:`jsonable`: arrays become nested lists), kept with the run so that its published
        record carries it: a figure drawn from a measurement renders from the results store.

        ``name`` and ``key`` (JSON values: everything the measurement depends on besides the weights
        and the run's config) identify it; give ``name`` a new version when what ``fn`` computes
        changes. A local run measures its network every time and keeps the latest value in its
        directory (``measurements.json``). A published run returns its record's value; if the
        record lacks it (a chapter asks for something that was not published), the run is trained
        locally (:func:`train_or_load` without stores) and measured, with a warning.
        """
        entry = measurement_key(name, key)
        if self.published is not None:
            if entry in self.measurements:
                return _ledger_measurement(self, entry, self.measurements[entry])
            warnings.warn(f"run {self.config.hash}: its published record has no measurement {entry}; "
                          f"training the run here to measure it", stacklevel=2)
            local = train_or_load(self.config, stores=[], progress=False)
            return local.measure(name, fn, device=device, **key)
        value = jsonable(fn(self.model(device)))  # JSON types already: what the record will read back
        self.measurements[entry] = value
        try:  # kept for publish; a read-only cache still measures, it only cannot keep the value
            with rundir.locked(self.dir):
                stored = _read_measurements(self.dir)
                stored[entry] = value
                rundir.atomic_write_json(self.dir / rundir.MEASUREMENTS, stored)
        except OSError:  # RunDirError included
            pass
        return _ledger_measurement(self, entry, value)


def measurement_key(name: str, key: dict) -> str:
    """The identity of a measurement: ``name`` followed by ``key`` as canonical JSON."""
    if not isinstance(name, str) or not name or any(c in name for c in "{}"):
        raise ValueError(f"measurement name must be a non-empty string without braces, got {name!r}")
    try:
        return name + json.dumps(jsonable(key), sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"measurement {name!r}: its key must hold JSON values ({err})") from None


#: Significant digits kept of each element of a floating-point array in a measurement (enough for
#: any figure; a whole array of full-precision decimals would make records needlessly large).
ARRAY_DIGITS = 7


def jsonable(value: Any) -> Any:
    """``value`` made of JSON types: tensors and arrays become nested lists (floating-point elements
    rounded to :data:`ARRAY_DIGITS` significant digits), numpy scalars Python numbers, tuples lists,
    mapping keys strings. Anything else raises ``TypeError`` naming its type."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f":
            rounded = np.array([float(f"{x:.{ARRAY_DIGITS}g}") for x in value.ravel().tolist()])
            return rounded.reshape(value.shape).tolist()
        if value.dtype.kind in "biu":
            return value.tolist()
        raise TypeError(f"cannot keep an array of dtype {value.dtype} in a measurement")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot keep a {type(value).__name__} in a measurement (use numbers, strings, "
                    f"lists, dicts, arrays or tensors)")


def _read_measurements(run_dir: Path) -> dict:
    """The run directory's measurements; an unreadable file is dropped (they are remeasured)."""
    try:
        return rundir.read_json(run_dir / rundir.MEASUREMENTS, dict)
    except (rundir.CorruptRun, OSError):
        return {}


def load_run(run_dir: str | Path, expected_hash: str | None = None) -> Run:
    """Load a complete run; :class:`clmini.engine.rundir.CorruptRun` if it is partial, damaged or
    invalid in any way. Reads only: a finished run loads from a read-only cache."""
    run_dir = Path(run_dir)
    metrics = rundir.verify_complete(run_dir, expected_hash)
    config = _stored_config(run_dir)
    if config.hash != metrics["config_hash"]:
        raise rundir.CorruptRun(f"{run_dir}: config.json does not hash to {metrics['config_hash']} "
                              f"(written by another engine version?)")
    history = rundir.read_json(run_dir / rundir.HISTORY, list)
    if not all(isinstance(record, dict) for record in history):
        raise rundir.CorruptRun(f"{run_dir / rundir.HISTORY}: expected one JSON object per epoch")
    measured = _read_measurements(run_dir) if (run_dir / rundir.MEASUREMENTS).exists() else {}
    return Run(run_dir, config, history, metrics, measurements=measured)


def _stored_config(run_dir: Path) -> TrainConfig:
    """The config in ``config.json``. One this engine cannot rebuild (another version's fields, an
    invalid value, no config at all) makes the run corrupt: it is not the caller's input."""
    path = run_dir / rundir.CONFIG
    stored = rundir.read_json(path, dict).get("config")
    if not isinstance(stored, dict):
        raise rundir.CorruptRun(f"{path}: 'config' must be a JSON object, got {stored!r}")
    try:
        return TrainConfig.from_dict(stored)
    except (ValueError, TypeError) as err:
        raise rundir.CorruptRun(f"{path}: {err}") from None


def load_published(path: str | Path) -> Run:
    """The run of a published record (:func:`clmini.engine.store.read_record`: stale -> StaleRecord)."""
    config, record = store.read_record(path)
    return Run(Path(path), config, record["history"], record["metrics"], published=record["provenance"],
               measurements=record["measurements"])


#: Environment variable: a file to which train_or_load appends one JSON line per run it returns
#: (hash, and "published", "cache" or "trained"), and Run.measure one per measurement (hash and
#: "measurement"): what a build or a publish used.
LEDGER_ENV = "CLMINI_LEDGER"


def _append_ledger(entry: dict) -> None:
    path = os.environ.get(LEDGER_ENV)
    if path:
        with open(path, "a") as f:  # one short line per write: appends from parallel processes do not mix
            f.write(json.dumps(entry) + "\n")


def _ledger(run: Run, source: str) -> Run:
    entry = {"hash": run.config.hash, "source": source}
    if run.published is not None:
        entry.update({k: run.published.get(k) for k in ("device_name", "precision", "finished")})
    _append_ledger(entry)
    return run


def _ledger_measurement(run: Run, entry: str, value: Any) -> Any:
    _append_ledger({"hash": run.config.hash, "measurement": entry})
    return value


def default_runs_dir() -> Path:
    """``$CLMINI_RUNS`` if set, else ``runs`` (relative to the working directory)."""
    return Path(os.environ.get("CLMINI_RUNS") or "runs")


def train_or_load(config: TrainConfig, runs_dir: str | Path | None = None, *, device: str | torch.device = "auto",
                  root: str | Path | None = None, download: bool = False, progress: bool = True,
                  checkpoint_every: float = 60.0, data: ImageData | None = None,
                  stores: Iterable[str | Path] | None = None) -> Run:
    """The run for ``config``: its published record if a store has a current one, else loaded from
    the run cache if complete, otherwise trained (resuming if possible).

    ``stores``: the results stores read first (default: :func:`clmini.engine.store.default_stores`,
    ``$CLMINI_RESULTS``; ``[]``: none). ``runs_dir``: the run cache (default: :func:`default_runs_dir`).
    ``checkpoint_every``: seconds between mid-epoch checkpoints (every epoch end is one too).
    ``data``: an already loaded data set to use instead of loading ``config.dataset`` (it must
    be that data set, whole: the ``n_train`` subset is taken here).
    """
    found = store.find(config, store.default_stores() if stores is None else stores)
    if found is not None:
        return _ledger(load_published(found), "published")
    run_dir = Path(runs_dir or default_runs_dir()) / config.hash
    if distributed.world_size() > 1:
        return _train_or_load_parallel(config, run_dir, device=device, root=root, download=download,
                                       progress=progress, checkpoint_every=checkpoint_every, data=data)
    try:  # a finished run needs no lock (its files only ever appear whole): a read-only cache works
        return _ledger(load_run(run_dir, config.hash), "cache")
    except rundir.CorruptRun:
        pass  # checked again under the lock, where it is repaired
    rundir.make_run_dir(run_dir)
    with rundir.locked(run_dir):
        finished = _finished_or_cleared(run_dir, config)
        if finished is not None:
            return _ledger(finished, "cache")
        device = _start(config, run_dir, device)
        data = _data(config, data, root, download, device)
        trainer = _resume(lambda: Trainer(config, data, device), run_dir)
        trainer.fit(lambda: rundir.atomic_torch_save(run_dir / rundir.CHECKPOINT, trainer.state_dict()),
                    rundir.periodic(checkpoint_every, time.monotonic), progress)
        _finish(trainer, run_dir, device)
    return _ledger(load_run(run_dir, config.hash), "trained")


def _finished_or_cleared(run_dir: Path, config: TrainConfig) -> Run | None:
    """Under the run's lock: the finished run, else None, the files of a corrupt finished one discarded."""
    try:
        return load_run(run_dir, config.hash)
    except rundir.CorruptRun as err:
        if (run_dir / rundir.METRICS).exists():
            rundir.discard(run_dir, (rundir.METRICS, rundir.WEIGHTS, rundir.HISTORY), str(err))
        return None


def _start(config: TrainConfig, run_dir: Path, device) -> torch.device:
    """The run's device, its config written into the run directory (by the caller, which holds the lock)."""
    device = resolve_device(device)
    if config.precision == "bf16" and not native_bf16(device):
        warnings.warn(f"run {config.hash} computes in bf16 (its config says so) but {device} has no "
                      f"native bf16: expect it to be slower than fp32", stacklevel=3)
    rundir.atomic_write_json(run_dir / rundir.CONFIG, {"hash": config.hash, "engine_version": ENGINE_VERSION,
                                                   "config": config.to_dict()})
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels
    return device


def _data(config: TrainConfig, data: ImageData | None, root, download: bool, device: torch.device) -> ImageData:
    if data is None:
        data = load_dataset(config.dataset, root, download=download, device=device)
    elif data.name != config.dataset:
        raise ValueError(f"data is {data.name!r} but the config says {config.dataset!r}")
    return data.to(device)


def _train_or_load_parallel(config: TrainConfig, run_dir: Path, *, device, root, download: bool, progress: bool,
                            checkpoint_every: float, data: ImageData | None) -> Run:
    """:func:`train_or_load` in one of several processes (torchrun). Process 0 owns the run directory:
    it holds the lock, decides whether the run is finished or resumable, writes every checkpoint
    and the results; the others train beside it from the same state and read the finished run."""
    leader = distributed.rank() == 0
    with contextlib.ExitStack() as stack:
        finished = None
        if leader:  # a finished run needs no lock; otherwise it is checked again under the lock, which
            try:    # process 0 then keeps while the run trains
                finished = load_run(run_dir, config.hash)
            except rundir.CorruptRun:
                rundir.make_run_dir(run_dir)
                stack.enter_context(rundir.locked(run_dir))
                finished = _finished_or_cleared(run_dir, config)
        if distributed.broadcast(finished is not None):
            return _ledger(load_run(run_dir, config.hash), "cache")
        device = distributed.local_device(resolve_device(device))
        state = None
        data = _data(config, data, root, download, device)
        if leader:
            _start(config, run_dir, device)
            if (run_dir / rundir.CHECKPOINT).exists():  # checked on a trainer of this process alone
                state = _resume(lambda: Trainer(config, data, device, parallel=False), run_dir).state_dict()
        trainer = Trainer(config, data, device)
        state = distributed.broadcast(state)  # the leader's checked checkpoint, or None: start
        if state is not None:
            trainer.load_state_dict(state)
        trainer.fit(lambda: rundir.atomic_torch_save(run_dir / rundir.CHECKPOINT, trainer.state_dict()) if leader
                    else None, rundir.periodic(checkpoint_every, time.monotonic), progress and leader)
        if leader:
            _finish(trainer, run_dir, device)
        distributed.barrier()
    return _ledger(load_run(run_dir, config.hash), "trained")


def _resume(new_trainer: Callable[[], Trainer], run_dir: Path) -> Trainer:
    """A trainer at the run's checkpoint, or at the start if there is none or it fails any check.

    A discarded checkpoint leaves no trace: whatever a failed load had applied goes with the
    trainer it was applied to.
    """
    trainer = new_trainer()
    path = run_dir / rundir.CHECKPOINT
    if not path.exists():
        return trainer
    try:
        trainer.load_state_dict(rundir.torch_load(path))
        return trainer
    except rundir.CorruptRun as err:
        rundir.discard(run_dir, rundir.CHECKPOINT_FILES, f"unusable checkpoint ({err})")
        return new_trainer()


def _finish(trainer: Trainer, run_dir: Path, device: torch.device) -> None:
    """Evaluate, write weights, history and (last) metrics; drop the checkpoint."""
    config = trainer.config
    start = time.perf_counter()
    metrics = evaluate_representation(
        trainer.model, trainer.data, knn_k=config.knn_k, eval_train_size=config.eval_train_size,
        probe_iters=config.probe_iters, augment_config=config.augment, precision=config.precision)
    metrics.update(trainer.objective.final_metrics(trainer.model, trainer.data))
    rundir.atomic_torch_save(run_dir / rundir.WEIGHTS, trainer.model.state_dict())
    rundir.atomic_write_json(run_dir / rundir.HISTORY, trainer.history)
    metrics.update(
        config_hash=config.hash, engine_version=ENGINE_VERSION, precision=config.precision,
        final_loss=trainer.history[-1].get("loss"), epochs_trained=trainer.epoch,
        steps_per_epoch=trainer.steps_per_epoch, device=str(device), world_size=trainer.world,
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        torch_version=torch.__version__, train_seconds=trainer.train_seconds,
        eval_seconds=time.perf_counter() - start, sha256=rundir.digests(run_dir))
    rundir.atomic_write_json(run_dir / rundir.METRICS, metrics)
    for name in rundir.CHECKPOINT_FILES:  # the checkpoint first: never one without its digests
        (run_dir / name).unlink(missing_ok=True)
