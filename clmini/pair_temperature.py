"""A temperature per pair (DySTreSS, Manna et al.): where it acts, what it does to the penalties.

:class:`clmini.losses.CosineTemperature` gives every pair the temperature
``tau(s) = tau_min + (tau_max - tau_min) sin^2(pi s / 2)`` of its own similarity. This module holds
what chapter 3 needs around it:

- :func:`negatives_only_anchor_loss`: one anchor's loss in the ablation "``tau(s)`` on the
  negatives only" (:class:`clmini.losses.DySTreSS` with ``positive_temperature``), as SymPy;
- :func:`applied_temperatures` and :func:`temperature_histograms`: the temperatures a network's
  batch of augmented views actually receives, positive and negative pairs apart;
- :func:`relative_penalty` (SymPy) and :func:`penalty_density` (NumPy): Wang & Liu's relative
  penalty when each negative has its own temperature. With ``tau`` detached, negative ``j``'s
  gradient is ``P_j / tau_j``, so its share among the negatives is
  ``r_j = (e^{s_j/tau_j} / tau_j) / sum_k (e^{s_k/tau_k} / tau_k)`` **[derived]**: the ``1/tau_j``
  that cancels for a fixed ``tau`` stays.
"""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import sympy as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clmini import symbolic
from clmini.augment import AugmentConfig, augment
from clmini.losses import CosineTemperature, pair_masks, two_views

__all__ = ["negatives_only_anchor_loss",
           "applied_temperatures", "temperature_histograms",
           "DystressPenalty", "relative_penalty", "penalty_density", "intervals"]


# --------------------------------------------------------------------------- the ablation's formula
def negatives_only_anchor_loss(n_neg: int = 3) -> tuple[sp.Expr, tuple[sp.Symbol, ...], sp.Symbol]:
    """One anchor's loss when only the negatives get ``tau(s)`` (``DySTreSS(positive_temperature=tau_p)``).

    The explicit function (``tau`` not detached); returns ``(expr, (s_p1, s_n1, ...), tau_p)`` with
    ``tau_p`` the positive's fixed temperature.
    """
    tau_p = sp.Symbol("tau_p", positive=True)
    (positive,), negatives = symbolic.positive_similarities(1), symbolic.negative_similarities(n_neg)
    numerator = sp.exp(positive / tau_p)
    denominator = numerator + sp.Add(*(sp.exp(symbolic.dystress_logit(x)) for x in negatives))
    return -sp.log(numerator / denominator), (positive, *negatives), tau_p


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
    ``[tau_min, tau_max]``, in the format of :func:`clmini.evaluate.similarity_histograms`
    (``edges``, then one density per key; each integrates to 1)."""
    if not tau_max > tau_min:
        raise ValueError(f"need tau_max > tau_min for a histogram, got {tau_min}, {tau_max}")
    width = (tau_max - tau_min) / bins
    result = {"edges": torch.linspace(tau_min, tau_max, bins + 1).tolist()}
    for key, values in temperatures.items():
        counts = torch.histc(values.float(), bins=bins, min=tau_min, max=tau_max)
        result[key] = (counts / counts.sum().clamp(min=1) / width).tolist()
    return result


# --------------------------------------------------------------------------- relative penalty
@dataclass(frozen=True)
class DystressPenalty:
    """The relative penalty of negative ``s_n1`` under per-pair temperatures (detached).

    ``derived``: ``dL/ds_n1 / sum_k dL/ds_nk`` from :func:`clmini.symbolic.dystress_gradients`;
    ``form``: ``(e^{s_n1/tau_n1}/tau_n1) / sum_k (e^{s_nk/tau_nk}/tau_nk)``; they are equal.
    ``fixed``: the same ratio when every ``tau_x`` is one ``tau`` (Wang & Liu eq. 5).
    """

    derived: sp.Expr
    form: sp.Expr
    fixed: sp.Expr


@functools.lru_cache(maxsize=None)
def relative_penalty(n_neg: int = 2) -> DystressPenalty:
    """The relative penalty ``r_1`` of the first negative with a temperature per pair **[derived]**."""
    gradients = symbolic.dystress_gradients(n_neg)
    negatives = symbolic.negative_similarities(n_neg)
    total = sp.Add(*(gradients.detached_form[x] for x in negatives))
    derived = sp.simplify(gradients.detached_form[negatives[0]] / total)
    temperature = {x: sp.Symbol(f"tau_{x.name[2:]}", positive=True) for x in negatives}
    weight = {x: sp.exp(x / temperature[x]) / temperature[x] for x in negatives}
    form = weight[negatives[0]] / sp.Add(*weight.values())
    fixed = sp.simplify(form.subs({t: symbolic.tau for t in temperature.values()}))
    return DystressPenalty(derived, form, fixed)


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
