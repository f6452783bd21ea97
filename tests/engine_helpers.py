"""Small data for the engine tests: synthetic labelled images and writers of each real on-disk format."""
from __future__ import annotations

import gzip
import os
import pickle
import shlex
import struct
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from clmini.engine.config import TrainConfig
from clmini.engine.data import ImageData


def pattern_images(n: int, n_classes: int = 4, size: int = 28, channels: int = 1, seed: int = 0):
    """``n`` uint8 images of ``n_classes`` visually distinct classes (a bright bar whose position and
    orientation depend on the class) plus noise, and their labels ``0..n_classes-1`` in turn."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    images = rng.integers(0, 60, size=(n, channels, size, size)).astype(np.float64)
    band = size // (n_classes + 1)
    for c in range(n_classes):
        rows = slice(band * c + 1, band * c + 1 + band)
        images[labels == c, :, rows, :] += 150 if c % 2 else 0
        images[labels == c, :, :, rows] += 0 if c % 2 else 150
    return images.clip(0, 255).astype(np.uint8), labels.astype(np.int64)


def tiny_config(**overrides) -> TrainConfig:
    """A config that trains in about a second on the CPU (on :func:`pattern_data`)."""
    values = dict(n_train=None, width=4, proj_dim=16, epochs=2, batch_size=32, lr=3e-3,
                  monitor_train_size=64, monitor_test_size=32, knn_k=20, probe_iters=20)
    return TrainConfig(**{**values, **overrides})


def pattern_data(n_train: int = 256, n_test: int = 128, n_classes: int = 4, size: int = 28,
                 channels: int = 1, name: str = "fashion-mnist") -> ImageData:
    train_x, train_y = pattern_images(n_train, n_classes, size, channels, seed=0)
    test_x, test_y = pattern_images(n_test, n_classes, size, channels, seed=1)
    return ImageData(name, torch.from_numpy(train_x), torch.from_numpy(train_y), torch.from_numpy(test_x),
                     torch.from_numpy(test_y), tuple(f"class {c}" for c in range(n_classes)))


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (uint8), gzip-compressed when ``path`` ends in ``.gz``."""
    header = b"\0\0\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def write_fashion_mnist(directory: Path, n_train: int = 64, n_test: int = 32, gz: bool = True) -> ImageData:
    """The four Fashion-MNIST IDX files (10 pattern classes) in ``directory``; returns their content."""
    directory.mkdir(parents=True, exist_ok=True)
    data = pattern_data(n_train, n_test, n_classes=10)
    suffix = ".gz" if gz else ""
    write_idx(directory / f"train-images-idx3-ubyte{suffix}", data.train_x[:, 0].numpy())
    write_idx(directory / f"train-labels-idx1-ubyte{suffix}", data.train_y.numpy().astype(np.uint8))
    write_idx(directory / f"t10k-images-idx3-ubyte{suffix}", data.test_x[:, 0].numpy())
    write_idx(directory / f"t10k-labels-idx1-ubyte{suffix}", data.test_y.numpy().astype(np.uint8))
    return data


def _pickle(path: Path, obj) -> None:
    path.write_bytes(pickle.dumps(obj))


class _Payload:
    """Loaded by the stock unpickler, this calls ``function(*args)``: what a crafted data file does."""

    def __init__(self, function, *args):
        self.call = (function, args)

    def __reduce__(self):
        return self.call


def write_crafted_pickle(path: Path, marker: Path, shell: bool = True) -> None:
    """A CIFAR-like batch whose unpickling creates ``marker``, by a shell command (``shell``) or
    by ``builtins.open``; the marker's existence shows that loading it ran code."""
    payload = _Payload(os.system, f"touch {shlex.quote(str(marker))}") if shell else _Payload(open, str(marker), "w")
    _pickle(path, {"data": payload, "labels": [0]})


def write_cifar(root: Path, hundred: bool = False, per_file: int = 6) -> dict[str, np.ndarray]:
    """CIFAR-10 (five train batches + test batch) or CIFAR-100 (train + test) python pickles."""
    rng = np.random.default_rng(0)
    n_classes = 100 if hundred else 10
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    key = "fine_labels" if hundred else "labels"
    names = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    written = {"train_x": [], "train_y": [], "test_x": [], "test_y": []}
    for split, files in (("train", names), ("test", ["test" if hundred else "test_batch"])):
        for name in files:
            x = rng.integers(0, 256, size=(per_file, 3, 32, 32), dtype=np.uint8)
            y = rng.integers(0, n_classes, size=per_file)
            _pickle(folder / name, {"data": x.reshape(per_file, -1), key: y.tolist()})
            written[f"{split}_x"].append(x)
            written[f"{split}_y"].append(y)
    label_key = "fine_label_names" if hundred else "label_names"
    _pickle(folder / ("meta" if hundred else "batches.meta"),
            {label_key: [f"name{c}" for c in range(n_classes)]})
    return {k: np.concatenate(v) for k, v in written.items()}


def write_svhn(root: Path, n: int = 5) -> dict[str, np.ndarray]:
    """SVHN's ``{train,test}_32x32.mat``: X is ``[32, 32, 3, n]``, y holds 10 for the digit 0."""
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for split in ("train", "test"):
        x = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        y = np.arange(n) % 10
        savemat(root / f"{split}_32x32.mat",
                {"X": x.transpose(2, 3, 1, 0), "y": np.where(y == 0, 10, y)[:, None].astype(np.uint8)})
        written[f"{split}_x"], written[f"{split}_y"] = x, y
    return written


def write_stl10(root: Path, n: int = 3) -> dict[str, np.ndarray]:
    """STL-10's binaries: ``[n, 3, 96, 96]`` stored column-major per image, labels 1-based."""
    rng = np.random.default_rng(0)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    written = {}
    for split in ("train", "test"):
        x = rng.integers(0, 256, size=(n, 3, 96, 96), dtype=np.uint8)
        y = np.arange(n) % 10
        x.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")
        (y + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
        written[f"{split}_x"], written[f"{split}_y"] = x, y
    (folder / "unlabeled_X.bin").write_bytes(b"")
    (folder / "class_names.txt").write_text("\n".join(f"name{c}" for c in range(10)) + "\n")
    return written


@contextmanager
def killed_at_checkpoint(monkeypatch, n: int):
    """The block's run is "killed" right after its ``n``-th checkpoint write: that write completes,
    then ``KeyboardInterrupt`` ends the block (which must happen). Saving is restored afterwards."""
    from clmini.engine import rundir as runs

    original = runs.atomic_torch_save
    count = 0

    def save_then_die(path, obj):
        nonlocal count
        original(path, obj)
        count += 1
        if count == n:
            raise KeyboardInterrupt

    monkeypatch.setattr(runs, "atomic_torch_save", save_then_die)
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        monkeypatch.setattr(runs, "atomic_torch_save", original)


class StepCounter:
    """Counts Trainer.train_step calls (to tell a loaded run from a retrained one)."""

    def __init__(self, monkeypatch):
        from clmini.engine import Trainer

        self.steps = 0
        original = Trainer.train_step

        def counted(trainer, *args):
            self.steps += 1
            return original(trainer, *args)

        monkeypatch.setattr(Trainer, "train_step", counted)
