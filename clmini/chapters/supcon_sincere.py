"""Chapter 4 (SupCon vs SINCERE): repulsion statistics, run names, comparisons with seed spread.

Two things chapter 4 needs that are neither losses nor engine:

* **Repulsion.** For anchor ``i`` and a same-class sample ``j``, ``g_ij = dL_i/ds_ij`` says what the
  loss does to their similarity: ``g_ij > 0`` means the loss *falls* as ``s_ij`` falls, so a
  gradient step pushes the two apart. :func:`anchor_gradients` takes ``g`` from the library's
  losses by autograd; :func:`closed_form_gradients` writes the same entries from the symbolic
  result (:func:`clmini.symbolic.same_class_gradients`): ``(1/tau)(q_ij - 1/|P|)`` for SupCon with
  ``q`` the softmax over all other samples, ``-(1 - P^(j)_j)/(|P| tau)`` for SINCERE with
  ``P^(j)`` the softmax over ``j`` and the negatives. :func:`repulsion_statistics` summarises
  ``g`` over the same-class pairs of a batch; :func:`clustered_batch` and :func:`embedding_batches`
  give batches of synthetic and of real embeddings.
* **Comparisons** (:func:`compare`): the difference of two groups of seeds and whether it exceeds
  their spread, so a chapter's sentences say only what its numbers show.

The cross-entropy baseline "with the same encoder" is not here: it is an objective of the engine
(``TrainConfig(objective="cross-entropy")``), trained and cached like every run.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clmini.engine import Run
from clmini.engine.augment import AugmentConfig, augment
from clmini.engine.data import ImageData, class_balanced_batches
from clmini.losses import SINCERE, ContrastiveLoss, Pairs
from clmini.metrics import autocast

__all__ = [
    "anchor_gradients", "closed_form_gradients", "repulsion_statistics", "clustered_batch",
    "embedding_batches", "batch_repulsion", "positives_per_anchor", "sincere_bound_value",
    "is_cross_entropy", "run_label", "Comparison", "compare",
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


# =========================================================================== comparisons
@dataclass(frozen=True)
class Comparison:
    """Group ``a`` minus group ``b`` of one metric over seeds.

    ``spread`` is the standard error of the difference of means,
    ``sqrt(sd_a^2 / n_a + sd_b^2 / n_b)`` (NaN with fewer than two seeds in a group). The
    difference is ``clear`` when both groups have at least two seeds and ``|diff| > 2 spread``
    (about a 95 % two-sided criterion); otherwise nothing is claimed.
    """

    mean_a: float
    mean_b: float
    sd_a: float
    sd_b: float
    n_a: int
    n_b: int

    @property
    def diff(self) -> float:
        return self.mean_a - self.mean_b

    @property
    def spread(self) -> float:
        if min(self.n_a, self.n_b) < 2:
            return math.nan
        return math.sqrt(self.sd_a ** 2 / self.n_a + self.sd_b ** 2 / self.n_b)

    @property
    def enough_seeds(self) -> bool:
        return min(self.n_a, self.n_b) >= 2

    @property
    def clear(self) -> bool:
        return self.enough_seeds and abs(self.diff) > 2 * self.spread

    def verdict(self, higher: str, lower: str, unclear: str, single: str) -> str:
        """One of four phrases: ``a`` clearly higher / lower, unclear within the spread, or too
        few seeds to say."""
        if not self.enough_seeds:
            return single
        if not self.clear:
            return unclear
        return higher if self.diff > 0 else lower


def compare(a: Sequence[float], b: Sequence[float]) -> Comparison:
    """:class:`Comparison` of two samples (e.g. one metric of SINCERE's and SupCon's seeds)."""
    a, b = [float(x) for x in a], [float(x) for x in b]
    if not a or not b:
        raise ValueError("compare: both groups need at least one value")

    def sd(x):
        if len(x) < 2:
            return math.nan
        m = sum(x) / len(x)
        return math.sqrt(sum((v - m) ** 2 for v in x) / (len(x) - 1))

    return Comparison(sum(a) / len(a), sum(b) / len(b), sd(a), sd(b), len(a), len(b))
