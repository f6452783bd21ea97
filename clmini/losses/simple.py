"""Wang & Liu's simple loss: linear in the similarities, the tau -> infinity limit of InfoNCE."""
from __future__ import annotations

import math
from numbers import Real

from torch import Tensor

from clmini.losses.core import Pairs, PairwiseLoss, Reduction, _mean_over_positives
from clmini.losses.negatives import HardNegatives
from clmini.losses.rowwise import SumRows, reduce_rows


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
        repulsion, positive_sims = reduce_rows(sim, SumRows(pairs), pairs.rows, pairs.cols)
        attraction = _mean_over_positives(positive_sims, pairs.rows, pairs)
        lam = 1.0 / (pairs.n_negatives + 1).to(sim.dtype) if self.lam is None else self.lam
        return -attraction + lam * repulsion

    def extra_repr(self) -> str:
        return f"lam={self.lam}, reduction={self.reduction!r}, normalize={self.normalize}"


class HardSimple(SimpleLoss):
    """The simple loss over each anchor's hardest negatives only (Wang & Liu's HardSimple)."""

    def __init__(self, k: int | None = None, alpha: float | None = None, lam: float | None = None,
                 reduction: Reduction = "mean", normalize: bool = True):
        super().__init__(lam, reduction, normalize, HardNegatives(k, alpha))
