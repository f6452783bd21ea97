"""Which negatives enter a loss: all of them, or each anchor's hardest (Wang & Liu eq. 8-9)."""
from __future__ import annotations

from numbers import Real

import torch
from torch import Tensor, nn


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
