"""Contrastive pre-training with any clmini loss: cached by config hash, resumable after a kill.

:func:`train_or_load` is the one entry point: a :class:`TrainConfig` hashes to
``<runs_dir>/<hash>/`` (:mod:`clmini.runs`); a complete run there is loaded, a partial one resumes
from its last checkpoint, a corrupt one is redone.

Two modes share one loop. ``simclr``: each batch holds two augmented views of ``B`` images and the
labels are instance ids, so each view's only positive is its twin. ``supervised``: the same two
views, labels are classes and batches are class-balanced (SupCon/SINCERE setups).

Every random choice is drawn from a generator seeded by ``(seed, epoch[, step])``: the batch order
of an epoch, the augmentations of a step. Nothing depends on how the process got to that step, so a
run resumed from a checkpoint in the middle of an epoch continues exactly where the killed one
would have gone, and on the CPU ends with the same numbers.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from clmini import runs
from clmini.augment import AugmentConfig, augment
from clmini.data import DATASETS, ImageData, class_balanced_batches, load_dataset
from clmini.evaluate import (autocast, encode, evaluate_representation, knn_accuracy, linear_probe,
                             nearest_class_similarities, tolerance, uniformity)
from clmini.losses import LOSSES, CosineTemperature, make_loss, pair_masks
from clmini.models import ARCHS, ContrastiveNet, build_model

# Part of every run's hash. Bump it when a change alters what a run computes (the training loop,
# augmentations, models, evaluation, or the math of a loss), so cached runs are not reused.
ENGINE_VERSION = 1

MODES = ("simclr", "supervised")
OPTIMIZERS = ("sgd", "adam")
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
    loss: str = "infonce"
    loss_args: dict = field(default_factory=dict)
    mode: str = "simclr"
    classes_per_batch: int | None = None  # supervised: classes in each batch (None: all of them)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # optimisation (SGD with momentum, lr 0.3, weight decay 5e-4, warm-up 0.5 epochs reaches a
    # better probe than these Adam defaults in the quick regime; the defaults stay as they are
    # because cached runs and chapter configs are keyed on them)
    epochs: int = 10
    batch_size: int = 256            # images per batch (two views each)
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9            # sgd only
    weight_decay: float = 1e-6
    warmup_epochs: float = 0.0       # linear warm-up (cut short if the run is shorter), then cosine to 0
    seed: int = 0
    # evaluation
    knn_k: int = 200
    eval_train_size: int | None = None   # kNN bank / probe training set (None: the whole train split)
    monitor_train_size: int = 5000       # per-epoch kNN monitor: bank size ...
    monitor_test_size: int = 1000        # ... and held-out queries
    probe_iters: int = 300

    def __post_init__(self):
        def canon(name, value):  # frozen: normalised values are written through object.__setattr__
            object.__setattr__(self, name, value)

        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
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
        canon("lr", _check_number("lr", self.lr, 0, low_open=True))
        canon("momentum", _check_number("momentum", self.momentum, 0, 1))
        canon("weight_decay", _check_number("weight_decay", self.weight_decay, 0))
        canon("warmup_epochs", _check_number("warmup_epochs", self.warmup_epochs, 0))
        if isinstance(self.augment, dict):
            canon("augment", AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v
                                              for k, v in self.augment.items()}))
        if not isinstance(self.augment, AugmentConfig):
            raise ValueError(f"augment must be an AugmentConfig, got {type(self.augment).__name__}")
        if not isinstance(self.loss_args, dict):
            raise ValueError(f"loss_args must be a dict, got {type(self.loss_args).__name__}")
        canon("loss_args", canonical_loss_args(self.loss, self.loss_args))

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
        config = self.to_dict()
        # Fields added after runs were cached leave the hash alone at their default, so those
        # runs (which computed exactly that default) stay valid.
        for name, default in _LATER_FIELDS.items():
            if config[name] == default:
                del config[name]
        return runs.config_hash({"engine_version": ENGINE_VERSION, "config": config})


# Fields added to TrainConfig after its first release, with the default that reproduces the old runs.
_LATER_FIELDS = {"classes": None, "classes_per_batch": None}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when present, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: CUDA was requested but is not available (use 'auto' or 'cpu')")
    return device


def derived_seed(*parts: int) -> int:
    """A 63-bit seed from integers: distinct streams for each (seed, epoch, step)."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up over ``warmup_epochs`` (at most the whole run), then cosine decay to 0."""
    total = config.epochs * steps_per_epoch
    warmup = min(round(config.warmup_epochs * steps_per_epoch), total)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return config.lr * 0.5 * (1 + math.cos(math.pi * progress))


# Per-step statistics summed over an epoch (kept as one device tensor: no sync per step).
_STEP_STATS = ("loss", "pos_sim", "neg_sim", "tau_pos", "tau_neg")


class Trainer:
    """The training state of one run and the loop that advances it.

    ``epoch``/``step`` is the position of the next step; :meth:`state_dict` captures everything
    needed to continue from there (weights, optimiser, the epoch's running sums, the history).
    """

    def __init__(self, config: TrainConfig, data: ImageData, device: torch.device):
        """``data``: the whole data set on ``device``. Training uses its ``n_train`` subset (of
        ``config.classes`` when given); monitoring and the final evaluation use the whole train
        split (of those classes) as labelled reference."""
        if config.classes is not None:
            data = data.select_classes(config.classes)
        self.config, self.data, self.device = config, data, device
        self.train_data = data if config.n_train is None else data.subset(n_train=config.n_train, seed=config.seed)
        mean, std = data.channel_stats()
        # Initialised on the CPU under the run's seed, then moved: the same start on any device.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = build_model(config.arch, data.channels, mean, std, config.proj_dim, config.width)
        self.model: ContrastiveNet = model.to(device)
        self.loss_fn = make_loss(config.loss, **config.loss_args)
        params = self.model.parameters()
        if config.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                             weight_decay=config.weight_decay)
        else:
            self.optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
        self.steps_per_epoch = len(self.epoch_batches(0))
        # Fixed stratified subsets (seed 0, not the run's): every run is monitored on the same images.
        self.monitor = data.subset(min(config.monitor_train_size, data.train_y.numel()),
                                   min(config.monitor_test_size, data.test_y.numel()), seed=0)
        self.epoch, self.step = 0, 0
        self.sums = torch.zeros(len(_STEP_STATS), dtype=torch.float64, device=device)
        self.history: list[dict] = []
        self.train_seconds = 0.0

    # -- batches ------------------------------------------------------------------------------
    def epoch_batches(self, epoch: int) -> Tensor:
        """Indices ``[steps, batch]`` of the training images of each step of ``epoch``."""
        config, labels = self.config, self.train_data.train_y.cpu()
        generator = torch.Generator().manual_seed(derived_seed(config.seed, epoch))
        if config.mode == "supervised":
            batches = class_balanced_batches(labels, config.batch_size, generator, config.classes_per_batch)
        else:
            n = labels.numel()
            if config.batch_size > n:
                raise ValueError(f"batch_size {config.batch_size} exceeds the {n} training images")
            steps = n // config.batch_size  # drop the incomplete last batch
            batches = torch.randperm(n, generator=generator)[:steps * config.batch_size]
            batches = batches.view(steps, config.batch_size)
        return batches.to(self.device)

    def batch_labels(self, index: Tensor) -> Tensor:
        """Labels of the ``2B`` views ``[view 1 of all images, view 2 of all images]``."""
        ids = self.train_data.train_y[index] if self.config.mode == "supervised" else \
            torch.arange(index.numel(), device=self.device)
        return torch.cat([ids, ids])

    # -- the loop ------------------------------------------------------------------------------
    def train_step(self, index: Tensor, generator: torch.Generator, lr: float) -> None:
        images = self.train_data.train_x[index]
        views = augment(torch.cat([images, images]), generator, self.config.augment)
        labels = self.batch_labels(index)
        loss, z = self.objective(views, labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss.item()} at epoch {self.epoch + 1}, step {self.step}: lower lr "
                f"(now {lr:g}) or check the loss parameters {self.config.loss_args}")
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.sums += self.step_statistics(loss.detach(), z.detach().float(), labels)

    def objective(self, views: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """The loss of a batch of views and their projections ``z`` (a subclass may train
        another objective through the same loop, e.g. a cross-entropy baseline)."""
        with autocast(self.device):
            z = self.model(views)
        return self.loss_fn(z.float(), labels), z  # the loss runs in float32 whatever autocast did

    def step_statistics(self, loss: Tensor, z: Tensor, labels: Tensor) -> Tensor:
        """Loss, mean positive/negative similarity and (DySTreSS) mean temperatures of a batch."""
        z = torch.nn.functional.normalize(z, dim=1)
        sim = z @ z.T
        positives, negatives = pair_masks(labels)
        stats = [loss, sim[positives].mean(), sim[negatives].mean()]
        logit_map = getattr(self.loss_fn, "logit_map", None)
        if isinstance(logit_map, CosineTemperature):
            tau = logit_map.temperature(sim)
            fixed = getattr(self.loss_fn, "positive_logit_map", None)  # schedule on the negatives only
            tau_pos = tau[positives].mean() if fixed is None else torch.tensor(fixed.temperature, device=z.device)
            stats += [tau_pos, tau[negatives].mean()]
        else:
            stats += [torch.zeros((), device=z.device)] * 2
        return torch.stack(stats).double()

    def fit(self, checkpoint: Callable[[], None] = lambda: None, checkpoint_due: Callable[[], bool] =
            lambda: False, progress: bool = True) -> None:
        """Train from the current position to the end, calling ``checkpoint`` when it is due
        (between steps) and at the end of every epoch."""
        # tqdm.auto picks the notebook widget when it can and warns when ipywidgets is missing:
        # only ask for it when a bar is wanted (notebooks pass progress=False).
        if progress:
            from tqdm.auto import tqdm
        else:
            from tqdm import tqdm

        config = self.config
        if not self.history:
            self.history.append(self.monitor_record(0, {}))  # epoch 0: the random initialisation
        total = config.epochs * self.steps_per_epoch
        bar = tqdm(total=total, initial=self.epoch * self.steps_per_epoch + self.step,
                   disable=not progress, desc=f"{config.loss} {config.hash}", unit="step",
                   dynamic_ncols=True)
        self.model.train()
        while self.epoch < config.epochs:
            batches = self.epoch_batches(self.epoch)
            while self.step < self.steps_per_epoch:
                start = time.perf_counter()
                generator = torch.Generator().manual_seed(  # CPU: augment draws its parameters there
                    derived_seed(config.seed, self.epoch, self.step))
                global_step = self.epoch * self.steps_per_epoch + self.step
                self.train_step(batches[self.step], generator,
                                learning_rate(config, global_step, self.steps_per_epoch))
                self.step += 1
                self.train_seconds += time.perf_counter() - start
                bar.update()
                if self.step < self.steps_per_epoch and checkpoint_due():
                    checkpoint()
            self.end_epoch()
            bar.set_postfix(loss=f"{self.history[-1]['loss']:.4f}",
                            knn=f"{self.history[-1]['knn_acc']:.3f}")
            checkpoint()
        bar.close()

    def end_epoch(self) -> None:
        means = (self.sums / self.steps_per_epoch).tolist()
        stats = dict(zip(_STEP_STATS, means))
        if not isinstance(getattr(self.loss_fn, "logit_map", None), CosineTemperature):
            del stats["tau_pos"], stats["tau_neg"]
        stats["lr"] = learning_rate(self.config, (self.epoch + 1) * self.steps_per_epoch - 1,
                                    self.steps_per_epoch)
        self.history.append(self.monitor_record(self.epoch + 1, stats))
        self.epoch, self.step = self.epoch + 1, 0
        self.sums.zero_()

    def monitor_record(self, epoch: int, stats: dict) -> dict:
        """One history record: the epoch's training statistics and a held-out check.

        Supervised runs also record the class geometry of the projections ``z`` (SINCERE's learning
        trajectories): the medians of the similarity to the nearest same-class and nearest
        other-class bank embedding and their difference, the separation; and 1-NN, 5-NN and
        linear-probe accuracy of the features ``h``.
        """
        m = self.monitor
        train_h, train_z = encode(self.model, m.train_x)
        test_h, test_z = encode(self.model, m.test_x)
        knn = knn_accuracy(train_h, m.train_y, test_h, m.test_y, k=min(self.config.knn_k, len(m.train_y)))
        record = {"epoch": epoch, **stats, "knn_acc": knn, "uniformity": uniformity(test_z),
                  "tolerance": tolerance(test_z, m.test_y)}
        if self.config.mode == "supervised":
            same, other = nearest_class_similarities(train_z, m.train_y, test_z, m.test_y)
            record.update(
                nearest_same_sim=same, nearest_other_sim=other, separation=abs(same - other),
                knn1_acc=knn_accuracy(train_h, m.train_y, test_h, m.test_y, k=1),
                knn5_acc=knn_accuracy(train_h, m.train_y, test_h, m.test_y, k=min(5, len(m.train_y))),
                linear_probe_acc=linear_probe(train_h, m.train_y, test_h, m.test_y,
                                              max_iter=self.config.probe_iters))
        return record

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"config_hash": self.config.hash, "epoch": self.epoch, "step": self.step,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "sums": self.sums.cpu(), "history": self.history, "train_seconds": self.train_seconds}

    def load_state_dict(self, state: dict) -> None:
        if state.get("config_hash") != self.config.hash:
            raise runs.CorruptRun(f"checkpoint belongs to run {state.get('config_hash')}, "
                                  f"not {self.config.hash}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.sums = state["sums"].to(self.device)
        self.history = state["history"]
        self.train_seconds = state["train_seconds"]


@dataclass
class Run:
    """A finished run: its directory, config, per-epoch history and final metrics."""

    dir: Path
    config: TrainConfig
    history: list[dict]
    metrics: dict

    def model(self, device: str | torch.device = "cpu") -> ContrastiveNet:
        """The trained network (weights loaded with ``weights_only=True``)."""
        state = runs.torch_load(self.dir / runs.WEIGHTS)
        channels = state["standardize.mean"].shape[1]
        model = build_model(self.config.arch, channels, [0.0] * channels, [1.0] * channels,
                            self.config.proj_dim, self.config.width)
        model.load_state_dict(state)  # also restores the standardisation buffers
        return model.to(resolve_device(device)).eval()


def load_run(run_dir: str | Path, expected_hash: str | None = None) -> Run:
    """Load a complete run; :class:`clmini.runs.CorruptRun` if it is partial or damaged."""
    run_dir = Path(run_dir)
    metrics = runs.verify_complete(run_dir, expected_hash)
    config = TrainConfig.from_dict(runs.read_json(run_dir / runs.CONFIG)["config"])
    if config.hash != metrics["config_hash"]:
        raise runs.CorruptRun(f"{run_dir}: config.json does not hash to {metrics['config_hash']} "
                              f"(written by another engine version?)")
    return Run(run_dir, config, runs.read_json(run_dir / runs.HISTORY), metrics)


def default_runs_dir() -> Path:
    """``$CLMINI_RUNS`` if set, else ``runs`` (relative to the working directory)."""
    return Path(os.environ.get("CLMINI_RUNS") or "runs")


def train_or_load(config: TrainConfig, runs_dir: str | Path | None = None, *, device: str | torch.device = "auto",
                  root: str | Path | None = None, download: bool = False, progress: bool = True,
                  checkpoint_every: float = 60.0, data: ImageData | None = None) -> Run:
    """The run for ``config``: loaded if complete, otherwise trained (resuming if possible).

    ``runs_dir``: the run cache (default: :func:`default_runs_dir`).
    ``checkpoint_every``: seconds between mid-epoch checkpoints (every epoch end is one too).
    ``data``: an already loaded data set to use instead of loading ``config.dataset`` (it must
    be that data set, whole: the ``n_train`` subset is taken here).
    """
    run_dir = Path(runs_dir or default_runs_dir()) / config.hash
    run_dir.mkdir(parents=True, exist_ok=True)
    with runs.locked(run_dir):
        try:
            return load_run(run_dir, config.hash)
        except runs.CorruptRun as err:
            if (run_dir / runs.METRICS).exists():
                runs.discard(run_dir, (runs.METRICS, runs.WEIGHTS, runs.HISTORY), str(err))
        device = resolve_device(device)
        runs.atomic_write_json(run_dir / runs.CONFIG, {"hash": config.hash, "engine_version": ENGINE_VERSION,
                                                       "config": config.to_dict()})
        if data is None:
            data = load_dataset(config.dataset, root, download=download, device=device)
        elif data.name != config.dataset:
            raise ValueError(f"data is {data.name!r} but the config says {config.dataset!r}")
        trainer = Trainer(config, data.to(device), device)
        _resume(trainer, run_dir)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels
        trainer.fit(lambda: runs.atomic_torch_save(run_dir / runs.CHECKPOINT, trainer.state_dict()),
                    runs.periodic(checkpoint_every, time.monotonic), progress)
        _finish(trainer, run_dir, device)
    return load_run(run_dir, config.hash)


def _resume(trainer: Trainer, run_dir: Path) -> None:
    path = run_dir / runs.CHECKPOINT
    if not path.exists():
        return
    try:
        trainer.load_state_dict(runs.torch_load(path))
    except (runs.CorruptRun, KeyError, RuntimeError, ValueError) as err:
        runs.discard(run_dir, (runs.CHECKPOINT,), f"unusable checkpoint ({err})")


def _finish(trainer: Trainer, run_dir: Path, device: torch.device, key: str | None = None,
            extra: Callable[[], dict] | None = None) -> None:
    """Evaluate, write weights, history and (last) metrics; drop the checkpoint.

    ``key``: the run's hash when it is not ``trainer.config.hash`` (another objective);
    ``extra``: more metrics of that objective, measured after the common evaluation.
    """
    config = trainer.config
    start = time.perf_counter()
    metrics = evaluate_representation(
        trainer.model, trainer.data, knn_k=config.knn_k, eval_train_size=config.eval_train_size,
        probe_iters=config.probe_iters, augment_config=config.augment)
    if extra is not None:
        metrics.update(extra())
    runs.atomic_torch_save(run_dir / runs.WEIGHTS, trainer.model.state_dict())
    runs.atomic_write_json(run_dir / runs.HISTORY, trainer.history)
    metrics.update(
        config_hash=key or config.hash, engine_version=ENGINE_VERSION,
        final_loss=trainer.history[-1].get("loss"), epochs_trained=trainer.epoch,
        steps_per_epoch=trainer.steps_per_epoch, device=str(device),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        torch_version=torch.__version__, train_seconds=trainer.train_seconds,
        eval_seconds=time.perf_counter() - start, sha256=runs.digests(run_dir))
    runs.atomic_write_json(run_dir / runs.METRICS, metrics)
    (run_dir / runs.CHECKPOINT).unlink(missing_ok=True)
