"""Chapter 3 (DySTreSS, Manna et al.): where a temperature per pair acts, and the structure it leaves.

:class:`clmini.losses.CosineTemperature` gives every pair the temperature
``tau(s) = tau_min + (tau_max - tau_min) sin^2(pi s / 2)`` of its own similarity. This module holds
what chapter 3 needs around it on the tensor side (its SymPy side, the ablation's formula and the
relative penalty with a temperature per pair, is :mod:`clmini.symbolic.dystress`):

- :func:`applied_temperatures`, :func:`temperature_histograms` and :func:`applied_temperature_summary`: the temperatures a network's
  batch of augmented views actually receives, positive and negative pairs apart;
- :func:`penalty_density` (NumPy): Wang & Liu's relative penalty of negatives spread over a
  similarity grid when each has its own temperature, and :func:`intervals` to read it;
- :func:`structure_metrics`: local (kNN at several ``k``) and global (class centroids) structure.
"""
from __future__ import annotations

import copy
from typing import Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clmini.engine.augment import AugmentConfig, augment
from clmini.losses import CosineTemperature, pair_masks, two_views
from clmini.metrics import centroid_concentration, centroid_similarity, encode, knn_accuracies

__all__ = ["applied_temperatures", "applied_temperature_summary", "temperature_histograms", "penalty_density", "intervals", "structure_metrics"]


# --------------------------------------------------------------------------- applied temperatures
@torch.no_grad()
def applied_temperatures(model: nn.Module, images: Tensor, logit_map: CosineTemperature, seed: int = 0,
                         augment_config: AugmentConfig | None = None, training: bool = True) -> dict[str, Tensor]:
    """The temperatures ``tau(s)`` of every pair of one SimCLR batch, positives and negatives apart.

    ``images`` (uint8, ``[B, C, H, W]``) are augmented twice as the engine does (one generator
    seeded by ``seed`` for the ``2B`` views), embedded by ``model``, and the pairs of the
    ``2B x 2B`` similarity matrix get ``logit_map.temperature``. ``training=True`` embeds them as
    a training step does (batch-norm layers normalise with the batch's own statistics; a copy of
    the model is used, so its running statistics are left alone): the temperatures the loss
    would apply to this batch. ``training=False`` uses evaluation mode. Returns ``positive``
    (``2B`` values) and ``negative`` (``2B (2B - 2)``), each a 1-D CPU tensor.
    """
    if not isinstance(logit_map, CosineTemperature):
        raise ValueError(f"logit_map must be a CosineTemperature, got {type(logit_map).__name__}")
    generator = torch.Generator().manual_seed(seed)
    views = augment(torch.cat([images, images]), generator, augment_config or AugmentConfig())
    net = copy.deepcopy(model).train(training)
    z1, z2 = net(views).float().chunk(2)
    z, labels = two_views(z1, z2)
    z = F.normalize(z, dim=1)
    tau = logit_map.temperature(z @ z.T).cpu()
    positives, negatives = pair_masks(labels.cpu())
    return {"positive": tau[positives], "negative": tau[negatives]}


def temperature_histograms(temperatures: Mapping[str, Tensor], tau_min: float, tau_max: float,
                           bins: int = 40) -> dict[str, list[float]]:
    """Densities of ``temperatures`` (from :func:`applied_temperatures`) on ``bins`` bins over
    ``[tau_min, tau_max]``, in the format of :func:`clmini.metrics.similarity_histograms`
    (``edges``, then one density per key; each integrates to 1)."""
    if not tau_max > tau_min:
        raise ValueError(f"need tau_max > tau_min for a histogram, got {tau_min}, {tau_max}")
    width = (tau_max - tau_min) / bins
    result = {"edges": torch.linspace(tau_min, tau_max, bins + 1).tolist()}
    for key, values in temperatures.items():
        counts = torch.histc(values.float(), bins=bins, min=tau_min, max=tau_max)
        result[key] = (counts / counts.sum().clamp(min=1) / width).tolist()
    return result


def applied_temperature_summary(model: nn.Module, images: Tensor, logit_map: CosineTemperature, bins: int = 40,
                                seed: int = 0, augment_config: AugmentConfig | None = None) -> dict:
    """What a figure needs of :func:`applied_temperatures` (training mode): the histograms of
    :func:`temperature_histograms` over the logit map's ``[tau_min, tau_max]`` and the mean
    temperature of the positive and of the negative pairs (``{"histograms": ..., "mean": {...}}``),
    small enough to keep with a run's published record."""
    applied = applied_temperatures(model, images, logit_map, seed=seed, augment_config=augment_config)
    return {"histograms": temperature_histograms(applied, logit_map.tau_min, logit_map.tau_max, bins=bins),
            "mean": {key: float(values.mean()) for key, values in applied.items()}}


def penalty_density(s: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """The relative penalty of negatives spread evenly over the grid ``s``, as a density in ``s``.

    ``tau``: the temperature of each grid point (a constant array for InfoNCE, ``tau(s)`` for
    DySTreSS). Weights ``e^{s/tau} / tau`` (the detached gradient without the shared softmax
    denominator), normalised so that the trapezoid integral over ``s`` is 1.
    """
    s, tau = np.asarray(s, dtype=float), np.broadcast_to(np.asarray(tau, dtype=float), np.shape(s))
    log_w = s / tau - np.log(tau)
    w = np.exp(log_w - log_w.max())
    return w / np.trapezoid(w, s)


def intervals(x: np.ndarray, mask: np.ndarray) -> list[tuple[float, float]]:
    """The maximal runs of ``True`` in ``mask`` over the sorted grid ``x``, as ``(first, last)`` grid values
    (e.g. where one penalty density exceeds another)."""
    x, mask = np.asarray(x, dtype=float), np.asarray(mask, dtype=bool)
    if x.shape != mask.shape or x.ndim != 1:
        raise ValueError(f"x and mask must be 1-D of the same length, got {x.shape} and {mask.shape}")
    padded = np.concatenate([[False], mask, [False]]).astype(int)
    starts, ends = np.flatnonzero(np.diff(padded) == 1), np.flatnonzero(np.diff(padded) == -1) - 1
    return [(float(x[a]), float(x[b])) for a, b in zip(starts, ends)]


@torch.no_grad()
def structure_metrics(model: nn.Module, data, ks: Iterable[int] = (1, 10, 200), bank_size: int | None = None,
                      test_size: int | None = None, t: float = 0.1) -> dict:
    """Local and global structure of ``model`` on ``data`` (a :class:`~clmini.engine.data.ImageData`).

    kNN (:func:`clmini.metrics.knn_accuracies`) on encoder features, as the engine's kNN; centroid similarity and
    concentration on the normalised projections ``z`` of the test images, the space the loss
    shapes. ``bank_size``/``test_size``: stratified subsets (seed 0, the same for every model) of
    the train split (the kNN bank) and the test split; ``None``: all of it. Returns
    ``{"knn@k": ..., "centroid_sim": ..., "centroid_norm": ...}``.
    """
    subset = data.subset(n_train=bank_size if bank_size and bank_size < data.train_y.numel() else None,
                         n_test=test_size if test_size and test_size < data.test_y.numel() else None, seed=0)
    train_h, _ = encode(model, subset.train_x)
    test_h, test_z = encode(model, subset.test_x)
    result = {f"knn@{k}": acc for k, acc in knn_accuracies(train_h, subset.train_y, test_h, subset.test_y,
                                                        ks, t).items()}
    result["centroid_sim"] = centroid_similarity(test_z, subset.test_y)
    result["centroid_norm"] = centroid_concentration(test_z, subset.test_y)
    return result
