"""Did a run spread its embedding? A computed check on per-run metrics, made before a run feeds a trend.

A contrastive loss pushes negatives apart; a run whose embeddings still crowd into one part of the
sphere has not done what the loss asks of it at this budget, and its numbers say more about the
training length than about the configuration. The check reads the *mean negative-pair cosine*
(``neg_sim``: the mean cosine similarity between projections of different images).

**Why that number** [derived]. For ``N`` unit vectors with centroid ``z̄``, the mean cosine over all
ordered pairs ``i ≠ j`` is ``(N ‖z̄‖² − 1) / (N − 1)``: for thousands of projections the mean
negative cosine is, to within ``1/N`` and the few positive pairs left out, the squared length of the
embedding's centroid. It is near 0 for an embedding spread over the sphere and near 1 for one
bunched in a cap.

**The threshold** [derived]. For two independent, uniformly random directions on the sphere
``S^{d−1}`` the cosine has mean 0 and variance exactly ``1/d`` (``E[(u·v)²] = Σ_k E[u_k²] E[v_k²] =
d · (1/d)²``). A run is flagged when its mean negative cosine exceeds that standard deviation,
``1/√d``: its negatives are then on average more similar than two unrelated random directions
typically are, i.e. its centroid is longer than ``d^{−1/4}``. The threshold depends only on the
dimension of the projections, not on the other runs, so a run cannot be flagged merely for being
the worst of a good set.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np


def spread_threshold(dim: int) -> float:
    """``1/√dim``: the standard deviation of the cosine of two uniform random directions in ``dim`` dimensions."""
    if int(dim) != dim or dim < 1:
        raise ValueError(f"spread_threshold: the dimension must be a positive integer, got {dim!r}")
    return 1 / math.sqrt(dim)


@dataclass(frozen=True)
class SpreadCheck:
    """The check over configurations (see the module).

    ``neg_sim``: configuration -> its per-seed mean negative cosines; ``seeds``: the seed of each
    position; ``threshold``: ``1/√dim``; ``flagged``: configuration -> the seeds above the threshold
    (only configurations with at least one); ``spread_max``: the highest mean negative cosine among
    the runs not flagged (NaN when every run is flagged); ``text``: a sentence fragment naming the
    flagged runs, or saying that none is.
    """

    dim: int
    threshold: float
    seeds: tuple
    neg_sim: Mapping[str, tuple[float, ...]]
    flagged: Mapping[str, tuple]
    spread_max: float
    text: str

    def ok(self, name: str) -> bool:
        """Whether no seed of configuration ``name`` is flagged."""
        if name not in self.neg_sim:
            raise KeyError(f"spread check: unknown configuration {name!r}")
        return name not in self.flagged

    def kept(self, names: Sequence[str]) -> list[str]:
        """``names`` without the configurations that have a flagged seed, in the same order."""
        return [n for n in names if self.ok(n)]

    def caveat(self, names: Sequence[str]) -> str:
        """A sentence on whether a comparison of ``names`` rests on flagged runs."""
        bad = [n for n in names if not self.ok(n)]
        if not bad:
            return "None of the runs this rests on is flagged by the spread check."
        return ("Of the runs this rests on, the spread check flags as not spread: "
                + "; ".join(f"{n} ({_seeds(self.flagged[n])})" for n in bad) + ".")


def _seeds(seeds: Sequence) -> str:
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(str(s) for s in seeds)


def spread_check(neg_sim: Mapping[str, Sequence[float]], dim: int, *, seeds: Sequence | None = None,
                 digits: int = 3) -> SpreadCheck:
    """Flag the runs whose mean negative cosine exceeds ``1/√dim``.

    ``neg_sim``: configuration -> one mean negative cosine per seed (the same seeds, in the order of
    ``seeds``; default ``0, 1, ...``); ``dim``: the dimension of the projections the cosines are
    measured on.
    """
    threshold = spread_threshold(dim)
    values = {}
    for name, v in neg_sim.items():
        array = np.asarray(v, dtype=float)
        if array.ndim != 1 or array.size == 0 or not np.all(np.isfinite(array)):
            raise ValueError(f"spread_check: {name!r} needs one finite value per seed, got {v!r}")
        if np.any(np.abs(array) > 1 + 1e-6):
            raise ValueError(f"spread_check: {name!r} has a cosine outside [-1, 1]: {array.tolist()}")
        values[name] = array
    if not values:
        raise ValueError("spread_check: need at least one configuration")
    sizes = {a.size for a in values.values()}
    if len(sizes) != 1:
        raise ValueError(f"spread_check: every configuration needs the same seeds, got sizes {sorted(sizes)}")
    seeds = tuple(range(sizes.pop())) if seeds is None else tuple(seeds)
    if len(seeds) != next(iter(values.values())).size:
        raise ValueError(f"spread_check: {len(seeds)} seeds for {next(iter(values.values())).size} values")
    flagged = {name: tuple(s for s, x in zip(seeds, a) if x > threshold) for name, a in values.items()}
    flagged = {name: s for name, s in flagged.items() if s}
    spread = [x for name, a in values.items() for s, x in zip(seeds, a) if s not in flagged.get(name, ())]
    spread_max = max(spread) if spread else math.nan
    limit = f"1/√{dim} = {threshold:.{digits}f}"
    if not flagged:
        text = (f"every run spreads its embedding: the highest mean negative cosine is {spread_max:.{digits}f}, "
                f"below {limit}")
    else:
        named = "; ".join(
            f"{name} ({_seeds(s)}: mean negative cosine "
            + ", ".join(f"{x:.{digits}f}" for seed, x in zip(seeds, values[name]) if seed in s) + ")"
            for name, s in flagged.items())
        text = f"the runs above {limit} did not spread their embedding: {named}"
        text += (f". Every other run stays at or below {spread_max:.{digits}f}" if spread
                 else ". No run stays below it")
    return SpreadCheck(int(dim), threshold, seeds, {n: tuple(float(x) for x in a) for n, a in values.items()},
                       flagged, float(spread_max), text)
