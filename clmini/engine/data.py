"""Data sets as whole uint8 tensors on the training device.

Contrastive training on small images is bound by the input pipeline when every image goes through
PIL and a ``DataLoader`` worker. Here a data set is loaded once into ``uint8`` tensors
``[N, C, H, W]`` (Fashion-MNIST train is 47 MB) that live on the training device; batches are
index lookups and augmentation runs batched on the same device (:mod:`clmini.engine.augment`).

Fashion-MNIST works offline: it is looked up under the ``root`` the caller passes, under
``$CLMINI_DATA``, then in Debian's ``dataset-fashion-mnist`` files, and downloaded through
torchvision only when the caller asks for it (``download=True``). CIFAR-10, CIFAR-100, SVHN and
STL-10 are read by torchvision's own classes from the caller's root (download on request only).
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DATASETS = ("fashion-mnist", "cifar10", "cifar100", "svhn", "stl10")


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


# --- Fashion-MNIST: IDX files, found offline -------------------------------------------------

_IDX_FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
              "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format; gzip-compressed if the name ends in ``.gz``)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    # Header: two zero bytes, a type code (0x08 = uint8), the number of dimensions, then each
    # dimension as a big-endian int32.
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise ValueError(f"{path} is not a uint8 IDX file")
    ndim = raw[3]
    shape = tuple(np.frombuffer(raw, ">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {data.size} values (truncated?)")
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


def fashion_mnist_search_path(root: str | os.PathLike | None = None) -> list[Path]:
    """The directories searched for Fashion-MNIST, in order."""
    bases = [Path(root)] if root is not None else []
    if os.environ.get("CLMINI_DATA"):
        bases.append(Path(os.environ["CLMINI_DATA"]))
    dirs = [d for base in bases for d in _idx_dir_candidates(base)]
    return dirs + [DEBIAN_FASHION_MNIST]


def _load_fashion_mnist(name: str, root, download: bool) -> ImageData:
    searched = fashion_mnist_search_path(root)
    files = next((f for f in map(_find_idx_files, searched) if f is not None), None)
    if files is None and download:
        from torchvision.datasets import FashionMNIST

        target = Path(root or os.environ.get("CLMINI_DATA") or Path.home() / ".cache" / "clmini")
        FashionMNIST(target, train=True, download=True)
        FashionMNIST(target, train=False, download=True)
        files = _find_idx_files(target / "FashionMNIST" / "raw")
    if files is None:
        looked = "\n  ".join(str(d) for d in searched)
        raise FileNotFoundError(
            "Fashion-MNIST not found. Looked for train-images-idx3-ubyte[.gz] and its three sibling "
            f"files in:\n  {looked}\nGet it with `sudo apt-get install dataset-fashion-mnist` "
            "(Debian/Ubuntu), or put the four IDX files under a directory passed as `root` or in "
            "$CLMINI_DATA, or pass download=True (--download) to fetch it through torchvision.")
    arrays = {key: torch.from_numpy(read_idx(path).copy()) for key, path in files.items()}
    return ImageData(name, arrays["train_x"].unsqueeze(1), arrays["train_y"].long(),
                     arrays["test_x"].unsqueeze(1), arrays["test_y"].long(), FASHION_MNIST_CLASSES)


# --- CIFAR-10/100, SVHN, STL-10 through torchvision -------------------------------------------

def _presence_only(cls):
    """``cls`` with its per-file md5 sums dropped: existence is checked, content is not.

    torchvision verifies the md5 of every file at every load (seconds for STL-10), and a checksum
    pins the files to the official release, so test fixtures in the same on-disk format could not
    be read. Downloads still go through the original class, which verifies the archive.
    """
    attrs = {}
    for key in ("train_list", "test_list"):
        if hasattr(cls, key):
            attrs[key] = [[entry[0], None] for entry in getattr(cls, key)]
    if hasattr(cls, "meta"):
        attrs["meta"] = {**cls.meta, "md5": None}
    if hasattr(cls, "split_list"):
        attrs["split_list"] = {k: [*v[:2], None] for k, v in cls.split_list.items()}
    return type(cls.__name__, (cls,), attrs)


def _torchvision_split(name: str, root: Path, train: bool, download: bool):
    from torchvision import datasets

    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100,
           "svhn": datasets.SVHN, "stl10": datasets.STL10}[name]
    split = {"train": train} if name.startswith("cifar") else {"split": "train" if train else "test"}
    if download:
        cls(root, download=True, **split)
    return _presence_only(cls)(root, download=False, **split)


def _load_torchvision(name: str, root, download: bool) -> ImageData:
    root = root or os.environ.get("CLMINI_DATA")
    if root is None:
        raise FileNotFoundError(f"{name}: pass a root directory (or set $CLMINI_DATA) holding "
                                "torchvision's files for it, or add download=True (--download).")
    splits = []
    for train in (True, False):
        try:
            ds = _torchvision_split(name, Path(root), train, download)
        except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
            raise FileNotFoundError(
                f"{name} not found under {root} ({err}). Put torchvision's files for it there, "
                "or pass download=True (--download) to fetch them.") from None
        x = torch.from_numpy(np.ascontiguousarray(ds.data))
        if name.startswith("cifar"):
            x = x.permute(0, 3, 1, 2).contiguous()  # CIFAR is stored HWC; SVHN and STL-10 are CHW
        y = torch.as_tensor(np.asarray(ds.targets if name.startswith("cifar") else ds.labels)).long()
        splits += [x, y]
    classes = tuple(getattr(ds, "classes", None) or [str(c) for c in range(10)])  # SVHN: digits
    return ImageData(name, *splits, classes)
