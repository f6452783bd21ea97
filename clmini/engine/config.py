"""What determines a run's result: :class:`TrainConfig`, validated and canonical, and its hash.

Runtime choices (device, progress bars, where the data lives, how many processes) are not part of
a config; they are arguments of :func:`clmini.engine.train_or_load`.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from clmini.engine import rundir
from clmini.engine.augment import AugmentConfig
from clmini.engine.data import DATASETS
from clmini.engine.device import resolve_device, resolve_precision
from clmini.engine.hooks import MONITORS
from clmini.engine.models import ARCHS
from clmini.engine.objectives import OBJECTIVES
from clmini.losses import LOSSES, make_loss

# Part of every run's hash. Bump it when a change alters what a run computes (the training loop,
# augmentations, models, evaluation, the math of a loss) or what a config means, so cached runs
# are not reused.
#   1: the first release.
#   2: objectives and per-epoch monitors became config fields (``objective``, ``monitors``); the
#      fields added after release 1 (``classes``, ``classes_per_batch``) are hashed like the others.
#   3: ``precision`` (bf16 autocast on CPUs with native bf16 too, in training and evaluation).
#   4: the optimiser's settings default to its recipe (:data:`RECIPES`); Adam 3e-3 with warm-up by default.
ENGINE_VERSION = 4

MODES = ("simclr", "supervised")
#: Each optimiser's recipe: the settings a run gets unless it sets them itself (``None``). Chosen by
#: measurement at the book's quick budget, paired over 3 seeds (``benchmarks/recipe.py``, table in
#: ``benchmarks/results/recipe_cpu.md``). The first is the engine's default optimiser. Every run
#: warms up linearly over ``warmup_epochs`` and then decays the rate to 0 on a cosine.
RECIPES = MappingProxyType({
    # Resolved above the old default (Adam 1e-3, no warm-up) in kNN and linear probe, highest kNN mean;
    # not resolved against the SGD recipes (see the table).
    "adam": MappingProxyType({"lr": 3e-3, "weight_decay": 1e-6, "warmup_epochs": 0.3}),
    # The SGD setting with the highest means of the sweep (lr 0.03, 0.1, 0.3), momentum 0.9.
    "sgd": MappingProxyType({"lr": 0.03, "weight_decay": 5e-4, "warmup_epochs": 0.3}),
})
OPTIMIZERS = tuple(RECIPES)
# Not run hyperparameters: the engine needs mean-reduced losses on normalised embeddings, and
# hard-negative selection is configured through the hard losses' own k/alpha.
_LOSS_FIXED_ARGS = ("reduction", "normalize", "hard_negatives")


def _check_int(name: str, value: Any, minimum: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}{' or None' if optional else ''}, "
                         f"got {value!r}")


def _check_number(name: str, value: Any, low: float, high: float = math.inf,
                  low_open: bool = False, high_open: bool = True) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)


def loss_arguments(name: str) -> dict[str, inspect.Parameter]:
    """The constructor arguments a run may set for loss ``name`` (not reduction/normalize)."""
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {name!r}")
    return {p.name: p for p in inspect.signature(LOSSES[name]).parameters.values()
            if p.name not in _LOSS_FIXED_ARGS}


def canonical_loss_args(name: str, args: dict) -> dict:
    """``args`` completed with the loss's defaults, ints given for floats made floats.

    So ``{}``, ``{"temperature": 0.1}`` and ``{"temperature": 0.1}`` written as ``1e-1`` all hash
    the same, and the loss is built once here to reject bad values before any work starts.
    """
    params = loss_arguments(name)
    unknown = sorted(set(args) - set(params))
    if unknown:
        raise ValueError(f"loss_args: {name!r} takes {sorted(params) or 'no arguments'}, "
                         f"got {unknown}")
    full = {}
    for key, param in params.items():
        value = args.get(key, param.default)
        if "float" in str(param.annotation) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        full[key] = value
    make_loss(name, **full)
    return full


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run's result (and so its hash). Runtime choices (device,
    progress bars, where the data lives) are arguments of :func:`train_or_load` instead."""

    # data
    dataset: str = "fashion-mnist"
    n_train: int | None = None       # stratified training subset (None: all)
    classes: tuple[int, ...] | None = None  # only these classes (relabelled 0..), train and test
    # model
    arch: str = "small-cnn"
    width: int = 32                  # small-cnn only
    proj_dim: int = 128
    # objective
    objective: str = "contrastive"   # or "cross-entropy": a linear classifier on z (supervised baseline)
    loss: str = "infonce"            # contrastive only (a cross-entropy run fixes it to the default)
    loss_args: dict = field(default_factory=dict)
    mode: str = "simclr"
    classes_per_batch: int | None = None  # supervised: classes in each batch (None: all of them)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # optimisation
    epochs: int = 10
    batch_size: int = 256            # images per batch (two views each)
    optimizer: str = OPTIMIZERS[0]
    lr: float | None = None          # peak learning rate; None: the optimizer's recipe (RECIPES)
    momentum: float = 0.9            # sgd only
    weight_decay: float | None = None  # None: the optimizer's recipe
    warmup_epochs: float | None = None  # linear warm-up (cut short if the run is shorter), then cosine to 0; None: recipe
    precision: str = "auto"          # "fp32" | "bf16" autocast; "auto": bf16 where the device has it natively
    seed: int = 0
    # evaluation
    knn_k: int = 200
    eval_train_size: int | None = None   # kNN bank / probe training set (None: the whole train split)
    monitor_train_size: int = 5000       # per-epoch kNN monitor: bank size ...
    monitor_test_size: int = 1000        # ... and held-out queries
    probe_iters: int = 300
    monitors: tuple[str, ...] = ()       # per-epoch extras (clmini.engine.hooks.MONITORS), e.g. "class-geometry"

    def __post_init__(self):
        def canon(name, value):  # frozen: normalised values are written through object.__setattr__
            object.__setattr__(self, name, value)

        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {tuple(OBJECTIVES)}, got {self.objective!r}")
        if self.objective == "cross-entropy":
            if self.mode != "supervised":
                raise ValueError("objective cross-entropy needs mode supervised (labels = classes)")
            # The loss does not enter such a run: one canonical value, so every contrastive
            # variant of a base config shares one baseline.
            canon("loss", TrainConfig.loss)
            canon("loss_args", {})
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name, minimum, optional in (("n_train", 2, True), ("width", 1, False), ("proj_dim", 1, False),
                                        ("epochs", 0, False), ("batch_size", 2, False), ("seed", 0, False),
                                        ("knn_k", 1, False), ("eval_train_size", 1, True),
                                        ("monitor_train_size", 1, False), ("monitor_test_size", 1, False),
                                        ("probe_iters", 1, False)):
            _check_int(name, getattr(self, name), minimum, optional)
        if self.classes is not None:
            classes = self.classes
            if isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
                raise ValueError(f"classes must be a sequence of class indices or None, got {classes!r}")
            classes = tuple(classes)
            for c in classes:
                _check_int("classes entry", c, 0)
            if len(set(classes)) < 2:
                raise ValueError(f"classes must name at least 2 distinct classes, got {list(classes)}")
            canon("classes", tuple(sorted(set(classes))))  # (6, 0), [0, 6, 6] and (0, 6) are one run
        _check_int("classes_per_batch", self.classes_per_batch, 2, optional=True)
        if self.classes_per_batch is not None and self.mode != "supervised":
            raise ValueError("classes_per_batch needs mode='supervised' (class-balanced batches)")
        recipe = RECIPES[self.optimizer]  # unset settings come from it: set or implied, one hash
        for name in recipe:
            if getattr(self, name) is None:
                canon(name, recipe[name])
        canon("lr", _check_number("lr", self.lr, 0, low_open=True))
        canon("momentum", _check_number("momentum", self.momentum, 0, 1))
        canon("weight_decay", _check_number("weight_decay", self.weight_decay, 0))
        canon("warmup_epochs", _check_number("warmup_epochs", self.warmup_epochs, 0))
        # Resolved here, for the device "auto" picks on this machine: the config (and so the hash, the
        # cache and what the run records) says what was computed, and a bf16 run is never reused as fp32.
        canon("precision", resolve_precision(self.precision, resolve_device("auto")))
        if isinstance(self.augment, dict):
            canon("augment", AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v
                                              for k, v in self.augment.items()}))
        if not isinstance(self.augment, AugmentConfig):
            raise ValueError(f"augment must be an AugmentConfig, got {type(self.augment).__name__}")
        if not isinstance(self.loss_args, dict):
            raise ValueError(f"loss_args must be a dict, got {type(self.loss_args).__name__}")
        canon("loss_args", canonical_loss_args(self.loss, self.loss_args))
        if isinstance(self.monitors, str) or not hasattr(self.monitors, "__iter__"):
            raise ValueError(f"monitors must be a sequence of names from {sorted(MONITORS)}, got {self.monitors!r}")
        unknown = [m for m in self.monitors if m not in MONITORS]
        if unknown:
            raise ValueError(f"monitors: unknown {unknown}; valid: {sorted(MONITORS)}")
        canon("monitors", tuple(dict.fromkeys(self.monitors)))  # in the given order, once each

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; valid: {sorted(names)}")
        return cls(**values)

    @property
    def hash(self) -> str:
        return rundir.config_hash({"engine_version": ENGINE_VERSION, "config": self.to_dict()})
