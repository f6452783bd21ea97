"""The frame every loss shares: argument checks, pair masks, masked log-sum-exp, the batch loss
(normalisation, one similarity matrix, reduction)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from clmini.losses.negatives import HardNegatives

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS = ("mean", "sum", "none")
DENOMINATORS = ("positive+negatives", "all")


# --------------------------------------------------------------------------- argument checks
def _positive_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


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
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")


def _promote(x: Tensor) -> Tensor:
    """fp16/bf16 -> float32: logits such as 1/0.01 or artanh(1 - 1e-6) need the range and precision."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


# --------------------------------------------------------------------------- building blocks
def pair_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Boolean ``[N, N]`` masks of positive pairs (same label, not self) and negative pairs."""
    same = labels[:, None] == labels[None, :]
    positives = same.clone()
    positives.fill_diagonal_(False)
    return positives, ~same


@dataclass
class Pairs:
    """Who is whose positive and negative in a batch, with the per-anchor counts ``[N]``."""

    positives: Tensor
    negatives: Tensor
    n_positives: Tensor
    n_negatives: Tensor

    @classmethod
    def from_labels(cls, labels: Tensor) -> "Pairs":
        positives, negatives = pair_masks(labels)
        # counts from the labels (O(N log N)) rather than from reductions over the N x N masks
        _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        same = counts[inverse]
        return cls(positives, negatives, same - 1, labels.shape[0] - same)


class _MaskedLogSumExp(torch.autograd.Function):
    """Row-wise log-sum-exp over the ``True`` entries of a mask, with a lean backward.

    Forward keeps ``e = exp(x - rowmax)`` (zero where masked) and the row sums; backward is then a
    single product ``e * g / sum`` -- two fewer passes over the ``N x N`` matrix than autograd's
    ``where`` + ``logsumexp`` and no NaN for empty rows (their gradient is exactly 0).
    """

    @staticmethod
    def forward(ctx, x: Tensor, mask: Tensor) -> Tensor:
        e = torch.where(mask, x, float("-inf"))
        rowmax = e.amax(dim=1, keepdim=True)
        rowmax = torch.where(torch.isfinite(rowmax), rowmax, 0.0)  # empty rows: any finite shift
        e.sub_(rowmax).exp_()
        total = e.sum(dim=1)
        ctx.save_for_backward(e, total)
        return total.log() + rowmax.squeeze(1)  # log(0) = -inf for empty rows

    @staticmethod
    def backward(ctx, grad: Tensor):
        e, total = ctx.saved_tensors
        scale = torch.where(total > 0, grad / total, 0.0)
        return e * scale[:, None], None


def masked_logsumexp(x: Tensor, mask: Tensor) -> Tensor:
    """Row-wise ``log sum_{j: mask_ij} exp(x_ij)``: ``-inf`` (with zero gradient) for a row with no ``True``."""
    return _MaskedLogSumExp.apply(x, mask)


def two_views(z1: Tensor, z2: Tensor) -> tuple[Tensor, Tensor]:
    """Stack two views ``[B, D]`` of the same ``B`` images; labels are the instance ids ``0..B-1`` twice."""
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1 and z2 must both be [B, D] of the same shape, got {list(z1.shape)} and {list(z2.shape)}")
    ids = torch.arange(z1.shape[0], device=z1.device)
    return torch.cat([z1, z2]), torch.cat([ids, ids])


# --------------------------------------------------------------------------- the losses
class PairwiseLoss(nn.Module):
    """Shared frame: checks, normalisation, the similarity matrix, masks and the reduction.

    Subclasses define ``per_anchor(sim, pairs) -> [N]`` (``pairs``: :class:`Pairs`) (the loss of each anchor,
    already averaged over its positives; any value for anchors without positives).
    """

    def __init__(self, reduction: Reduction = "mean", normalize: bool = True,
                 hard_negatives: HardNegatives | None = None):
        super().__init__()
        self.reduction = _check_reduction(reduction)
        self.normalize = bool(normalize)
        self.hard_negatives = hard_negatives

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Loss of a batch: ``embeddings`` ``[N, D]`` float, ``labels`` ``[N]`` int (equal = positive)."""
        if not isinstance(embeddings, Tensor) or embeddings.dim() != 2:
            shape = list(embeddings.shape) if isinstance(embeddings, Tensor) else type(embeddings).__name__
            raise ValueError(f"embeddings must be a 2-D tensor [N, D], got {shape}")
        if not embeddings.dtype.is_floating_point:
            raise ValueError(f"embeddings must be a floating-point tensor, got dtype {embeddings.dtype}")
        _check_finite("embeddings", embeddings)
        z = _promote(embeddings)
        if self.normalize:
            z = F.normalize(z, dim=1)
        if z.shape[0] < 2:
            raise ValueError(f"embeddings: need at least N = 2 samples, got N = {z.shape[0]}")
        _check_labels(labels, z.shape[0])
        return self._loss(z @ z.T, labels)

    def from_similarity(self, sim: Tensor, labels: Tensor) -> Tensor:
        """The same loss from a given similarity matrix ``[N, N]`` (its diagonal is ignored)."""
        if not isinstance(sim, Tensor) or sim.dim() != 2 or sim.shape[0] != sim.shape[1]:
            raise ValueError(f"sim must be a square [N, N] tensor, got {getattr(sim, 'shape', type(sim))}")
        if sim.shape[0] < 2:
            raise ValueError(f"sim: need at least N = 2 samples, got N = {sim.shape[0]}")
        _check_labels(labels, sim.shape[0])
        _check_finite("sim", sim)
        return self._loss(_promote(sim), labels)

    def _loss(self, sim: Tensor, labels: Tensor) -> Tensor:
        pairs = Pairs.from_labels(labels.to(sim.device))
        has_positive = pairs.n_positives > 0
        if not bool(has_positive.any()):
            raise ValueError("labels: the batch has no positive pair (every label is unique); "
                             "self-supervised batches need two views per instance")
        if self.hard_negatives is not None:
            pairs.negatives = self.hard_negatives(sim, pairs.negatives)
            pairs.n_negatives = pairs.negatives.sum(dim=1)
        per_anchor = torch.where(has_positive, self.per_anchor(sim, pairs), 0.0)
        if self.reduction == "none":
            return per_anchor
        if self.reduction == "sum":
            return per_anchor.sum()
        return per_anchor.sum() / has_positive.sum()

    def per_anchor(self, sim: Tensor, pairs: Pairs) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def batch_statistics(self, sim: Tensor, positives: Tensor, negatives: Tensor) -> dict[str, Tensor]:
        """Quantities of this loss worth recording per training step (0-d tensors, by name), from a
        batch's similarity matrix and its positive/negative masks. None by default; a loss with
        something of its own to show (DySTreSS: the temperatures it applied) says so here."""
        return {}


def _mean_over_positives(pair_loss: Tensor, rows: Tensor, pairs: Pairs) -> Tensor:
    """Average per-pair losses (indexed by anchor ``rows``) over each anchor's positives."""
    total = torch.zeros(len(pairs.n_positives), dtype=pair_loss.dtype, device=pair_loss.device)
    return total.index_add_(0, rows, pair_loss) / pairs.n_positives.clamp(min=1)
