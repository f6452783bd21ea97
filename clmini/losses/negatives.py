"""Which negatives enter a loss: all of them, or each anchor's hardest (Wang & Liu eq. 8-9)."""
from __future__ import annotations

from numbers import Real
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from clmini.losses.rowwise import row_blocks

if TYPE_CHECKING:
    from clmini.losses.core import Pairs


# --------------------------------------------------------------------------- negative selection
class HardNegatives(nn.Module):
    """Keep, per anchor, only its hardest (most similar) negatives (Wang & Liu eq. 8-9).

    ``k``: the ``k`` most similar negatives; ``alpha``: the upper-``alpha`` share of them, i.e. the
    ``ceil(alpha * |N(i)|)`` most similar (at least one). Ties at the threshold are all kept.
    Selection uses detached similarities: it is a choice of terms, not part of the gradient.

    Either way it is one threshold per anchor, the similarity of its ``count``-th hardest negative:
    :meth:`select` finds them block of rows by block of rows (what the losses use), ``forward``
    turns them into a mask.
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
        """The kept negatives as a boolean ``[N, N]`` mask, from ``sim`` and the negatives' mask."""
        sim = sim.detach()
        candidates = sim.masked_fill(~negatives, float("-inf"))                           # [N, N]
        threshold = self._threshold_(candidates, negatives.sum(dim=1))
        return negatives & (sim >= threshold[:, None])                                    # [N, N]

    def select(self, sim: Tensor, pairs: Pairs) -> tuple[Tensor, Tensor]:
        """Each anchor's threshold ``[N]`` (keep the negatives at least this similar) and the number of
        negatives it keeps ``[N]`` (more than the count on ties), without an ``N x N`` temporary."""
        sim = sim.detach()
        thresholds = sim.new_empty(sim.shape[0])
        kept = torch.empty_like(pairs.n_negatives)
        for rows, scratch in row_blocks(sim):
            candidates = pairs.fill_outside_(scratch.floats.copy_(sim[rows]), sim[rows], rows.start,
                                             float("-inf"), scratch)                        # [B, N]
            thresholds[rows] = self._threshold_(candidates, pairs.n_negatives[rows])
            # counted as floats (integer reductions are not vectorised); a threshold of -inf (k above
            # the number of negatives) counts the non-negatives too, hence the minimum
            at_least = torch.ge(candidates, thresholds[rows, None], out=candidates).sum(dim=1)  # [B, N] -> [B]
            kept[rows] = torch.minimum(at_least.long(), pairs.n_negatives[rows])
        return thresholds, kept

    def _threshold_(self, candidates: Tensor, n_negatives: Tensor) -> Tensor:
        """Per row of ``candidates`` ``[B, N]`` (-inf off the negatives; reordered in place), the
        similarity of its ``count``-th hardest negative (-inf when it has fewer)."""
        if self.k is not None:
            count = torch.full_like(n_negatives, min(self.k, candidates.shape[1]))
        else:
            count = torch.ceil(self.alpha * n_negatives).long().clamp(min=1)
        return _kth_largest_(candidates, count)

    def extra_repr(self) -> str:
        return f"k={self.k}" if self.k is not None else f"alpha={self.alpha}"


def _kth_largest_(values: Tensor, k: Tensor) -> Tensor:
    """The ``k_i``-th largest entry of each row ``i`` of ``values`` ``[B, N]``, which it may reorder.

    On the CPU, NumPy's in-place partition (a vectorised quickselect: one O(N) pass per row and
    needed position) is several times faster than ``topk``, which sorts (value, index) pairs.
    """
    if values.device.type == "cpu":
        position = values.shape[1] - k                                 # ascending order: N - k
        values.numpy().partition(position.unique().tolist(), axis=1)   # [B, N], in place
        return values.gather(1, position[:, None]).squeeze(1)
    # the largest k is enough: a partial top-k, not a full sort of every row
    return values.topk(int(k.max()), dim=1).values.gather(1, (k - 1)[:, None]).squeeze(1)
