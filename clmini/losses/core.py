"""The frame every loss shares: argument checks, pair masks, the pairs of a batch (from its labels),
the batch loss (normalisation, one similarity matrix, reduction)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clmini.losses.rowwise import Scratch

if TYPE_CHECKING:
    from clmini.losses.negatives import HardNegatives

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS = ("mean", "sum", "none")
DENOMINATORS = ("positive+negatives", "all", "negatives")


#: The smallest temperature a loss accepts: ``4 / float32.max`` (about 1.18e-38). Cosine similarities
#: have ``|s| <= 1``, so ``|s / tau| <= 1 / tau``; the largest quantity a contrastive loss forms is a
#: difference of two logits plus a log-sum-exp's ``log N``, at most ``2 / tau + log N``, which then stays
#: below float32's maximum (the dtype every loss computes in, at least) with a factor 2 to spare.
#: (Gradients with respect to the embeddings are of order ``1 / (tau * |z|)`` and can still overflow
#: near this bound: a value the dtype cannot represent.)
MIN_TEMPERATURE = 4 / torch.finfo(torch.float32).max


# --------------------------------------------------------------------------- argument checks
def _positive_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _number_in(name: str, value, low: float, high: float) -> float:
    """A finite number in ``[low, high]`` (``high`` may be ``inf``: any finite number from ``low``)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def _temperature(name: str, value) -> float:
    """A temperature: finite, and large enough that ``s / value`` and the loss stay finite in float32."""
    value = _positive_number(name, value)
    if value < MIN_TEMPERATURE:
        raise ValueError(f"{name} must be >= {MIN_TEMPERATURE:.6g} (smaller temperatures overflow the "
                         f"logits s / {name} in float32), got {value!r}")
    return value


def _check_bool(name: str, value) -> bool:
    # bool("no") is True: a string (or 0/1 from a config) is refused rather than guessed at
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def _check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def _check_labels(labels: Tensor, n: int) -> None:
    if not isinstance(labels, Tensor):
        raise ValueError(f"labels must be a tensor, got {type(labels).__name__}")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must have shape [{n}] (one per embedding), got {list(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")


def _check_finite(name: str, x: Tensor) -> None:
    # NaN and inf propagate through a sum: a finite sum proves every entry finite at the cost of one
    # reduction (the entry-wise test costs several passes); only an overflowing sum needs it
    if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")


def _promote(x: Tensor) -> Tensor:
    """fp16/bf16 -> float32: logits such as 1/0.01 or artanh(1 - 1e-6) need the range and precision."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _unit_rows(z: Tensor) -> Tensor:
    """Each row of ``z`` ``[N, D]`` divided by its Euclidean norm, at any finite scale.

    ``F.normalize`` squares the entries: in float32 the sum of squares overflows for norms above
    ~1e19 and underflows (then its ``eps`` floor takes over) below ~1e-19, so rows of 1e30 all came
    out equal. Each row is first divided by its largest absolute entry, which puts its norm in
    ``[1, sqrt(D)]``; the scale is a constant of the gradient (``z / |z|`` does not depend on it), so
    the gradient is the exact one of ``z / |z|``. (That gradient is of order ``1 / |z|``: for rows
    near the dtype's smallest numbers it can be beyond the dtype's range.)

    An all-zero row has no direction: it stays the zero vector, as with ``F.normalize`` (similarity 0
    to every sample, itself included), and its gradient is ``F.normalize``'s at 0 (``grad / 1e-12``).
    """
    scale = torch.linalg.vector_norm(z.detach(), ord=math.inf, dim=1, keepdim=True)     # [N, D] -> [N, 1]
    scale = scale.masked_fill_(scale == 0, 1.0)                                          # [N, 1]
    return F.normalize(z / scale, dim=1)                                                 # [N, D]


# --------------------------------------------------------------------------- building blocks
def pair_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Boolean ``[N, N]`` masks of positive pairs (same label, not self) and negative pairs (for callers
    that want the masks; the losses read the pairs from :class:`Pairs` instead)."""
    same = labels[:, None] == labels[None, :]   # [N, N]
    positives = same.clone()                     # [N, N]
    positives.fill_diagonal_(False)
    return positives, ~same                      # [N, N]


@dataclass
class Pairs:
    """Who is whose positive and negative in a batch, from the labels alone: no ``N x N`` mask.

    ``rows``/``cols`` ``[P]``: the positive pairs ``(i, p)`` in row-major order; ``n_positives``,
    ``n_negatives`` ``[N]``: per-anchor counts; ``thresholds`` ``[N]`` (set by a hard-negative
    selection, ``None`` otherwise): each anchor keeps only the negatives at least this similar.
    As a selection of :mod:`clmini.losses.rowwise` it admits each anchor's (kept) negatives.
    ``positives``/``negatives``: the ``[N, N]`` masks, built on demand for callers that want them.
    """

    labels: Tensor
    rows: Tensor
    cols: Tensor
    n_positives: Tensor
    n_negatives: Tensor
    thresholds: Tensor | None = None

    @classmethod
    def from_labels(cls, labels: Tensor) -> "Pairs":
        # O(N log N + P): group the samples by label, then enumerate each anchor's group but itself
        n = labels.shape[0]
        _, group, sizes = torch.unique(labels, return_inverse=True, return_counts=True)
        order = torch.argsort(group, stable=True)          # samples grouped, ascending within a group
        starts = sizes.cumsum(0) - sizes                   # where each group begins in `order`
        n_positives = sizes[group] - 1
        index = torch.arange(n, device=labels.device)
        rank = torch.empty_like(order).index_copy_(0, order, index) - starts[group]  # place in own group
        rows = index.repeat_interleave(n_positives)
        t = torch.arange(len(rows), device=labels.device) - (n_positives.cumsum(0) - n_positives)[rows]
        cols = order[starts[group[rows]] + t + (t >= rank[rows])]  # the t-th member, skipping the anchor
        return cls(labels, rows, cols, n_positives, n - 1 - n_positives)

    @property
    def positives(self) -> Tensor:
        """Boolean ``[N, N]`` mask of the positive pairs."""
        return pair_masks(self.labels)[0]

    @property
    def negatives(self) -> Tensor:
        """Boolean ``[N, N]`` mask of every negative pair (before any hard selection: ``thresholds``)."""
        return pair_masks(self.labels)[1]

    def fill_outside_(self, values: Tensor, sim_rows: Tensor, start: int, fill: float, scratch: Scratch) -> Tensor:
        """Set to ``fill`` the entries of rows ``start..`` that are not the row anchor's (kept) negatives."""
        block = slice(start, start + len(values))
        same = torch.eq(self.labels[block, None], self.labels, out=scratch.flags)            # [B, N]
        values.masked_fill_(same, fill)                                                      # [B, N]
        if self.thresholds is not None:
            easier = torch.lt(sim_rows, self.thresholds[block, None], out=scratch.flags)     # [B, N]
            values.masked_fill_(easier, fill)                                                # [B, N]
        return values


def two_views(z1: Tensor, z2: Tensor) -> tuple[Tensor, Tensor]:
    """Stack two views ``[B, D]`` of the same ``B`` images; labels are the instance ids ``0..B-1`` twice."""
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1 and z2 must both be [B, D] of the same shape, got {list(z1.shape)} and {list(z2.shape)}")
    ids = torch.arange(z1.shape[0], device=z1.device)
    return torch.cat([z1, z2]), torch.cat([ids, ids])


# --------------------------------------------------------------------------- the losses
class PairwiseLoss(nn.Module):
    """Shared frame: checks, normalisation, the similarity matrix, masks and the reduction.

    ``normalize=True`` (a bool) makes each embedding a unit vector (at any finite scale; an all-zero
    row stays zero, see :func:`_unit_rows`), so that ``sim`` holds cosines.

    Subclasses define ``per_anchor(sim, pairs) -> [N]`` (``pairs``: :class:`Pairs`) (the loss of each anchor,
    already averaged over its positives; any value for anchors without positives), reading ``sim``
    through :func:`clmini.losses.rowwise.reduce_rows` so that no ``N x N`` temporary is formed.
    """

    def __init__(self, reduction: Reduction = "mean", normalize: bool = True,
                 hard_negatives: HardNegatives | None = None):
        super().__init__()
        self.reduction = _check_reduction(reduction)
        self.normalize = _check_bool("normalize", normalize)
        self.hard_negatives = hard_negatives

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Loss of a batch: ``embeddings`` ``[N, D]`` float, ``labels`` ``[N]`` int (equal = positive)."""
        return self._loss(self._similarity(self._unit_embeddings(embeddings, labels)), labels)

    def anchor_losses(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Each anchor's loss ``[N]`` (0 without a positive) and which anchors have a positive ``[N]``,
        whatever ``reduction`` says: what a caller needs to reduce over a part of the anchors itself
        (:mod:`clmini.engine.distributed`: the anchors of one process, against every process's samples)."""
        sim = self._similarity(self._unit_embeddings(embeddings, labels))
        return self._anchor_values(sim, labels)

    def _unit_embeddings(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The checked embeddings, promoted and (with ``normalize``) made unit rows."""
        if not isinstance(embeddings, Tensor) or embeddings.dim() != 2:
            shape = list(embeddings.shape) if isinstance(embeddings, Tensor) else type(embeddings).__name__
            raise ValueError(f"embeddings must be a 2-D tensor [N, D], got {shape}")
        if not embeddings.dtype.is_floating_point:
            raise ValueError(f"embeddings must be a floating-point tensor, got dtype {embeddings.dtype}")
        if embeddings.shape[0] < 2:
            raise ValueError(f"embeddings: need at least N = 2 samples, got N = {embeddings.shape[0]}")
        if embeddings.shape[1] < 1:
            raise ValueError(f"embeddings: need at least D = 1 dimension, got D = {embeddings.shape[1]}")
        _check_finite("embeddings", embeddings)
        z = _promote(embeddings)
        if self.normalize:
            z = _unit_rows(z)
        _check_labels(labels, z.shape[0])
        return z

    def _similarity(self, z: Tensor) -> Tensor:
        """The loss's one ``N x N`` matrix from the (normalised) embeddings: ``z z^T``."""
        return z @ z.T

    def _given_similarity(self, sim: Tensor) -> Tensor:
        """What :meth:`from_similarity` makes of a given ``sim`` (itself; a loss that scales its
        similarities, as :meth:`_similarity` does, scales it the same way)."""
        return sim

    def from_similarity(self, sim: Tensor, labels: Tensor) -> Tensor:
        """The same loss from a given similarity matrix ``[N, N]`` (its diagonal is ignored)."""
        if not isinstance(sim, Tensor) or sim.dim() != 2 or sim.shape[0] != sim.shape[1]:
            raise ValueError(f"sim must be a square [N, N] tensor, got {getattr(sim, 'shape', type(sim))}")
        if sim.shape[0] < 2:
            raise ValueError(f"sim: need at least N = 2 samples, got N = {sim.shape[0]}")
        _check_labels(labels, sim.shape[0])
        _check_finite("sim", sim)
        return self._loss(self._given_similarity(_promote(sim)), labels)

    def _anchor_values(self, sim: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        pairs = Pairs.from_labels(labels.to(sim.device))
        has_positive = pairs.n_positives > 0
        if not bool(has_positive.any()):
            raise ValueError("labels: the batch has no positive pair (every label is unique); "
                             "self-supervised batches need two views per instance")
        if self.hard_negatives is not None:
            pairs.thresholds, pairs.n_negatives = self.hard_negatives.select(sim, pairs)
        return torch.where(has_positive, self.per_anchor(sim, pairs), 0.0), has_positive

    def _loss(self, sim: Tensor, labels: Tensor) -> Tensor:
        per_anchor, has_positive = self._anchor_values(sim, labels)
        if self.reduction == "none":
            return per_anchor
        if self.reduction == "sum":
            return per_anchor.sum()
        count = has_positive.sum()
        mean = per_anchor.sum() / count
        if not bool(torch.isfinite(mean)):  # the sum overflowed (values near 2 / MIN_TEMPERATURE): [N] only
            mean = (per_anchor / count).sum()
        return mean

    def per_anchor(self, sim: Tensor, pairs: Pairs) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def batch_statistics(self, sim: Tensor, positives: Tensor, negatives: Tensor) -> dict[str, Tensor]:
        """Quantities of this loss worth recording per training step (0-d tensors, by name), from a
        batch's similarity matrix and its positive/negative masks. None by default; a loss with
        something of its own to show (DySTreSS: the temperatures it applied) says so here."""
        return {}

    def set_progress(self, progress: float) -> None:
        """Where training stands, ``progress`` in ``[0, 1]`` (the share of its steps done), told by
        the trainer before every step. Ignored by default; a loss whose definition changes over
        training (a temperature schedule) reads it here."""


def _mean_over_positives(pair_loss: Tensor, rows: Tensor, pairs: Pairs) -> Tensor:
    """Average per-pair losses (indexed by anchor ``rows``) over each anchor's positives."""
    total = torch.zeros(len(pairs.n_positives), dtype=pair_loss.dtype, device=pair_loss.device)
    counts = pairs.n_positives.clamp(min=1)
    mean = total.index_add_(0, rows, pair_loss) / counts
    if not bool(torch.isfinite(mean).all()):
        # a sum overflowed, possible only for pair losses near 2 / MIN_TEMPERATURE: average the
        # scaled terms instead (a pass over the [P] pairs, taken only then)
        mean = torch.zeros_like(total).index_add_(0, rows, pair_loss / counts[rows])
    return mean
