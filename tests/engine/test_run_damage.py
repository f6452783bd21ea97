"""Damaged runs and unusable run caches (issue 12): every damage is detected and repaired by redoing
the run, every cache problem is one clear error, and a diverging run says so."""
from __future__ import annotations

import builtins
import errno
import json
import os
import re
from pathlib import Path

import pytest
import torch

from clmini.engine import rundir as runs
from clmini.engine.config import TrainConfig
from clmini.engine.runs import load_run, train_or_load
from engine_helpers import StepCounter, killed_at_checkpoint, pattern_data

TIMING = ("train_seconds", "eval_seconds")


def tiny(**overrides) -> TrainConfig:
    """A config that trains in about a second on the CPU (4 steps per epoch)."""
    values = dict(n_train=None, width=4, proj_dim=16, epochs=2, batch_size=32, lr=3e-3,
                  monitor_train_size=64, monitor_test_size=32, knn_k=20, probe_iters=20)
    return TrainConfig(**{**values, **overrides})


def comparable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING}


@pytest.fixture(scope="module")
def data():
    return pattern_data(n_train=128, n_test=64)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """``tiny()`` trained without interruption."""
    return train_or_load(tiny(), tmp_path_factory.mktemp("reference"), device="cpu", data=data, progress=False)


def train(runs_dir: Path, data, config: TrainConfig | None = None, **kwargs):
    return train_or_load(config or tiny(), runs_dir, device="cpu", data=data, progress=False, **kwargs)


def killed_run(runs_dir: Path, data, monkeypatch, n: int = 6) -> Path:
    """The directory of ``tiny()`` killed right after its ``n``-th checkpoint (6th: epoch 2, step 2)."""
    with killed_at_checkpoint(monkeypatch, n):
        train(runs_dir, data, checkpoint_every=0)
    return runs_dir / tiny().hash


def assert_redone_from_scratch(runs_dir: Path, data, monkeypatch, reference, match: str):
    counter = StepCounter(monkeypatch)
    with pytest.warns(UserWarning, match=match):
        redone = train(runs_dir, data)
    assert counter.steps == 2 * 4
    assert redone.history == reference.history
    assert comparable(redone.metrics) == comparable(reference.metrics)


# -- damaged checkpoints -----------------------------------------------------------------------

def test_a_checkpoint_without_optimizer_leaves_no_trace(tmp_path, data, monkeypatch, reference):
    checkpoint = killed_run(tmp_path, data, monkeypatch) / runs.CHECKPOINT
    state = runs.torch_load(checkpoint)
    del state["optimizer"]
    runs.atomic_torch_save(checkpoint, state)  # a whole file, its digest recorded: only the content is wrong
    assert_redone_from_scratch(tmp_path, data, monkeypatch, reference, r"unusable checkpoint .*'optimizer'")


def test_a_flipped_bit_in_a_checkpoint_is_detected(tmp_path, data, monkeypatch, reference):
    checkpoint = killed_run(tmp_path, data, monkeypatch) / runs.CHECKPOINT
    raw = bytearray(checkpoint.read_bytes())
    weight = next(iter(runs.torch_load(checkpoint)["model"].values()))
    at = raw.find(weight.numpy().tobytes())
    assert at > 0
    raw[at + 2] ^= 0x10  # in a stored tensor: torch still loads the file
    checkpoint.write_bytes(bytes(raw))
    torch.load(checkpoint, weights_only=True)
    assert_redone_from_scratch(tmp_path, data, monkeypatch, reference, r"unusable checkpoint .*digest")


def test_killed_between_digest_and_checkpoint_resumes_from_the_previous_one(tmp_path, data, monkeypatch,
                                                                           reference):
    original, saves = runs.atomic_write_bytes, []

    def die_before_the_6th_checkpoint(path, payload):
        if path.name == runs.CHECKPOINT:
            saves.append(path)
            if len(saves) == 6:
                raise KeyboardInterrupt  # its digest is recorded, the file not replaced yet
        original(path, payload)

    monkeypatch.setattr(runs, "atomic_write_bytes", die_before_the_6th_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, data, checkpoint_every=0)
    monkeypatch.setattr(runs, "atomic_write_bytes", original)
    counter = StepCounter(monkeypatch)
    resumed = train(tmp_path, data)
    assert counter.steps == 2 * 4 - 5  # from the 5th checkpoint: epoch 2, step 1
    assert comparable(resumed.metrics) == comparable(reference.metrics)


# -- invalid files of a finished run -----------------------------------------------------------

def _edit(path: Path, change) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


DAMAGE = {
    "unknown config field": (runs.CONFIG, lambda d: d["config"].update(added_by_engine_9=1)),
    "invalid config value": (runs.CONFIG, lambda d: d["config"].update(lr=-1)),
    "null config": (runs.CONFIG, lambda d: d.update(config=None)),
    "digests as a list": (runs.METRICS, lambda d: d.update(sha256=list(d["sha256"].values()))),
    "digests null": (runs.METRICS, lambda d: d.update(sha256=None)),
    "config hash not a string": (runs.METRICS, lambda d: d.update(config_hash=[d["config_hash"]])),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_an_invalid_run_file_is_a_corrupt_run_and_redone(tmp_path, data, monkeypatch, reference, damage):
    run = train(tmp_path, data)
    name, change = DAMAGE[damage]
    _edit(run.dir / name, change)
    with pytest.raises(runs.CorruptRun):
        load_run(run.dir)
    assert_redone_from_scratch(tmp_path, data, monkeypatch, reference, f"{tiny().hash}: .*redoing")


# -- unusable run caches -----------------------------------------------------------------------

def test_a_runs_dir_that_is_a_file_is_a_clear_error(tmp_path, data):
    cache = tmp_path / "runs"
    cache.write_text("not a directory")
    with pytest.raises(runs.RunDirError, match=re.escape(f"cannot use the run cache at {cache}: cannot create "
                                                         f"{tiny().hash} (Not a directory)")):
        train(cache, data)


def _under(root: Path, file) -> bool:
    return isinstance(file, (str, os.PathLike)) and Path(os.path.abspath(file)).is_relative_to(root)


def _denied(file):
    return PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))


@pytest.fixture
def read_only(monkeypatch):
    """Makes a directory tree read-only: by ``chmod``, and where that does not restrict this user
    (root), by refusing every write under it in ``open``, ``os.open`` and ``Path``."""
    made = []

    def make(root: Path) -> None:
        for directory, _, files in os.walk(root):
            for file in files:
                os.chmod(os.path.join(directory, file), 0o444)
            os.chmod(directory, 0o555)
            made.append(directory)
        try:
            (root / ".probe").write_text("")
        except PermissionError:
            return  # chmod restricts this user
        (root / ".probe").unlink()
        open_, os_open = builtins.open, os.open
        writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

        def guarded_open(file, mode="r", *args, **kwargs):
            if _under(root, file) and set(mode) & set("wax+"):
                raise _denied(file)
            return open_(file, mode, *args, **kwargs)

        def guarded_os_open(file, flags, *args, **kwargs):
            if _under(root, file) and flags & writes:
                raise _denied(file)
            return os_open(file, flags, *args, **kwargs)

        def refused(method):
            def guarded(path, *args, **kwargs):
                if _under(root, path) and not (method.__name__ == "mkdir" and path.exists()):  # EEXIST first
                    raise _denied(path)
                return method(path, *args, **kwargs)
            return guarded

        monkeypatch.setattr(builtins, "open", guarded_open)
        monkeypatch.setattr(os, "open", guarded_os_open)
        for name in ("mkdir", "unlink", "touch", "write_text", "write_bytes"):
            monkeypatch.setattr(Path, name, refused(getattr(Path, name)))

    yield make
    for directory in made:
        os.chmod(directory, 0o755)  # let pytest remove it


def test_a_read_only_cache_loads_finished_runs_and_refuses_training(tmp_path, data, monkeypatch, read_only):
    finished = train(tmp_path, data)
    partial = killed_run(tmp_path / "partial", data, monkeypatch)
    read_only(tmp_path)
    counter = StepCounter(monkeypatch)
    assert comparable(train(tmp_path, data).metrics) == comparable(finished.metrics)
    assert load_run(finished.dir).history == finished.history and counter.steps == 0
    with pytest.raises(runs.RunDirError, match=re.escape(f"cannot use the run cache at {tmp_path}: cannot create "
                                                         f"{tiny(seed=1).hash} (Permission denied)")):
        train(tmp_path, data, tiny(seed=1))
    with pytest.raises(runs.RunDirError, match=re.escape(f"cannot use the run cache at {partial}: cannot take "
                                                         f"its lock to write the run (Permission denied)")):
        train(tmp_path / "partial", data)
    assert counter.steps == 0


def _disk_full(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch):
    path = tmp_path / runs.METRICS
    runs.atomic_write_json(path, {"v": 1})
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(runs.RunDirError, match=re.escape(f"cannot use the run cache at {tmp_path}: cannot write "
                                                         f"metrics.json (No space left on device)")) as raised:
        runs.atomic_write_json(path, {"v": 2})
    assert isinstance(raised.value, OSError) and raised.value.errno == errno.ENOSPC
    assert json.loads(path.read_text()) == {"v": 1} and list(tmp_path.iterdir()) == [path]


def test_a_full_disk_stops_training_with_a_clear_error(tmp_path, data, monkeypatch):
    monkeypatch.setattr(os, "fsync", _disk_full)
    run_dir = tmp_path / tiny().hash
    with pytest.raises(runs.RunDirError, match=re.escape(f"cannot use the run cache at {run_dir}: cannot write "
                                                         f"config.json (No space left on device)")):
        train(tmp_path, data)
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


# -- divergence --------------------------------------------------------------------------------

def test_divergence_is_reported_as_divergence_not_bad_input(tmp_path, data):
    with pytest.raises(FloatingPointError, match=r"run diverged at epoch 1, step \d+: the projections are NaN "
                                                 r"or inf; lower lr \(now [0-9.e+]+\)"):
        train(tmp_path, data, tiny(lr=1e10, optimizer="sgd"))
