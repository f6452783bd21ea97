"""The loss family of the book: every loss is a logit map, a denominator rule and a reduction.

One batch holds ``N`` embeddings and ``N`` labels; equal labels mark positives (instance ids for
self-supervised two-view batches, classes for supervised ones). For anchor ``i``:

* positives ``P(i) = {j != i : y_j == y_i}``, negatives ``N(i) = {j : y_j != y_i}``;
* a **logit map** ``l(s)`` turns a cosine similarity into a logit: ``s / tau`` (:class:`Scaled`),
  ``2 artanh(s)`` (:class:`Artanh`), ``s / tau(sg[s])`` (:class:`CosineTemperature`, DySTreSS);
* a **denominator rule** says what competes with a positive pair ``(i, p)``:
  ``"positive+negatives"`` (InfoNCE / NT-Xent, SINCERE: ``l_ip`` and the negatives) or
  ``"all"`` (SupCon ``L_out``: every other sample, the other positives included); the negatives may
  be restricted to the hardest ones (:class:`HardNegatives`, Wang & Liu eq. 9);
* a **reduction**: per positive pair -> mean over the anchor's positives -> batch. Anchors without
  a positive are left out of the mean (and are 0 under ``reduction="none"``), never NaN.

Everything is computed in log-space from one ``N x N`` similarity matrix: ``logsumexp`` over
``-inf``-masked rows, ``softplus`` for ``-log(e^a / (e^a + e^b))``; no Python loop over samples.
Half-precision inputs are promoted to float32 before any logit is formed (``exp(s/tau)`` or
``artanh(1 - eps)`` do not survive fp16/bf16).

A new variant is one line, e.g. SINCERE with temperature-free logits::

    ContrastiveLoss(Artanh(), denominator="positive+negatives")
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS = ("mean", "sum", "none")
DENOMINATORS = ("positive+negatives", "all")

__all__ = [
    "LogitMap", "Scaled", "Artanh", "CosineTemperature", "HardNegatives",
    "PairwiseLoss", "ContrastiveLoss", "InfoNCE", "SINCERE", "SupCon", "TemperatureFree",
    "DySTreSS", "HardContrastive", "SimpleLoss", "HardSimple",
    "LOSSES", "make_loss", "two_views", "pair_masks", "Pairs", "masked_logsumexp",
]


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


# --------------------------------------------------------------------------- logit maps
class LogitMap(nn.Module):
    """An element-wise map from cosine similarity to logit, with its SymPy expression.

    ``symbolic(s)`` returns ``l(s)`` in terms of the SymPy symbol ``s`` and the map's parameter
    symbols; ``parameters()`` gives their values, so ``symbolic(s).subs(self.symbol_values())`` is
    the exact function ``forward`` computes (up to the numerical clamp of :class:`Artanh`).
    """

    def symbolic(self, s):  # pragma: no cover - abstract
        raise NotImplementedError

    def symbol_values(self) -> dict:
        return {}


class Scaled(LogitMap):
    """``l(s) = s / tau``: the classic temperature."""

    def __init__(self, temperature: float):
        super().__init__()
        self.temperature = _positive_number("temperature", temperature)

    def forward(self, s: Tensor) -> Tensor:
        return s / self.temperature

    def symbolic(self, s):
        import sympy
        return s / sympy.Symbol("tau", positive=True)

    def symbol_values(self) -> dict:
        import sympy
        return {sympy.Symbol("tau", positive=True): self.temperature}

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class Artanh(LogitMap):
    """``l(s) = 2 artanh(s) = log((1 + s) / (1 - s))``: temperature-free (Kim & Kim 2025).

    ``artanh(+-1)`` is infinite, so ``s`` is clamped to ``[-1 + eps, 1 - eps]`` (the clamp also
    zeroes the gradient beyond it, where the loss has reached its optimum). Computed in at least
    float32: in fp16, ``1 - 1e-4`` already rounds back to ``1``.
    """

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        eps = _positive_number("eps", eps)
        if eps >= 1:
            raise ValueError(f"eps must be in (0, 1), got {eps!r}")
        self.eps = eps

    def forward(self, s: Tensor) -> Tensor:
        return 2 * torch.atanh(_promote(s).clamp(-1 + self.eps, 1 - self.eps))

    def symbolic(self, s):
        import sympy
        return 2 * sympy.atanh(s)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


class CosineTemperature(LogitMap):
    """DySTreSS (Manna et al.): ``l(s) = s / tau(sg[s])`` with a cosine schedule in ``s``.

    ``tau(s) = tau_min + (tau_max - tau_min) / 2 * (1 + cos(pi (1 + s)))
            = tau_min + (tau_max - tau_min) sin^2(pi s / 2)``:
    ``tau_max`` at ``s = +-1``, ``tau_min`` at ``s = 0``. Like the authors' code, ``tau`` is computed
    from detached similarities (``detach=True``) and applied to every logit, the positive included.
    """

    def __init__(self, tau_min: float = 0.07, tau_max: float = 0.2, detach: bool = True):
        super().__init__()
        self.tau_min = _positive_number("tau_min", tau_min)
        self.tau_max = _positive_number("tau_max", tau_max)
        if self.tau_min > self.tau_max:
            raise ValueError(f"tau_min must be <= tau_max, got tau_min={tau_min!r} > tau_max={tau_max!r}")
        self.detach = bool(detach)

    def temperature(self, s: Tensor) -> Tensor:
        """The per-pair temperature ``tau(s)`` (what the loss applies)."""
        return self.tau_min + (self.tau_max - self.tau_min) * torch.sin(0.5 * math.pi * s) ** 2

    def forward(self, s: Tensor) -> Tensor:
        return s / self.temperature(s.detach() if self.detach else s)

    def symbolic(self, s):
        import sympy
        tau_min, tau_max = sympy.symbols("tau_min tau_max", positive=True)
        return s / (tau_min + (tau_max - tau_min) / 2 * (1 + sympy.cos(sympy.pi * (1 + s))))

    def symbol_values(self) -> dict:
        import sympy
        tau_min, tau_max = sympy.symbols("tau_min tau_max", positive=True)
        return {tau_min: self.tau_min, tau_max: self.tau_max}

    def extra_repr(self) -> str:
        return f"tau_min={self.tau_min}, tau_max={self.tau_max}, detach={self.detach}"


# --------------------------------------------------------------------------- negative selection
class HardNegatives(nn.Module):
    """Keep, per anchor, only its hardest (most similar) negatives (Wang & Liu eq. 8-9).

    ``k``: the ``k`` most similar negatives; ``alpha``: the upper-``alpha`` share of them, i.e. the
    ``ceil(alpha * |N(i)|)`` most similar (at least one). Ties at the threshold are all kept.
    Selection uses detached similarities: it is a choice of terms, not part of the gradient.
    """

    def __init__(self, k: int | None = None, alpha: float | None = None):
        super().__init__()
        if (k is None) == (alpha is None):
            raise ValueError("give exactly one of k (number of hardest negatives) and alpha (their share)")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, Real)
                                  or not 0 < alpha <= 1):
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        self.k, self.alpha = k, alpha

    def forward(self, sim: Tensor, negatives: Tensor) -> Tensor:
        candidates = sim.detach().masked_fill(~negatives, float("-inf"))
        if self.k is not None:
            k = min(self.k, sim.shape[1])
            threshold = candidates.topk(k, dim=1).values[:, -1:]
        else:
            count = torch.ceil(self.alpha * negatives.sum(dim=1)).long().clamp(min=1)
            # the largest count is enough: a partial top-k, not a full sort of every row
            ranked = candidates.topk(int(count.max()), dim=1).values
            threshold = ranked.gather(1, (count - 1)[:, None])
        return negatives & (candidates >= threshold)

    def extra_repr(self) -> str:
        return f"k={self.k}" if self.k is not None else f"alpha={self.alpha}"


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


def _mean_over_positives(pair_loss: Tensor, rows: Tensor, pairs: Pairs) -> Tensor:
    """Average per-pair losses (indexed by anchor ``rows``) over each anchor's positives."""
    total = torch.zeros(len(pairs.n_positives), dtype=pair_loss.dtype, device=pair_loss.device)
    return total.index_add_(0, rows, pair_loss) / pairs.n_positives.clamp(min=1)


class ContrastiveLoss(PairwiseLoss):
    """``-log( e^{l(s_ip)} / denominator )`` averaged over positives, for any logit map and rule.

    ``denominator="positive+negatives"``: ``e^{l(s_ip)} + sum_{n in N(i)} e^{l(s_in)}``
    (InfoNCE/NT-Xent, SINCERE); ``denominator="all"``: ``sum_{a != i} e^{l(s_ia)}`` (SupCon L_out).
    ``positive_logit_map``: a different map for the positive pairs (e.g. DySTreSS's schedule on
    the negatives only); it needs the ``"positive+negatives"`` rule, where each positive appears
    in its own term only.
    """

    def __init__(self, logit_map: LogitMap, denominator: str = "positive+negatives",
                 reduction: Reduction = "mean", normalize: bool = True,
                 hard_negatives: HardNegatives | None = None, positive_logit_map: LogitMap | None = None):
        super().__init__(reduction, normalize, hard_negatives)
        if denominator not in DENOMINATORS:
            raise ValueError(f"denominator must be one of {DENOMINATORS}, got {denominator!r}")
        if denominator == "all" and (hard_negatives is not None or positive_logit_map is not None):
            raise ValueError("hard_negatives and positive_logit_map need denominator='positive+negatives'")
        self.logit_map = logit_map
        self.positive_logit_map = positive_logit_map
        self.denominator = denominator

    def per_anchor(self, sim: Tensor, pairs: Pairs) -> Tensor:
        logits = self.logit_map(sim)
        rows, cols = pairs.positives.nonzero(as_tuple=True)
        positive_map = self.positive_logit_map
        positive_logits = logits[rows, cols] if positive_map is None else positive_map(sim[rows, cols])
        if self.denominator == "all":
            others = ~torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
            pair_loss = masked_logsumexp(logits, others)[rows] - positive_logits
        else:
            # -log(e^a / (e^a + e^b)) = softplus(b - a), b = logsumexp over negatives (-inf if none)
            negatives = masked_logsumexp(logits, pairs.negatives)
            # threshold 40 (not 20): past it softplus returns x and drops e^-x, ~2e-9 at 20 (float64 matters)
            pair_loss = F.softplus(negatives[rows] - positive_logits, threshold=40)
        return _mean_over_positives(pair_loss, rows, pairs)

    def extra_repr(self) -> str:
        return f"denominator={self.denominator!r}, reduction={self.reduction!r}, normalize={self.normalize}"


class InfoNCE(ContrastiveLoss):
    """NT-Xent / InfoNCE with the positive in the denominator (Wang & Liu eq. 1), ``l = s / tau``.

    With class labels (several positives) each positive pair competes with the negatives only,
    which is SINCERE's definition (the natural generalisation of InfoNCE).
    """

    def __init__(self, temperature: float = 0.1, reduction: Reduction = "mean", normalize: bool = True):
        super().__init__(Scaled(temperature), "positive+negatives", reduction, normalize)


class SINCERE(ContrastiveLoss):
    """SINCERE (Feeney & Hughes): each positive competes only with other-class samples."""

    def __init__(self, temperature: float = 0.1, reduction: Reduction = "mean", normalize: bool = True):
        super().__init__(Scaled(temperature), "positive+negatives", reduction, normalize)


class SupCon(ContrastiveLoss):
    """SupCon ``L_out`` (Khosla et al.): the denominator holds all other samples.

    No ``base_temperature`` rescaling: the value is exactly the formula's.
    """

    def __init__(self, temperature: float = 0.1, reduction: Reduction = "mean", normalize: bool = True):
        super().__init__(Scaled(temperature), "all", reduction, normalize)


class TemperatureFree(ContrastiveLoss):
    """InfoNCE with logits ``2 artanh(s)`` (Kim & Kim 2025): no temperature to tune."""

    def __init__(self, eps: float = 1e-6, reduction: Reduction = "mean", normalize: bool = True):
        super().__init__(Artanh(eps), "positive+negatives", reduction, normalize)


class DySTreSS(ContrastiveLoss):
    """InfoNCE with a per-pair temperature ``tau(s)`` (Manna et al.), see :class:`CosineTemperature`.

    ``positive_temperature``: ``None`` (the authors' loss) applies ``tau(s)`` to every logit; a
    number gives the positive pairs that fixed temperature instead, the schedule acting on the
    negatives only (an ablation).
    """

    def __init__(self, tau_min: float = 0.07, tau_max: float = 0.2, detach: bool = True,
                 positive_temperature: float | None = None, reduction: Reduction = "mean",
                 normalize: bool = True):
        positive_map = None if positive_temperature is None else \
            Scaled(_positive_number("positive_temperature", positive_temperature))
        super().__init__(CosineTemperature(tau_min, tau_max, detach), "positive+negatives",
                         reduction, normalize, positive_logit_map=positive_map)


class HardContrastive(ContrastiveLoss):
    """InfoNCE over each anchor's hardest negatives only (Wang & Liu eq. 9)."""

    def __init__(self, temperature: float = 0.1, k: int | None = None, alpha: float | None = None,
                 reduction: Reduction = "mean", normalize: bool = True):
        super().__init__(Scaled(temperature), "positive+negatives", reduction, normalize,
                         HardNegatives(k, alpha))


class SimpleLoss(PairwiseLoss):
    """Wang & Liu's simple loss (eq. 3): ``-mean_p s_ip + lam * sum_{n in N(i)} s_in``.

    ``lam=None`` uses ``1 / (|N(i)| + 1)``, one over the number of terms of the InfoNCE denominator:
    the authors' code's ``1/N``, and the weight the tau -> infinity limit of InfoNCE (eq. 7) gives
    each negative. (That limit weighs the positive by ``(N-1)/N`` rather than 1, so it is exactly
    ``(N-1)/N`` times the simple loss with ``lam = 1/|N(i)|``; see ``clmini.symbolic``.)
    """

    def __init__(self, lam: float | None = None, reduction: Reduction = "mean", normalize: bool = True,
                 hard_negatives: HardNegatives | None = None):
        super().__init__(reduction, normalize, hard_negatives)
        if lam is not None and (isinstance(lam, bool) or not isinstance(lam, Real) or not math.isfinite(lam)
                                or lam < 0):
            raise ValueError(f"lam must be a finite number >= 0 or None, got {lam!r}")
        self.lam = lam

    def per_anchor(self, sim: Tensor, pairs: Pairs) -> Tensor:
        attraction = torch.where(pairs.positives, sim, 0.0).sum(dim=1) / pairs.n_positives.clamp(min=1)
        repulsion = torch.where(pairs.negatives, sim, 0.0).sum(dim=1)
        lam = 1.0 / (pairs.n_negatives + 1).to(sim.dtype) if self.lam is None else self.lam
        return -attraction + lam * repulsion

    def extra_repr(self) -> str:
        return f"lam={self.lam}, reduction={self.reduction!r}, normalize={self.normalize}"


class HardSimple(SimpleLoss):
    """The simple loss over each anchor's hardest negatives only (Wang & Liu's HardSimple)."""

    def __init__(self, k: int | None = None, alpha: float | None = None, lam: float | None = None,
                 reduction: Reduction = "mean", normalize: bool = True):
        super().__init__(lam, reduction, normalize, HardNegatives(k, alpha))


LOSSES: dict[str, type[PairwiseLoss]] = {
    "infonce": InfoNCE,
    "temperature-free": TemperatureFree,
    "dystress": DySTreSS,
    "supcon": SupCon,
    "sincere": SINCERE,
    "simple": SimpleLoss,
    "hard": HardContrastive,
    "hard-simple": HardSimple,
}


def make_loss(name: str, **kwargs) -> PairwiseLoss:
    """Build a loss by its name in :data:`LOSSES` (used by the command line and the run configs)."""
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {name!r}")
    return LOSSES[name](**kwargs)
