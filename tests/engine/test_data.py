"""clmini.engine.data: offline Fashion-MNIST lookup, torchvision formats from tiny files, subsets, batches."""
from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch

from clmini.engine import data as data_module
from clmini.engine.data import (DataFileError, ImageData, class_balanced_batches, fashion_mnist_search_path,
                                load_dataset, read_idx, stratified_indices)
from engine_helpers import (write_cifar, write_crafted_pickle, write_fashion_mnist, write_idx, write_stl10,
                            write_svhn)


@pytest.fixture
def no_system_data(monkeypatch, tmp_path):
    """No $CLMINI_DATA and no Debian files: only what a test writes is found."""
    monkeypatch.delenv("CLMINI_DATA", raising=False)
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_root_matches_the_files(tmp_path, no_system_data, gz):
    written = write_fashion_mnist(tmp_path / "fm", gz=gz)
    data = load_dataset("fashion-mnist", tmp_path / "fm")
    assert data.train_x.dtype == torch.uint8 and data.train_x.shape == (64, 1, 28, 28)
    assert torch.equal(data.train_x, written.train_x) and torch.equal(data.test_y, written.test_y)
    assert data.train_y.dtype == torch.int64
    assert data.classes[0] == "T-shirt/top" and data.n_classes == 10


def test_fashion_mnist_search_order(tmp_path, monkeypatch):
    write_fashion_mnist(tmp_path / "root", n_train=30)
    write_fashion_mnist(tmp_path / "env" / "FashionMNIST" / "raw", n_train=40)  # torchvision layout
    write_fashion_mnist(tmp_path / "debian", n_train=50)
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    monkeypatch.setenv("CLMINI_DATA", str(tmp_path / "env"))
    assert len(load_dataset(root=tmp_path / "root").train_y) == 30   # root first
    assert len(load_dataset().train_y) == 40                         # then $CLMINI_DATA
    monkeypatch.delenv("CLMINI_DATA")
    assert len(load_dataset().train_y) == 50                         # then Debian's files


def test_missing_fashion_mnist_says_where_it_looked_and_how_to_get_it(tmp_path, no_system_data):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset(root=tmp_path / "nowhere")
    message = str(err.value)
    assert str(tmp_path / "nowhere") in message and "no-debian" not in message  # a given root alone
    assert "apt-get install dataset-fashion-mnist" in message and "download=True" in message
    with pytest.raises(FileNotFoundError, match="no-debian"):
        load_dataset()
    assert fashion_mnist_search_path(tmp_path)[0] == tmp_path


def test_an_explicit_root_is_used_or_fails_never_falls_back(tmp_path, monkeypatch):
    """Issue 12: a mistyped --root trained on $CLMINI_DATA's or Debian's copy without a word."""
    write_fashion_mnist(tmp_path / "env")
    write_fashion_mnist(tmp_path / "debian")
    write_cifar(tmp_path / "env")
    monkeypatch.setenv("CLMINI_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    typo = tmp_path / "tpyo"
    assert fashion_mnist_search_path(typo) == [typo, typo / "FashionMNIST" / "raw", typo / "fashion-mnist"]
    for name in ("fashion-mnist", "cifar10"):
        with pytest.raises(FileNotFoundError, match=str(typo)):
            load_dataset(name, typo)
        assert load_dataset(name).n_classes == 10  # without a root, $CLMINI_DATA is read


@pytest.mark.parametrize("shell", [True, False])
def test_a_crafted_cifar_pickle_is_refused_without_running_anything(tmp_path, shell):
    """Issue 12: CIFAR's batches went to the stock unpickler, so a data file could run a shell command."""
    write_cifar(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    marker = tmp_path / "pwned"
    write_crafted_pickle(batch, marker, shell)
    with pytest.raises(DataFileError) as err:
        load_dataset("cifar10", tmp_path)
    assert not marker.exists()
    assert isinstance(err.value, ValueError) and str(err.value).startswith(f"{batch}: refused: the pickle asks for ")
    assert ("posix.system" if shell else "io.open") in str(err.value)


def _truncated_gz_idx(path):
    write_fashion_mnist(path.parent, n_train=64, gz=True)
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:16 + 1000]))
    return "truncated IDX file (expected 50176 bytes of data, found 1000)"


def _gz_that_is_not_gzip(path):
    write_fashion_mnist(path.parent, gz=True)
    write_idx(path.with_suffix(""), np.zeros((64, 28, 28), np.uint8))
    path.with_suffix("").rename(path)
    return "not a valid gzip file (Not a gzipped file"


def _cut_gzip_stream(path):
    write_fashion_mnist(path.parent, gz=True)
    path.write_bytes(path.read_bytes()[:-100])
    return "not a valid gzip file (Compressed file ended"


def _cifar_batch(content):
    """Damage: a CIFAR batch pickling ``content``; None: bytes that are no pickle at all."""
    def damage(path):
        write_cifar(path.parent.parent)
        path.write_bytes(b"\x80\x04garbage" if content is None else pickle.dumps(content))
        return "unreadable (UnpicklingError" if content is None else None
    return damage


def _labels_out_of_range(path):
    write_fashion_mnist(path.parent, gz=False)
    write_idx(path, np.full(64, 10, np.uint8))
    return "labels must lie in 0..9, found 10..10"


def _garbage_mat(path):
    write_svhn(path.parent)
    path.write_bytes(b"not a .mat file" * 20)
    return "unreadable (ValueError: Unknown mat file type"


def _short_stl10_images(path):
    write_stl10(path.parent.parent)
    path.write_bytes(path.read_bytes()[:-5])
    return f"{3 * 96 * 96 * 3 - 5} bytes is not a whole number of 3x96x96 images"


CIFAR_BATCH = "cifar-10-batches-py/data_batch_1"


@pytest.mark.parametrize("name, file, damage, problem", [
    ("fashion-mnist", "train-images-idx3-ubyte.gz", _truncated_gz_idx, None),
    ("fashion-mnist", "train-images-idx3-ubyte.gz", _gz_that_is_not_gzip, None),
    ("fashion-mnist", "t10k-images-idx3-ubyte.gz", _cut_gzip_stream, None),
    ("fashion-mnist", "train-labels-idx1-ubyte", _labels_out_of_range, None),
    ("cifar10", CIFAR_BATCH, _cifar_batch({"data": np.zeros((6, 3072), np.uint8)}),
     "not a CIFAR batch (a dict with 'data' and 'labels' expected)"),
    ("cifar10", CIFAR_BATCH, _cifar_batch([1, 2, 3]), "not a CIFAR batch"),
    ("cifar10", CIFAR_BATCH, _cifar_batch({"data": np.zeros((6, 100), np.uint8), "labels": [0] * 6}),
     "'data' must be an array [N, 3072], found (6, 100)"),
    ("cifar10", CIFAR_BATCH, _cifar_batch({"data": np.zeros((6, 3072), np.uint8), "labels": [0] * 5}),
     "expected 6 integer labels (one per image), found int64 of shape [5]"),
    ("cifar10", CIFAR_BATCH, _cifar_batch({"data": np.zeros((6, 3072), np.float32), "labels": [0] * 6}),
     "images must be uint8 [3, 32, 32], found float32 [3, 32, 32]"),
    ("cifar10", "cifar-10-batches-py/test_batch", _cifar_batch(None), None),
    ("svhn", "test_32x32.mat", _garbage_mat, None),
    ("stl10", "stl10_binary/train_X.bin", _short_stl10_images, None),
])
def test_a_damaged_file_is_one_clear_error_naming_it(tmp_path, no_system_data, name, file, damage, problem):
    """Issue 12: damaged files ended in tracebacks from gzip, pickle, numpy or scipy internals."""
    path = tmp_path / file
    problem = damage(path) or problem
    with pytest.raises(DataFileError) as err:
        load_dataset(name, tmp_path)
    assert isinstance(err.value, ValueError) and err.value.path == path
    assert str(err.value).startswith(f"{path}: {problem}"), str(err.value)
    assert "\n" not in str(err.value)


def test_read_idx_rejects_truncated_and_foreign_files(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    write_idx(path, np.zeros((4, 5, 6), np.uint8))
    assert read_idx(path).shape == (4, 5, 6)
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)
    path.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ValueError, match="not a uint8 IDX file"):
        read_idx(path)


@pytest.mark.skipif(not (data_module.DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_from_debian(monkeypatch):
    monkeypatch.delenv("CLMINI_DATA", raising=False)
    data = load_dataset("fashion-mnist")
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert torch.equal(torch.bincount(data.train_y), torch.full((10,), 6000))
    assert abs(data.channel_stats()[0][0] - 0.2860) < 1e-3  # the well-known Fashion-MNIST mean


def test_cifar10_and_cifar100_through_torchvision(tmp_path):
    for hundred, name in ((False, "cifar10"), (True, "cifar100")):
        written = write_cifar(tmp_path / name, hundred)
        data = load_dataset(name, tmp_path / name)
        assert data.train_x.shape == (len(written["train_y"]), 3, 32, 32)  # CHW, not CIFAR's HWC
        assert np.array_equal(data.train_x.numpy(), written["train_x"])
        assert np.array_equal(data.test_y.numpy(), written["test_y"])
        assert len(data.classes) == (100 if hundred else 10) and data.classes[3] == "name3"


def test_svhn_through_torchvision_maps_label_10_to_digit_0(tmp_path):
    written = write_svhn(tmp_path)
    data = load_dataset("svhn", tmp_path)
    assert np.array_equal(data.train_x.numpy(), written["train_x"])
    assert data.train_y.tolist() == [0, 1, 2, 3, 4] and data.classes == tuple("0123456789")


def test_stl10_through_torchvision(tmp_path):
    written = write_stl10(tmp_path)
    data = load_dataset("stl10", tmp_path)
    assert data.train_x.shape == (3, 3, 96, 96)
    assert np.array_equal(data.test_x.numpy(), written["test_x"])
    assert data.train_y.tolist() == [0, 1, 2] and data.classes[9] == "name9"


def test_torchvision_sets_need_a_root_or_download(tmp_path, monkeypatch):
    monkeypatch.delenv("CLMINI_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_dataset("cifar10")
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_dataset("mnist")


def test_stratified_indices_keep_class_shares():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    index = stratified_indices(labels, 10, seed=3)
    assert torch.bincount(labels[index]).tolist() == [5, 3, 2]
    assert index.unique().numel() == 10 and torch.equal(index, index.sort().values)
    assert torch.equal(index, stratified_indices(labels, 10, seed=3))
    assert not torch.equal(index, stratified_indices(labels, 10, seed=4))
    # largest remainders: 7 of (5, 3, 2) shares are (3.5, 2.1, 1.4) -> (4, 2, 1)
    assert torch.bincount(labels[stratified_indices(labels, 7)]).tolist() == [4, 2, 1]
    with pytest.raises(ValueError, match=r"n must be in \[1, 100\]"):
        stratified_indices(labels, 101)


def test_subset_and_device_move_keep_pairs_aligned():
    x = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1)
    y = torch.arange(40) % 4
    data = ImageData("toy", x, y, x.clone(), y.clone(), ("a", "b", "c", "d")).subset(8, 4, seed=1)
    assert torch.equal(data.train_x.view(-1).long() % 4, data.train_y)
    assert torch.bincount(data.train_y).tolist() == [2, 2, 2, 2] and len(data.test_y) == 4
    assert data.to("cpu").device.type == "cpu"


def test_class_balanced_batches():
    labels = torch.tensor([0] * 13 + [1] * 10 + [2] * 7)
    batches = class_balanced_batches(labels, 7, torch.Generator().manual_seed(0))
    # 7 // 3 = 2 per class; the smallest class (7) gives 3 batches of 6
    assert batches.shape == (3, 6)
    for batch in batches:
        assert torch.bincount(labels[batch], minlength=3).tolist() == [2, 2, 2]
    assert batches.unique().numel() == 18  # no image twice in an epoch
    with pytest.raises(ValueError, match="smaller than the number of classes"):
        class_balanced_batches(labels, 2, torch.Generator())


def test_class_balanced_batches_with_fewer_classes_per_batch():
    labels = torch.tensor([0] * 13 + [1] * 10 + [2] * 7 + [3] * 9 + [4] * 8)
    generator = torch.Generator().manual_seed(0)
    batches = class_balanced_batches(labels, 6, generator, classes_per_batch=2)
    # 6 // 2 = 3 per class: 7 // 3 = 2 chunks per class; 5 // 2 = 2 groups per round, 2 rounds
    assert batches.shape == (4, 6)
    for batch in batches:
        counts = torch.bincount(labels[batch], minlength=5)
        assert sorted(counts.tolist()) == [0, 0, 0, 3, 3]
    assert batches.unique().numel() == batches.numel()  # no image twice in an epoch
    # all classes (None or C) is the original rule, with the same draws
    everything = class_balanced_batches(labels, 10, torch.Generator().manual_seed(1))
    assert torch.equal(everything, class_balanced_batches(labels, 10, torch.Generator().manual_seed(1), 5))
    for bad in (1, 6, True):
        with pytest.raises(ValueError, match="classes_per_batch"):
            class_balanced_batches(labels, 10, torch.Generator(), bad)


def test_select_classes_relabels_both_splits():
    y = torch.arange(20) % 4
    x = (y * 10).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()
    data = ImageData("toy", x, y, x.clone(), y.clone(), ("a", "b", "c", "d"))
    two = data.select_classes([3, 1])
    assert two.classes == ("d", "b")
    for split_x, split_y in ((two.train_x, two.train_y), (two.test_x, two.test_y)):
        assert split_y.tolist() == [1, 0] * 5
        assert torch.equal(split_x[:, 0, 0, 0], torch.tensor([10, 30] * 5, dtype=torch.uint8))
    for bad, message in (([1], "at least 2"), ([1, 1], "at least 2"), ([0, 4], "out of range")):
        with pytest.raises(ValueError, match=message):
            data.select_classes(bad)
