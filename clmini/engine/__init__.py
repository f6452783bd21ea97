"""The training engine: configs, data, augmentations, models, objectives, the trainer and its
hooks, the final evaluation, and the run cache.

- :mod:`~clmini.engine.config`: :class:`TrainConfig`, what determines a run (and its hash);
- :mod:`~clmini.engine.data`, :mod:`~clmini.engine.augment`, :mod:`~clmini.engine.models`: images on
  the device, batched augmentations, encoders and projection heads;
- :mod:`~clmini.engine.objectives`: what a run minimises (a registry loss, or the cross-entropy baseline);
- :mod:`~clmini.engine.hooks`: what is recorded per step and per epoch, beyond the engine's own;
- :mod:`~clmini.engine.trainer`: the loop; :mod:`~clmini.engine.evaluation`: the final metrics;
- :mod:`~clmini.engine.rundir` and :mod:`~clmini.engine.runs`: run directories written atomically,
  and :func:`train_or_load`, the one entry point; :mod:`~clmini.engine.store`: published results
  (a compact record per run, no weights), read before the run cache.

The engine knows no loss by name: losses come from :data:`clmini.losses.LOSSES` through the config.
"""
from clmini.engine.augment import AugmentConfig
from clmini.engine.config import ENGINE_VERSION, MODES, OPTIMIZERS, TrainConfig, canonical_loss_args, loss_arguments
from clmini.engine.data import DATASET_NAMES, DATASETS, ImageData, load_dataset
from clmini.engine.device import PRECISIONS, native_bf16, resolve_device, resolve_precision
from clmini.engine.hooks import MONITORS
from clmini.engine.models import ARCHS
from clmini.engine.objectives import OBJECTIVES
from clmini.engine.runs import NoWeights, Run, default_runs_dir, load_published, load_run, train_or_load
from clmini.engine.trainer import Trainer

__all__ = ["AugmentConfig", "TrainConfig", "ENGINE_VERSION", "MODES", "OPTIMIZERS", "OBJECTIVES", "MONITORS",
           "DATASETS", "DATASET_NAMES", "ARCHS", "ImageData", "load_dataset", "canonical_loss_args", "loss_arguments",
           "Trainer", "Run", "NoWeights", "load_run", "load_published", "train_or_load", "default_runs_dir",
           "resolve_device", "PRECISIONS",
           "native_bf16", "resolve_precision"]
