"""Chapter 4 (SupCon vs SINCERE): repulsion statistics, run names, per-seed values and metric sensitivity.

What chapter 4 needs that is neither a loss nor the engine:

* **Repulsion.** For anchor ``i`` and a same-class sample ``j``, ``g_ij = dL_i/ds_ij`` says what the
  loss does to their similarity: ``g_ij > 0`` means the loss *falls* as ``s_ij`` falls, so a
  gradient step pushes the two apart. :func:`anchor_gradients` takes ``g`` from the library's
  losses by autograd; :func:`closed_form_gradients` writes the same entries from the symbolic
  result (:func:`clmini.symbolic.same_class_gradients`): ``(1/tau)(q_ij - 1/|P|)`` for SupCon with
  ``q`` the softmax over all other samples, ``-(1 - P^(j)_j)/(|P| tau)`` for SINCERE with
  ``P^(j)`` the softmax over ``j`` and the negatives. :func:`repulsion_statistics` summarises
  ``g`` over the same-class pairs of a batch; :func:`clustered_batch` and :func:`embedding_batches`
  give batches of synthetic and of real embeddings; :func:`class_gap` measures on the latter how far
  the classes sit apart on average (a geometry measure that nearest neighbours do not saturate).
* **Tables of runs.** (:func:`clmini.study.experiments.seed_values` gives one configuration's metric
  per seed, in seed order, for :func:`clmini.study.verdicts.paired`.) :func:`sensitivities` and :func:`sensitivity_table` ask
  :func:`clmini.study.verdicts.sensitivity` of each metric whether it can rank the configurations;
  :func:`ranking_metric` picks the metric a claim is judged on. Nothing here compares two
  configurations: every verdict comes from :mod:`clmini.study.verdicts`.
* **The binary task.** :data:`CONFUSABLE_PAIRS`: the two-class task of each data set
  (:func:`binary_pair`).

The cross-entropy baseline "with the same encoder" is not here: it is an objective of the engine
(``TrainConfig(objective="cross-entropy")``), trained and cached like every run.
"""
from __future__ import annotations

import copy
import math
from typing import Iterable, Mapping, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clmini.engine import Run
from clmini.engine.augment import AugmentConfig, augment
from clmini.engine.data import ImageData, class_balanced_batches
from clmini.losses import SINCERE, ContrastiveLoss, Pairs
from clmini.metrics import autocast
from clmini.study import verdicts
from clmini.study.experiments import seed_values
from clmini.study.plots import baseline_band, metric_point

__all__ = [
    "anchor_gradients", "closed_form_gradients", "repulsion_statistics", "clustered_batch",
    "embedding_batches", "batch_repulsion", "positives_per_anchor", "sincere_bound_value",
    "class_gap", "same_class_spread", "is_cross_entropy", "run_label", "CONFUSABLE_PAIRS", "binary_pair",
    "sensitivities", "sensitivity_table", "ranking_metric", "configuration_points",
    "NEAREST_CEILING", "NEAREST_METRICS", "nearest_at_ceiling",
]


# =========================================================================== repulsion
def anchor_gradients(loss: ContrastiveLoss, sim: Tensor, labels: Tensor) -> Tensor:
    """``G[i, j] = dL_i/ds_ij`` of the library ``loss`` at similarity matrix ``sim`` (autograd).

    ``L_i`` is anchor ``i``'s loss (``reduction="none"``): it reads row ``i`` of ``sim`` only, so
    the gradient of ``sum_i L_i`` with respect to entry ``(i, j)`` is ``dL_i/ds_ij``. Computed in
    float64 on a copy of ``sim``; ``loss`` is used as given except for its reduction.
    """
    per_anchor = copy.copy(loss)  # the same loss with reduction="none"; ``loss`` is left alone
    per_anchor.reduction = "none"
    sim = sim.detach().double().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(per_anchor.from_similarity(sim, labels).sum(), sim)
    return grad


def closed_form_gradients(sim: Tensor, labels: Tensor, temperature: float, denominator: str) -> Tensor:
    """The same-class entries of ``dL_i/ds_ij`` from the derived formulas (others are 0).

    ``denominator="all"`` (SupCon): ``(1/tau)(q_ij - 1/|P(i)|)``, ``q_i`` the softmax of
    ``s_i. / tau`` over all ``a != i``. ``"positive+negatives"`` (SINCERE):
    ``-(1 - P^(j)_j)/(|P(i)| tau)``, ``P^(j)_j = e^{s_ij/tau} / (e^{s_ij/tau} + sum_n e^{s_in/tau})``.
    These are :class:`clmini.symbolic.SameClassGradients`' ``supcon_anchor_form`` and
    ``sincere_anchor_form`` for every anchor and positive of a batch at once.
    """
    sim = sim.detach().double()
    pairs = Pairs.from_labels(labels.to(sim.device))
    logits = sim / temperature
    n_pos = pairs.n_positives.clamp(min=1).to(sim.dtype)[:, None]
    if denominator == "all":
        others = ~torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
        q = torch.softmax(logits.masked_fill(~others, float("-inf")), dim=1)
        grad = (q - 1 / n_pos) / temperature
    elif denominator == "positive+negatives":
        negatives = torch.logsumexp(logits.masked_fill(~pairs.negatives, float("-inf")), dim=1, keepdim=True)
        own = torch.sigmoid(logits - negatives)  # e^a / (e^a + e^b) with b = log sum_n e^{l_n}
        grad = -(1 - own) / (n_pos * temperature)
    else:
        raise ValueError(f"denominator must be 'all' or 'positive+negatives', got {denominator!r}")
    return torch.where(pairs.positives, grad, 0.0)


def repulsion_statistics(grad: Tensor, labels: Tensor) -> dict[str, float]:
    """How much a loss pushes same-class samples apart, from ``G[i, j] = dL_i/ds_ij``.

    Over the same-class pairs ``(i, j)``, ``j != i``: ``share`` of pairs with ``G > 0`` (a step
    lowers ``s_ij``: repulsion); ``mean_repulsive`` the mean of ``G`` over those pairs (0 if none);
    ``max_repulsive``; ``repulsive_mass`` the sum of the positive entries over the sum of all
    absolute same-class entries (0: every same-class pair is pulled together; 0.5: as much push as
    pull); ``mean_same_class`` the mean of ``G`` (negative: net attraction).
    """
    positives = Pairs.from_labels(labels.to(grad.device)).positives
    g = grad[positives].double()
    if g.numel() == 0:
        raise ValueError("labels: the batch has no same-class pair")
    push = g.clamp(min=0)
    repulsive = g > 0
    return {
        "share": float(repulsive.double().mean()),
        "mean_repulsive": float(g[repulsive].mean()) if bool(repulsive.any()) else 0.0,
        "max_repulsive": float(push.max()),
        "repulsive_mass": float(push.sum() / g.abs().sum().clamp(min=1e-300)),
        "mean_same_class": float(g.mean()),
    }


def clustered_batch(per_class: int, n_classes: int, same_cos: float = 0.6, dim: int = 128,
                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Unit embeddings ``[per_class * n_classes, dim]`` in ``n_classes`` clusters, and their labels.

    Class centres are random unit vectors (nearly orthogonal in high ``dim``); a sample is
    ``normalise(sqrt(c) centre + sqrt(1 - c) u)`` with ``u`` a random unit vector, so two samples
    of one class have cosine about ``c = same_cos`` and of different classes about 0: the
    geometry of a partly trained supervised embedding. Float64.
    """
    if not 0 <= same_cos < 1:
        raise ValueError(f"same_cos must be in [0, 1), got {same_cos!r}")
    if per_class < 1 or n_classes < 2:
        raise ValueError(f"need per_class >= 1 and n_classes >= 2, got {per_class}, {n_classes}")
    generator = generator or torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(n_classes, dim, generator=generator, dtype=torch.float64), dim=1)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    noise = F.normalize(torch.randn(labels.numel(), dim, generator=generator, dtype=torch.float64), dim=1)
    z = F.normalize(math.sqrt(same_cos) * centres[labels] + math.sqrt(1 - same_cos) * noise, dim=1)
    return z, labels


def positives_per_anchor(batch_size: int, n_classes: int, classes_per_batch: int | None = None,
                         views: int = 2) -> int:
    """``|P(i)|`` in the engine's class-balanced two-view batches: ``views * (batch_size // M) - 1``."""
    m = n_classes if classes_per_batch is None else classes_per_batch
    return views * (batch_size // m) - 1


@torch.no_grad()
def embedding_batches(model: nn.Module, data: ImageData, batch_size: int, classes_per_batch: int | None = None,
                      n_batches: int = 4, seed: int = 0, augment_config: AugmentConfig | None = None,
                      split: str = "test", precision: str = "fp32") -> list[tuple[Tensor, Tensor]]:
    """Projections ``z`` and labels of ``n_batches`` training-like batches of real images.

    Batches are drawn from ``split`` as the engine draws them (class-balanced,
    ``classes_per_batch`` classes, two augmented views per image, labels = classes), with fixed
    seeds, so every model is measured on the same views; the network runs in ``precision``.
    """
    images = getattr(data, f"{split}_x")
    labels_all = getattr(data, f"{split}_y")
    generator = torch.Generator().manual_seed(seed)
    index = class_balanced_batches(labels_all, batch_size, generator, classes_per_batch)[:n_batches]
    config = augment_config or AugmentConfig()
    was_training = model.training
    model.eval()
    out = []
    try:
        for batch in index.to(images.device):
            x = images[batch]
            views = augment(torch.cat([x, x]), generator, config)
            with autocast(images.device, precision):
                z = model(views).float()
            out.append((z, torch.cat([labels_all[batch]] * 2)))
    finally:
        model.train(was_training)
    return out


def batch_repulsion(loss: ContrastiveLoss, batches: Iterable[tuple[Tensor, Tensor]]) -> dict[str, float]:
    """:func:`repulsion_statistics` of ``loss`` averaged over batches ``(z, labels)`` (z normalised here)."""
    rows = []
    for z, labels in batches:
        z = F.normalize(z.double(), dim=1)
        rows.append(repulsion_statistics(anchor_gradients(loss, z @ z.T, labels), labels))
    if not rows:
        raise ValueError("batches: need at least one batch")
    return {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}


def sincere_bound_value(batches: Iterable[tuple[Tensor, Tensor]], temperature: float) -> float:
    """Mean over anchors (with a positive) of ``log(|N_i| + 1) - L_SINCERE,i`` in nats.

    The per-sample quantity the SINCERE authors' code reports as the value of their bound
    (:func:`clmini.symbolic.sincere_bound`); at most ``log(|N_i| + 1)``, reached only at loss 0.
    """
    loss = SINCERE(temperature, reduction="none")
    values = []
    for z, labels in batches:
        pairs = Pairs.from_labels(labels)
        per_anchor = loss(z.float(), labels)
        has_positive = pairs.n_positives > 0
        values.append((torch.log(pairs.n_negatives.double() + 1) - per_anchor.double())[has_positive])
    if not values:
        raise ValueError("batches: need at least one batch")
    return float(torch.cat(values).mean())


def class_gap(batches: Iterable[tuple[Tensor, Tensor]]) -> float:
    """Mean cosine of same-class pairs minus mean cosine of other-class pairs, over batches ``(z, labels)``.

    The batches are :func:`embedding_batches`' (two views of each image: rows ``k`` and ``k + n/2``
    of a batch of ``n`` rows are the same image); the pairs of two views of one image are left out,
    so the same-class mean is over distinct images only. Unlike SINCERE's separation (medians of the
    *nearest* same-class and other-class cosines, which both approach 1 once a bank is large), this
    averages over all pairs and does not saturate while the classes still overlap.
    """
    gaps = []
    for z, labels in batches:
        n = z.shape[0]
        if n % 2:
            raise ValueError(f"batches: need two views per image (an even number of rows), got {n}")
        z = F.normalize(z.double(), dim=1)
        sim = z @ z.T
        same = labels[:, None] == labels[None, :]
        index = torch.arange(n, device=z.device)
        views = (index[:, None] - index[None, :]).abs() == n // 2          # the two views of one image
        distinct_same = same & ~views & ~torch.eye(n, dtype=torch.bool, device=z.device)
        if not bool(distinct_same.any()) or bool(same.all()):
            raise ValueError("batches: need same-class pairs of distinct images and other-class pairs")
        gaps.append(float(sim[distinct_same].mean() - sim[~same].mean()))
    if not gaps:
        raise ValueError("batches: need at least one batch")
    return sum(gaps) / len(gaps)


def same_class_spread(batches: Iterable[tuple[Tensor, Tensor]], temperature: float) -> dict[str, float]:
    """Why SupCon pushes a positive apart or not: the spread of the positives against the negatives' mass.

    For anchor ``i`` with logits ``l_a = s_ia / tau``, SupCon pushes positive ``p`` apart iff
    ``q_p > 1/|P|``, that is iff ``l_p - LME_P > -log(1 - m_N)``: the positive's logit exceeds the
    log-mean-exp of the positives' logits (``LME_P``) by more than a *threshold* set by ``m_N``, the
    negatives' share of the softmax. Averaged over the anchors (with two or more positives) and the
    batches ``(z, labels)`` (z normalised here): ``same_cos_mean`` and ``same_cos_sd`` (per anchor, the
    mean and standard deviation of its positives' cosines), ``logit_sd`` (``same_cos_sd / tau``),
    ``top_margin`` (the closest positive's ``l_p - LME_P``, nats), ``threshold`` (``-log(1 - m_N)``,
    nats), ``negative_share`` (``m_N``), ``share`` (positives pushed apart: :func:`repulsion_statistics`'
    share) and ``share_without_negatives`` (the share if the negatives held no mass: ``l_p > LME_P``).
    """
    keys = ("same_cos_mean", "same_cos_sd", "logit_sd", "top_margin", "threshold", "negative_share", "share",
            "share_without_negatives")
    rows: dict[str, list[Tensor]] = {key: [] for key in keys}
    for z, labels in batches:
        z = F.normalize(z.double(), dim=1)
        pairs = Pairs.from_labels(labels.to(z.device))
        keep = pairs.n_positives >= 2
        if not bool(keep.any()):
            raise ValueError("batches: need anchors with at least two positives")
        pos, neg = pairs.positives[keep], pairs.negatives[keep]
        sim = (z @ z.T)[keep]
        n_pos = pos.sum(1).double()
        mean = torch.where(pos, sim, 0.0).sum(1) / n_pos
        sd = (torch.where(pos, (sim - mean[:, None]) ** 2, 0.0).sum(1) / n_pos).sqrt()
        logits = sim / temperature
        lse_pos = torch.logsumexp(logits.masked_fill(~pos, float("-inf")), dim=1)
        lse_neg = torch.logsumexp(logits.masked_fill(~neg, float("-inf")), dim=1)
        margin = logits - (lse_pos - n_pos.log())[:, None]          # l_p - LME_P
        threshold = F.softplus(lse_neg - lse_pos)                   # -log(1 - m_N)
        rows["same_cos_mean"].append(mean)
        rows["same_cos_sd"].append(sd)
        rows["logit_sd"].append(sd / temperature)
        rows["top_margin"].append(margin.masked_fill(~pos, float("-inf")).max(1).values)
        rows["threshold"].append(threshold)
        rows["negative_share"].append(torch.sigmoid(lse_neg - lse_pos))
        rows["share"].append((pos & (margin > threshold[:, None])).sum(1) / n_pos)
        rows["share_without_negatives"].append((pos & (margin > 0)).sum(1) / n_pos)
    if not rows["share"]:
        raise ValueError("batches: need at least one batch")
    return {key: float(torch.cat(values).mean()) for key, values in rows.items()}


# =========================================================================== run names
def is_cross_entropy(run: Run) -> bool:
    """Whether ``run`` trained the cross-entropy baseline (``objective="cross-entropy"``)."""
    return run.config.objective == "cross-entropy"


def run_label(run: Run) -> str:
    """``"SupCon τ=0.1"``, ``"SINCERE τ=0.05"``, ``"cross-entropy"``, ``"random init"``, ...:
    the name of a run in the chapter's tables and legends."""
    if is_cross_entropy(run):
        return "cross-entropy"
    if run.config.epochs == 0:
        return "random init"
    names = {"supcon": "SupCon", "sincere": "SINCERE", "infonce": "InfoNCE"}
    name = names.get(run.config.loss, run.config.loss)
    args = run.config.loss_args
    return f"{name} τ={args['temperature']:g}" if "temperature" in args else name


# =========================================================================== the binary task
#: The two-class task of each data set (class indices): its most confusable pair. CIFAR-10's is the
#: paper's CIFAR-2, cat vs dog **[paper code]**; STL-10 has the same two classes (at indices 3 and 5
#: too); Fashion-MNIST's most confused pair is T-shirt/top vs shirt. CIFAR-100 and SVHN have no
#: such default: a chapter run on them names its pair (``binary_classes``).
CONFUSABLE_PAIRS = {"fashion-mnist": (0, 6), "cifar10": (3, 5), "stl10": (3, 5)}


def binary_pair(dataset: str, classes: Sequence[int] | None = None) -> tuple[int, int]:
    """The two classes of the binary task: ``classes`` if given (two distinct indices), else the
    data set's :data:`CONFUSABLE_PAIRS` entry. Sorted, as :class:`~clmini.engine.TrainConfig` keeps them."""
    if classes is None:
        if dataset not in CONFUSABLE_PAIRS:
            raise ValueError(f"binary_classes: no default pair for data set {dataset!r} (defaults exist for "
                             f"{sorted(CONFUSABLE_PAIRS)}); set binary_classes to two class indices")
        return tuple(sorted(CONFUSABLE_PAIRS[dataset]))
    pair = [int(c) for c in classes]
    if len(pair) != 2 or pair[0] == pair[1] or min(pair) < 0:
        raise ValueError(f"binary_classes: need two distinct class indices, got {list(classes)}")
    return tuple(sorted(pair))


# =========================================================================== tables of runs
def sensitivities(frame: pd.DataFrame, metrics: Mapping[str, str], configurations: Sequence[str],
                  init_label: str = "random init", digits: Mapping[str, int] | None = None
                  ) -> dict[str, verdicts.Sensitivity]:
    """:func:`clmini.study.verdicts.sensitivity` of each metric (column -> readable name) over the
    ``configurations`` (labels) of ``frame``, against the runs labelled ``init_label``;
    ``digits``: decimals of a metric's text where 3 are too few (default 3)."""
    init = frame[frame["label"] == init_label]
    if init.empty:
        raise ValueError(f"no runs labelled {init_label!r} (the random-init baseline)")
    digits = digits or {}
    return {metric: verdicts.sensitivity({c: seed_values(frame, c, metric) for c in configurations},
                                         init[metric].to_numpy(dtype=float), metric=name,
                                         digits=digits.get(metric, 3))
            for metric, name in metrics.items()}


#: SINCERE's separation is the difference of the median cosines to the nearest same-class and the
#: nearest other-class bank embedding. Where both medians are at least this high in every run, the
#: nearest neighbours of both kinds sit on top of each embedding, the separation is squeezed towards
#: 0, and neither it nor its two terms can rank the runs (:func:`nearest_at_ceiling`).
NEAREST_CEILING = 0.98
NEAREST_METRICS = ("separation", "nearest_same_sim", "nearest_other_sim")


def nearest_at_ceiling(frame: pd.DataFrame, ceiling: float = NEAREST_CEILING) -> bool:
    """Whether every run of ``frame`` has both nearest-neighbour medians at or above ``ceiling``."""
    values = frame[["nearest_same_sim", "nearest_other_sim"]].to_numpy(dtype=float)
    if values.size == 0:
        raise ValueError("frame: no runs")
    return bool((values >= ceiling).all())


def _unable(results: Mapping[str, verdicts.Sensitivity], metric: str, unable: Mapping[str, str]) -> bool:
    return results[metric].saturated or metric in unable


def sensitivity_table(results: Mapping[str, verdicts.Sensitivity], names: Mapping[str, str],
                      unable: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per metric: random-init value, lowest and highest configuration mean, their range,
    the seed sd, and whether the metric can rank the configurations. ``unable``: metric -> why it
    cannot rank although the seeds alone would let it (e.g. its terms at a ceiling)."""
    unable = unable or {}

    def can_rank(metric, s):
        if s.saturated:
            return "no: the runs move it no more than the seeds do"
        return f"no: {unable[metric]}" if metric in unable else "yes"

    rows = [{"metric": names.get(metric, metric), "random init": s.init, "lowest": s.low, "highest": s.high,
             "range": s.range, "seed sd": s.seed_sd, "range / seed sd": s.range / s.seed_sd if s.seed_sd else math.nan,
             "can rank": can_rank(metric, s)}
            for metric, s in results.items()]
    return pd.DataFrame(rows).set_index("metric")


def ranking_metric(results: Mapping[str, verdicts.Sensitivity], candidates: Sequence[str],
                   unable: Iterable[str] = ()) -> str:
    """The metric a claim is judged on: the first candidate (the paper's own) if it can rank the
    configurations, else the candidate that moves most against its seed spread among those that can,
    else (none can) the first candidate, whose verdict the chapter then reads as unable to rank.
    ``unable``: metrics that cannot rank although :attr:`~clmini.study.verdicts.Sensitivity.saturated`
    is false (see :func:`sensitivity_table`)."""
    if not candidates:
        raise ValueError("candidates: need at least one metric")
    unknown = [c for c in candidates if c not in results]
    if unknown:
        raise ValueError(f"candidates {unknown} have no sensitivity; known: {sorted(results)}")
    unable = {m: "" for m in unable}
    able = [c for c in candidates if not _unable(results, c, unable)]
    if not able or able[0] == candidates[0]:
        return candidates[0]
    return max(able, key=lambda c: results[c].range / results[c].seed_sd if results[c].seed_sd > 0 else math.inf)


def configuration_points(frame: pd.DataFrame, metric: str, labels: Sequence[str], *, ax, baseline=None,
                         init_label: str = "random init"):
    """Each configuration (label) at its own abscissa: mean ± sd over seeds and every seed
    (:func:`clmini.study.plots.metric_point`), with the random-init band (default: the runs labelled
    ``init_label`` in ``frame``; ``baseline`` overrides it with per-seed values)."""
    for i, label in enumerate(labels):
        metric_point(frame[frame["label"] == label], metric, i, label=label, ax=ax, color=f"C{i}")
    if baseline is None:
        baseline = frame.loc[frame["label"] == init_label, metric].to_numpy(dtype=float)
    if len(baseline):
        baseline_band(ax, baseline)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize="small")
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.grid(alpha=0.3, axis="y")
    return ax
