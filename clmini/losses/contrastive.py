"""The contrastive losses: ``-log(e^{l(s_ip)} / denominator)`` for a logit map and a denominator rule."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from clmini.losses.core import DENOMINATORS, Pairs, PairwiseLoss, Reduction, _mean_over_positives
from clmini.losses.logit_maps import Artanh, CosineTemperature, LogitMap, Scaled
from clmini.losses.negatives import HardNegatives
from clmini.losses.rowwise import AllOthers, LogSumExpRows, reduce_rows


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
        # who enters anchor i's log-sum-exp: every other sample, or its (kept) negatives
        terms = AllOthers() if self.denominator == "all" else pairs
        log_denominators, positive_sims = reduce_rows(sim, LogSumExpRows(self.logit_map, terms), pairs.rows, pairs.cols)
        positive_map = self.logit_map if self.positive_logit_map is None else self.positive_logit_map
        positive_logits = positive_map(positive_sims)
        if self.denominator == "all":
            pair_loss = log_denominators[pairs.rows] - positive_logits
        else:
            # -log(e^a / (e^a + e^b)) = softplus(b - a), b = logsumexp over negatives (-inf if none)
            # threshold 40 (not 20): past it softplus returns x and drops e^-x, ~2e-9 at 20 (float64 matters)
            pair_loss = F.softplus(log_denominators[pairs.rows] - positive_logits, threshold=40)
        return _mean_over_positives(pair_loss, pairs.rows, pairs)

    def extra_repr(self) -> str:
        return f"denominator={self.denominator!r}, reduction={self.reduction!r}, normalize={self.normalize}"


class InfoNCE(ContrastiveLoss):
    """NT-Xent / InfoNCE with the positive in the denominator (Wang & Liu eq. 1), ``l = s / tau``.

    With class labels (several positives) each positive pair competes with the negatives only,
    which is SINCERE's definition (the natural generalisation of InfoNCE).
    """

    def __init__(self, temperature: float = 0.1, reduction: Reduction = "mean", normalize: bool = True):
        super().__init__(Scaled(temperature), "positive+negatives", reduction, normalize)


class SINCERE(InfoNCE):
    """SINCERE (Feeney & Hughes): each positive competes only with other-class samples.

    The same formula as :class:`InfoNCE` (which generalises to several positives exactly this way);
    the name says which paper's loss a run uses.
    """


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
            Scaled(positive_temperature, name="positive_temperature")
        super().__init__(CosineTemperature(tau_min, tau_max, detach), "positive+negatives",
                         reduction, normalize, positive_logit_map=positive_map)

    def batch_statistics(self, sim: Tensor, positives: Tensor, negatives: Tensor) -> dict[str, Tensor]:
        """The mean temperature applied to the positive pairs (``tau_pos``; the fixed one with
        ``positive_temperature``) and to the negative pairs (``tau_neg``)."""
        tau = self.logit_map.temperature(sim)
        fixed = self.positive_logit_map
        tau_pos = tau[positives].mean() if fixed is None else torch.tensor(fixed.temperature, device=sim.device)
        return {"tau_pos": tau_pos, "tau_neg": tau[negatives].mean()}


class HardContrastive(ContrastiveLoss):
    """InfoNCE over each anchor's hardest negatives only (Wang & Liu eq. 9)."""

    def __init__(self, temperature: float = 0.1, k: int | None = None, alpha: float | None = None,
                 reduction: Reduction = "mean", normalize: bool = True):
        super().__init__(Scaled(temperature), "positive+negatives", reduction, normalize,
                         HardNegatives(k, alpha))
