"""The training loop of one run: batches, views, the objective, the schedule, per-epoch monitoring.

Two modes share one loop. ``simclr``: each batch holds two augmented views of ``B`` images and the
labels are instance ids, so each view's only positive is its twin. ``supervised``: the same two
views, labels are classes and batches are class-balanced (SupCon/SINCERE setups).

Every random choice is drawn from a generator seeded by ``(seed, epoch[, step])``: the batch order
of an epoch, the augmentations of a step. Nothing depends on how the process got to that step, so a
run resumed from a checkpoint in the middle of an epoch continues exactly where the killed one
would have gone, and on the CPU ends with the same numbers.

The trainer knows no loss and no chapter: what it minimises is an
:class:`~clmini.engine.objectives.Objective`, what it records beyond loss, similarities, kNN,
uniformity and tolerance comes through the hooks of :mod:`clmini.engine.hooks`.
"""
from __future__ import annotations

import hashlib
import math
import time
from typing import Callable

import torch
from torch import Tensor

from clmini.engine import distributed, rundir
from clmini.engine.augment import augment
from clmini.engine.config import TrainConfig
from clmini.engine.data import ImageData, class_balanced_batches
from clmini.engine.hooks import MONITORS, Batch, Monitor
from clmini.engine.models import ContrastiveNet, build_model
from clmini.engine.objectives import make_objective
from clmini.losses import pair_masks
from clmini.metrics import autocast, encode, knn_accuracy, tolerance, uniformity


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


class Trainer:
    """The training state of one run and the loop that advances it.

    ``epoch``/``step`` is the position of the next step; :meth:`state_dict` captures everything
    needed to continue from there (weights, optimiser, the epoch's running sums, the history).
    """

    def __init__(self, config: TrainConfig, data: ImageData, device: torch.device, parallel: bool = True):
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
        # bf16 convolutions run faster on channels-last tensors (oneDNN, cuDNN: 6-12 % per step
        # measured on the CPU); float32 ones do not (5 % slower), so they stay contiguous.
        self.memory_format = torch.channels_last if config.precision == "bf16" else torch.contiguous_format
        self.model: ContrastiveNet = model.to(device, memory_format=self.memory_format)
        # Several processes (torchrun): each trains on its share of every global batch, batch norm
        # over the global batch, gradients averaged by DDP (clmini.engine.distributed derives why the
        # result is the single-process one). The number of processes is not part of the config.
        self.world = distributed.world_size() if parallel else 1
        self.parallel: torch.nn.Module = self.model
        if self.world > 1:
            if config.batch_size % self.world:
                raise ValueError(f"batch_size {config.batch_size} must be a multiple of the {self.world} processes")
            self.model = distributed.sync_batch_norm(self.model, device)
            self.parallel = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.objective = make_objective(config, data.n_classes).to(device)
        # The network's parameters, then the objective's own (a classifier, a learned temperature), if
        # any; scalar ones (a learned temperature) without weight decay, as CLIP trains its logit scale.
        params = [{"params": list(self.model.parameters())}]
        own = list(self.objective.parameters())
        if any(p.dim() > 0 for p in own):
            params.append({"params": [p for p in own if p.dim() > 0]})
        if any(p.dim() == 0 for p in own):
            params.append({"params": [p for p in own if p.dim() == 0], "weight_decay": 0.0})
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
        self.sums: dict[str, Tensor] = {}  # per-step statistics summed over the epoch (on the device: no sync per step)
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
        if self.world > 1:  # every process draws the global batch and its views; each keeps its share
            mine = self.share(index.numel())
            views, labels = views[mine], labels[mine]
        with autocast(self.device, self.config.precision):
            z = self.parallel(views.contiguous(memory_format=self.memory_format))
            outputs = self.objective(z)
        try:
            loss = self.objective.loss(outputs, labels)  # float32, whatever autocast did
        except ValueError:
            # The loss checks its input already: only when it refuses is it worth asking whether the
            # network itself diverged (no extra pass over z, no extra sync, on the steps that work).
            if not bool(torch.isfinite(z).all()):
                raise FloatingPointError(
                    f"run diverged at epoch {self.epoch + 1}, step {self.step}: the projections are "
                    f"NaN or inf; lower lr (now {lr:g})") from None
            raise
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss.item()} at epoch {self.epoch + 1}, step {self.step}: lower lr "
                f"(now {lr:g}) or check the loss parameters {self.config.loss_args}")
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients_(self.objective.parameters())  # DDP averages the network's
        self.optimizer.step()
        for name, value in self.step_statistics(loss.detach(), z.detach().float(), labels).items():
            self.sums[name] = self.sums[name] + value if name in self.sums else value

    def share(self, n_images: int) -> Tensor:
        """This process's rows of a global batch of ``n_images`` images' two views: its slice of each view."""
        if n_images % self.world:
            raise ValueError(f"a batch of {n_images} images cannot be split over {self.world} processes")
        mine = torch.arange(n_images // self.world, device=self.device) + distributed.rank() * (n_images // self.world)
        return torch.cat([mine, mine + n_images])

    def step_statistics(self, loss: Tensor, z: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Loss and mean positive/negative similarity of a batch, and what the objective adds
        (float64 0-d tensors); with several processes, of the global batch."""
        if self.world > 1:
            loss = distributed.gather(loss.reshape(1)).sum() / self.world  # the shares add up to K times the mean
            z, labels = distributed.gather(z), distributed.gather(labels)
        z = torch.nn.functional.normalize(z, dim=1)
        sim = z @ z.T
        positives, negatives = pair_masks(labels)
        stats = {"loss": loss, "pos_sim": sim[positives].mean(), "neg_sim": sim[negatives].mean()}
        stats.update(self.objective.batch_statistics(Batch(z, labels, sim, positives, negatives)))
        return {name: value.double() for name, value in stats.items()}

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
                self.objective.set_progress(global_step / total)  # the hook of a schedule (progress in [0, 1))
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
        stats = {name: float(total / self.steps_per_epoch) for name, total in self.sums.items()}
        stats["lr"] = learning_rate(self.config, (self.epoch + 1) * self.steps_per_epoch - 1,
                                    self.steps_per_epoch)
        self.history.append(self.monitor_record(self.epoch + 1, stats))
        self.epoch, self.step = self.epoch + 1, 0
        self.sums = {}

    def monitor_record(self, epoch: int, stats: dict) -> dict:
        """One history record: the epoch's training statistics and a held-out check (kNN accuracy
        of the features ``h``, uniformity and tolerance of the projections ``z``), plus what the
        config's monitors (:data:`clmini.engine.hooks.MONITORS`) measure on the same encodings."""
        m = self.monitor
        train_h, train_z = encode(self.model, m.train_x, precision=self.config.precision)
        test_h, test_z = encode(self.model, m.test_x, precision=self.config.precision)
        knn = knn_accuracy(train_h, m.train_y, test_h, m.test_y, k=min(self.config.knn_k, len(m.train_y)))
        record = {"epoch": epoch, **stats, "knn_acc": knn, "uniformity": uniformity(test_z),
                  "tolerance": tolerance(test_z, m.test_y)}
        encoded = Monitor(train_h, train_z, m.train_y, test_h, test_z, m.test_y, self.config.probe_iters)
        for name in self.config.monitors:
            record.update(MONITORS[name](encoded))
        return record

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"config_hash": self.config.hash, "epoch": self.epoch, "step": self.step,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "objective": self.objective.state_dict(),
                "sums": {name: value.cpu() for name, value in self.sums.items()},
                "history": self.history, "train_seconds": self.train_seconds}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (a :meth:`state_dict`); :class:`~clmini.engine.rundir.CorruptRun`
        if it is not one of this run's.

        The whole state is checked before any of it is applied. What only applying can find (a
        tensor of the wrong shape) raises too, with the trainer half-loaded: rebuild it then.
        """
        self._check_state(state)
        try:
            self.model.load_state_dict(state["model"])
            self.objective.load_state_dict(state["objective"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, TypeError, KeyError) as err:
            raise rundir.CorruptRun(f"checkpoint does not fit run {self.config.hash}: {err}") from None
        self.epoch, self.step = state["epoch"], state["step"]
        self.sums = {name: value.to(self.device) for name, value in state["sums"].items()}
        self.history = state["history"]
        self.train_seconds = float(state["train_seconds"])

    _STATE_TYPES = {"config_hash": str, "epoch": int, "step": int, "model": dict, "optimizer": dict,
                    "objective": dict, "sums": dict, "history": list, "train_seconds": (int, float)}

    def _check_state(self, state: dict) -> None:
        """:class:`~clmini.engine.rundir.CorruptRun` unless ``state`` has every entry, of its type,
        belongs to this run and points inside it."""
        if not isinstance(state, dict):
            raise rundir.CorruptRun(f"checkpoint is a {type(state).__name__}, not a dict")
        if state.get("config_hash") != self.config.hash:
            raise rundir.CorruptRun(f"checkpoint belongs to run {state.get('config_hash')}, "
                                  f"not {self.config.hash}")
        wrong = [key for key, kind in self._STATE_TYPES.items() if not isinstance(state.get(key), kind)]
        if wrong:
            raise rundir.CorruptRun(f"checkpoint entries missing or malformed: {wrong}")
        if not (0 <= state["epoch"] <= self.config.epochs and 0 <= state["step"] < self.steps_per_epoch):
            raise rundir.CorruptRun(f"checkpoint position epoch {state['epoch']}, step {state['step']} "
                                  f"is outside the run")
        if not all(isinstance(value, Tensor) for value in state["sums"].values()) or \
                not all(isinstance(record, dict) for record in state["history"]):
            raise rundir.CorruptRun("checkpoint sums or history malformed")
