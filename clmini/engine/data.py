"""Data sets as whole uint8 tensors on the training device.

Contrastive training on small images is bound by the input pipeline when every image goes through
PIL and a ``DataLoader`` worker. Here a data set is loaded once into ``uint8`` tensors
``[N, C, H, W]`` (Fashion-MNIST train is 47 MB) that live on the training device; batches are
index lookups and augmentation runs batched on the same device (:mod:`clmini.engine.augment`).

Data are looked up under the ``root`` the caller passes and nowhere else (a mistyped root must
fail, not train on another copy); without a root, under ``$CLMINI_DATA``, and for Fashion-MNIST then
in Debian's ``dataset-fashion-mnist`` files. Downloads happen only on request (``download=True``),
through torchvision's helpers, which check the published md5 of what they fetch.

Every file is read here, by readers that parse each on-disk format (IDX, CIFAR's pickles, SVHN's
.mat, STL-10's raw binaries) and check what they get: a damaged or foreign file ends in one
:class:`DataFileError` naming it. CIFAR's pickles go through :class:`_ArrayUnpickler`, which builds
only numpy arrays and builtin containers: torchvision's classes would ``pickle.load`` whatever sits
under the root, and a pickle can run any code.
"""
from __future__ import annotations

import gzip
import os
import pickle
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
#: The data sets the engine reads: name (as configs spell it) -> the name to print.
DATASET_NAMES = {"fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "svhn": "SVHN",
                 "stl10": "STL-10"}
DATASETS = tuple(DATASET_NAMES)


@dataclass(frozen=True)
class ImageData:
    """A labelled image data set with its train/test split, as tensors.

    ``train_x``/``test_x``: uint8 ``[N, C, H, W]``; ``train_y``/``test_y``: int64 ``[N]``.
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: tuple[str, ...]

    @property
    def channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.train_x.shape[2:])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training images in [0, 1] (for input standardisation)."""
        x = self.train_x.transpose(0, 1).reshape(self.channels, -1).float().div_(255)
        return x.mean(1).tolist(), x.std(1).tolist()

    def to(self, device: torch.device | str) -> "ImageData":
        return replace(self, **{k: getattr(self, k).to(device)
                                for k in ("train_x", "train_y", "test_x", "test_y")})

    def select_classes(self, classes) -> "ImageData":
        """Only the images of ``classes`` (indices into :attr:`classes`), in both splits.

        Labels are renumbered ``0..len(classes)-1`` in the order given and :attr:`classes` keeps
        those classes' names, so a two-class subset is an ordinary two-class data set.
        """
        classes = [int(c) for c in classes]
        if len(set(classes)) != len(classes) or len(classes) < 2:
            raise ValueError(f"classes must name at least 2 distinct classes, got {classes}")
        bad = [c for c in classes if not 0 <= c < self.n_classes]
        if bad:
            raise ValueError(f"classes {bad} out of range: {self.name} has classes 0..{self.n_classes - 1}")
        lookup = torch.full((self.n_classes,), -1, dtype=torch.long)
        lookup[classes] = torch.arange(len(classes))
        out = {}
        for split in ("train", "test"):
            y = getattr(self, f"{split}_y")
            new_y = lookup.to(y.device)[y]
            keep = new_y >= 0
            out[f"{split}_x"], out[f"{split}_y"] = getattr(self, f"{split}_x")[keep], new_y[keep]
        return replace(self, **out, classes=tuple(self.classes[c] for c in classes))

    def subset(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> "ImageData":
        """Stratified subsets (class shares kept) of the train and/or test split, chosen by ``seed``."""
        out = self
        if n_train is not None:
            i = stratified_indices(self.train_y, n_train, seed)
            out = replace(out, train_x=self.train_x[i], train_y=self.train_y[i])
        if n_test is not None:
            i = stratified_indices(self.test_y, n_test, seed + 1)
            out = replace(out, test_x=self.test_x[i], test_y=self.test_y[i])
        return out


def _grouped_by_class(labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """A random permutation of the samples grouped by class (class 0 first), each sample's rank
    inside its class in that order, and the class counts."""
    counts = torch.bincount(labels)
    order = torch.randperm(labels.numel(), generator=generator)
    # Stable sort by label keeps the random order inside each class.
    order = order[torch.argsort(labels[order], stable=True)]
    first_of_class = torch.cumsum(counts, 0) - counts
    rank = torch.arange(labels.numel()) - first_of_class[labels[order]]
    return order, rank, counts


def stratified_indices(labels: Tensor, n: int, seed: int = 0) -> Tensor:
    """``n`` indices into ``labels`` drawn without replacement, each class keeping its share.

    Quotas are proportional to class counts (largest remainders get the leftover samples); the
    returned indices are sorted, so a subset keeps the data set's order.
    """
    total = labels.numel()
    if not 0 < n <= total:
        raise ValueError(f"n must be in [1, {total}] (the number of samples), got {n}")
    labels = labels.cpu()
    order, rank, counts = _grouped_by_class(labels, torch.Generator().manual_seed(seed))
    exact = counts.double() * n / total
    quota = exact.floor().long()
    leftover = n - int(quota.sum())
    quota[torch.argsort(exact - quota, descending=True, stable=True)[:leftover]] += 1
    return order[rank < quota[labels[order]]].sort().values


def class_balanced_batches(labels: Tensor, batch_size: int, generator: torch.Generator,
                           classes_per_batch: int | None = None) -> Tensor:
    """One epoch of class-balanced batches: indices ``[steps, M * (batch_size // M)]``.

    ``classes_per_batch=None``: every batch holds ``batch_size // C`` samples of each of the ``C``
    classes (``M = C``; the batch is rounded down to a multiple of ``C``). Classes larger than the
    smallest one contribute a random part of their samples each epoch, so an epoch has
    ``min class count // (batch_size // C)`` steps.

    ``classes_per_batch=M < C``: every batch holds ``batch_size // M`` samples of each of ``M``
    distinct classes, so each anchor meets more same-class samples for the same batch size. Each
    class is cut into ``S = min class count // (batch_size // M)`` random chunks; in round ``s`` the
    classes are shuffled and grouped ``M`` at a time (``C mod M`` classes sit the round out), each
    group taking its classes' ``s``-th chunks: ``S * (C // M)`` steps.
    """
    labels = labels.cpu()
    order, rank, counts = _grouped_by_class(labels, generator)
    present = counts > 0
    n_classes = int(present.sum())
    if classes_per_batch is not None and (isinstance(classes_per_batch, bool)
                                          or not isinstance(classes_per_batch, int)
                                          or not 2 <= classes_per_batch <= n_classes):
        raise ValueError(f"classes_per_batch must be an integer in [2, {n_classes}] (the number of "
                         f"classes) or None, got {classes_per_batch!r}")
    per_batch = n_classes if classes_per_batch is None else classes_per_batch
    per_class = batch_size // per_batch
    if per_class < 1:
        raise ValueError(f"batch_size {batch_size} is smaller than the number of classes per batch "
                         f"({per_batch}): a class-balanced batch needs one image of each")
    steps = int(counts[present].min()) // per_class
    if steps == 0:
        raise ValueError(f"batch_size {batch_size}: the smallest class has {int(counts[present].min())} "
                         f"samples, fewer than the {per_class} per class one batch needs")
    keep = order[rank < steps * per_class]  # grouped by class, steps * per_class of each
    chunks = keep.view(n_classes, steps, per_class)
    if per_batch == n_classes:
        return chunks.transpose(0, 1).reshape(steps, n_classes * per_class)
    groups = n_classes // per_batch
    rounds = torch.stack([torch.randperm(n_classes, generator=generator) for _ in range(steps)])
    members = rounds[:, :groups * per_batch].reshape(steps, groups, per_batch)
    batches = chunks[members, torch.arange(steps)[:, None, None]]  # [steps, groups, M, per_class]
    return batches.reshape(steps * groups, per_batch * per_class)


def load_dataset(name: str = "fashion-mnist", root: str | os.PathLike | None = None, *,
                 download: bool = False, device: torch.device | str = "cpu",
                 n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> ImageData:
    """Load a data set by name (one of :data:`DATASETS`) onto ``device``.

    ``n_train``/``n_test`` take stratified subsets (for quick profiles and tests).
    """
    loaders = {"fashion-mnist": _load_fashion_mnist, "cifar10": _load_torchvision,
               "cifar100": _load_torchvision, "svhn": _load_torchvision, "stl10": _load_torchvision}
    if name not in loaders:
        raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}")
    data = loaders[name](name, root, download)
    return data.subset(n_train, n_test, seed).to(device)


# --- Reading files: one checked layer for every format ----------------------------------------

class DataFileError(ValueError):
    """A data file that is there but cannot be used: damaged, of a foreign format, or refused.

    A ``ValueError`` (the command line reports those in one line); the message starts with the file.
    """

    def __init__(self, path: str | os.PathLike, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)


def _expect(ok: bool, path: str | os.PathLike, problem: str) -> None:
    if not ok:
        raise DataFileError(path, problem)


@contextmanager
def _reading(path: str | os.PathLike):
    """Turn any failure while parsing ``path`` into one :class:`DataFileError` naming it.

    Third-party parsers (gzip, scipy, numpy) fail on foreign bytes with whatever exception their
    internals hit (scipy's ``loadmat`` raises ``IndexError`` on garbage); the user needs the file and
    the reason. A missing file stays ``FileNotFoundError``: callers tell "not there" from "damaged".
    """
    try:
        yield
    except (DataFileError, FileNotFoundError):
        raise
    except Exception as err:  # noqa: BLE001 - see the docstring
        raise DataFileError(path, f"unreadable ({type(err).__name__}: {err})") from None


def _read_bytes(path: Path) -> bytes:
    """The content of ``path``, decompressed when its name ends in ``.gz``."""
    with _reading(path):
        raw = path.read_bytes()
    if path.name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:  # BadGzipFile, a cut stream, bad deflate data
            raise DataFileError(path, f"not a valid gzip file ({err})") from None
    return raw


def _labelled(path: Path, x: np.ndarray, y: np.ndarray, image_shape: tuple[int, ...],
              n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` once checked: uint8 images ``[N, *image_shape]`` and integer labels ``[N]`` in
    ``0..n_classes-1`` (the checks every format shares; ``path`` names the labels' file)."""
    _expect(x.dtype == np.uint8 and x.ndim == 1 + len(image_shape) and x.shape[1:] == image_shape,
            path, f"images must be uint8 {list(image_shape)}, found {x.dtype} {list(x.shape[1:])}")
    _expect(np.issubdtype(y.dtype, np.integer) and y.shape == (len(x),), path,
            f"expected {len(x)} integer labels (one per image), found {y.dtype} of shape {list(y.shape)}")
    low, high = (int(y.min()), int(y.max())) if y.size else (0, 0)
    _expect(0 <= low and high < n_classes, path, f"labels must lie in 0..{n_classes - 1}, found {low}..{high}")
    return x, y.astype(np.int64)


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and builtin containers, and refuses everything else.

    CIFAR's batches are pickled dicts of lists, strings and one uint8 array; those need exactly the
    globals below (numpy 1's and numpy 2's module names, protocols 2 to 5). Any other global is what
    a crafted file would use to call code, so it is refused before anything is called.
    """

    _ALLOWED = frozenset({(f"numpy.{core}.{module}", name) for core in ("core", "_core")
                          for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"),
                                               ("numeric", "_frombuffer"))}
                         | {("numpy", "ndarray"), ("numpy", "dtype")})

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")  # CIFAR was pickled by Python 2
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise DataFileError(self.path, f"refused: the pickle asks for {module}.{name}, which a "
                                           "data file never needs (a crafted file?)")
        return super().find_class(module, name)


def _load_pickle(path: Path):
    with _reading(path), path.open("rb") as f:
        return _ArrayUnpickler(f, path).load()


# --- Fashion-MNIST: IDX files, found offline -------------------------------------------------

_IDX_FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
              "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format; gzip-compressed if the name ends in ``.gz``)."""
    path = Path(path)
    raw = _read_bytes(path)
    # Header: two zero bytes, a type code (0x08 = uint8), the number of dimensions, then each
    # dimension as a big-endian int32.
    _expect(len(raw) >= 4 and raw[:2] == b"\0\0" and raw[2] == 0x08, path, "not a uint8 IDX file")
    ndim = raw[3]
    _expect(len(raw) >= 4 + 4 * ndim, path, f"truncated IDX header ({len(raw)} bytes)")
    shape = tuple(int(n) for n in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    _expect(min(shape, default=0) >= 0, path, f"IDX header gives a negative size {shape}")
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    expected = int(np.prod(shape))
    _expect(data.size >= expected, path,
            f"truncated IDX file (expected {expected} bytes of data, found {data.size})")
    _expect(data.size == expected, path,
            f"{data.size} bytes of data where the IDX header's shape {shape} needs {expected}")
    return data.reshape(shape)


def _idx_dir_candidates(root: Path) -> list[Path]:
    # The plain layout (Debian, the original release) and torchvision's FashionMNIST/raw layout.
    return [root, root / "FashionMNIST" / "raw", root / "fashion-mnist"]


def _find_idx_files(directory: Path) -> dict[str, Path] | None:
    found = {}
    for key, stem in _IDX_FILES.items():
        path = next((p for p in (directory / stem, directory / f"{stem}.gz") if p.is_file()), None)
        if path is None:
            return None
        found[key] = path
    return found


def _data_root(root: str | os.PathLike | None) -> Path | None:
    """The root to read: the caller's if given (alone: a mistyped root must fail, not quietly load
    another copy), else ``$CLMINI_DATA``, else None."""
    if root is not None:
        return Path(root)
    return Path(os.environ["CLMINI_DATA"]) if os.environ.get("CLMINI_DATA") else None


def fashion_mnist_search_path(root: str | os.PathLike | None = None) -> list[Path]:
    """The directories searched for Fashion-MNIST, in order.

    An explicit ``root`` is searched alone; without one, ``$CLMINI_DATA`` and then Debian's files.
    """
    base = _data_root(root)
    dirs = _idx_dir_candidates(base) if base is not None else []
    return dirs if root is not None else dirs + [DEBIAN_FASHION_MNIST]


def _load_fashion_mnist(name: str, root, download: bool) -> ImageData:
    searched = fashion_mnist_search_path(root)
    files = next((f for f in map(_find_idx_files, searched) if f is not None), None)
    if files is None and download:
        target = _data_root(root) or Path.home() / ".cache" / "clmini"
        _download(name, target)
        files = _find_idx_files(target / "FashionMNIST" / "raw")
    if files is None:
        looked = "\n  ".join(str(d) for d in searched)
        raise FileNotFoundError(
            "Fashion-MNIST not found. Looked for train-images-idx3-ubyte[.gz] and its three sibling "
            f"files in:\n  {looked}\nGet it with `sudo apt-get install dataset-fashion-mnist` "
            "(Debian/Ubuntu), or put the four IDX files under a directory passed as `root` or in "
            "$CLMINI_DATA, or pass download=True (--download) to fetch it through torchvision.")
    splits = []
    for split in ("train", "test"):
        x, y = (read_idx(files[f"{split}_{k}"]) for k in ("x", "y"))
        x, y = _labelled(files[f"{split}_y"], x, y, (28, 28), len(FASHION_MNIST_CLASSES))
        splits += [torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y)]
    return ImageData(name, *splits, FASHION_MNIST_CLASSES)


# --- CIFAR-10/100, SVHN, STL-10: torchvision's on-disk layouts, read here ----------------------

def _read_cifar(root: Path, hundred: bool):
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    n_classes, label_key = (100, "fine_labels") if hundred else (10, "labels")
    files = {"train": ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)],
             "test": ["test" if hundred else "test_batch"]}
    splits = []
    for names in files.values():
        xs, ys = [], []
        for path in (folder / name for name in names):
            batch = _load_pickle(path)
            _expect(isinstance(batch, dict) and "data" in batch and label_key in batch, path,
                    f"not a CIFAR batch (a dict with 'data' and '{label_key}' expected)")
            x = batch["data"]
            _expect(isinstance(x, np.ndarray) and x.ndim == 2 and x.shape[1] == 3 * 32 * 32, path,
                    f"'data' must be an array [N, 3072], found {getattr(x, 'shape', type(x).__name__)}")
            with _reading(path):
                y = np.asarray(batch[label_key])
            x, y = _labelled(path, x.reshape(-1, 3, 32, 32), y, (3, 32, 32), n_classes)
            xs.append(x)
            ys.append(y)
        splits += [np.concatenate(xs), np.concatenate(ys)]
    path = folder / ("meta" if hundred else "batches.meta")
    meta = _load_pickle(path)
    names_key = "fine_label_names" if hundred else "label_names"
    classes = meta.get(names_key) if isinstance(meta, dict) else None
    _expect(isinstance(classes, list) and len(classes) == n_classes
            and all(isinstance(c, str) for c in classes), path, f"'{names_key}' must list {n_classes} names")
    return splits, classes


def _read_svhn(root: Path):
    # loadmat reads .mat version 5 (plain arrays, nothing is called) and refuses 7.3 (HDF5).
    from scipy.io import loadmat

    splits = []
    for split in ("train", "test"):
        path = root / f"{split}_32x32.mat"
        with _reading(path):
            mat = loadmat(path, variable_names=["X", "y"])
        _expect("X" in mat and "y" in mat, path, "an SVHN .mat file must hold X and y")
        x, y = mat["X"], mat["y"].reshape(-1).astype(np.int64) - 1  # stored 1..10, 10 for digit 0
        _expect(x.ndim == 4 and x.shape[:3] == (32, 32, 3), path,
                f"X must be [32, 32, 3, N], found {list(x.shape)}")
        x, y = _labelled(path, x.transpose(3, 2, 0, 1), y, (3, 32, 32), 10)
        splits += [x, (y + 1) % 10]
    return splits, list("0123456789")


def _read_stl10(root: Path):
    folder = root / "stl10_binary"
    size = 3 * 96 * 96
    splits = []
    for split in ("train", "test"):
        x_path, y_path = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
        x, y = np.frombuffer(_read_bytes(x_path), np.uint8), np.frombuffer(_read_bytes(y_path), np.uint8)
        _expect(x.size % size == 0, x_path, f"{x.size} bytes is not a whole number of 3x96x96 images")
        x = x.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)  # each image is stored column-major
        splits += _labelled(y_path, x, y.astype(np.int64) - 1, (3, 96, 96), 10)  # stored 1..10
    path = folder / "class_names.txt"
    with _reading(path):
        classes = path.read_text().split()
    _expect(len(classes) == 10, path, f"10 class names expected, found {len(classes)}")
    return splits, classes


_READERS = {"cifar10": lambda root: _read_cifar(root, False), "cifar100": lambda root: _read_cifar(root, True),
            "svhn": _read_svhn, "stl10": _read_stl10}


def _download(name: str, root: Path) -> None:
    """Fetch ``name`` into ``root`` in torchvision's layout.

    Only torchvision's download helpers are used (they check the published md5 of each download);
    its dataset classes would then unpickle CIFAR with the stock unpickler.
    """
    from torchvision import datasets
    from torchvision.datasets.utils import download_and_extract_archive, download_url

    if name == "fashion-mnist":
        cls = datasets.FashionMNIST
        for filename, md5 in cls.resources:
            download_url(cls.mirrors[0] + filename, str(root / "FashionMNIST" / "raw"), filename, md5)
    elif name == "svhn":
        for split in ("train", "test"):
            url, filename, md5 = datasets.SVHN.split_list[split]
            download_url(url, str(root), filename, md5)
    else:
        cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100, "stl10": datasets.STL10}[name]
        download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)


def _load_torchvision(name: str, root, download: bool) -> ImageData:
    given = root
    root = _data_root(root)
    if root is None:
        raise FileNotFoundError(f"{name}: pass a root directory (or set $CLMINI_DATA) holding "
                                "torchvision's files for it, or add download=True (--download).")
    try:
        splits, classes = _READERS[name](root)
    except FileNotFoundError as err:
        if not download:
            where = "the given root" if given is not None else "$CLMINI_DATA"
            raise FileNotFoundError(
                f"{name} not found under {root} ({where}; no {err.filename}). Put torchvision's files "
                "for it there, or pass download=True (--download) to fetch them.") from None
        _download(name, root)
        splits, classes = _READERS[name](root)
    return ImageData(name, *(torch.from_numpy(np.ascontiguousarray(a)) for a in splits), tuple(classes))
