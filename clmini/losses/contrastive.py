"""The contrastive losses: ``-log(e^{l(s_ip)} / denominator)`` for a logit map and a denominator rule."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clmini.losses.core import (DENOMINATORS, Pairs, PairwiseLoss, Reduction, _mean_over_positives, _number_in,
                                _positive_number, _temperature)
from clmini.losses.logit_maps import Artanh, CosineTemperature, LogitMap, Scaled
from clmini.losses.negatives import HardNegatives
from clmini.losses.rowwise import AllOthers, LogSumExpRows, reduce_rows


class ContrastiveLoss(PairwiseLoss):
    """``-log( e^{l(s_ip)} / denominator )`` averaged over positives, for any logit map and rule.

    ``denominator="positive+negatives"``: ``e^{l(s_ip)} + sum_{n in N(i)} e^{l(s_in)}``
    (InfoNCE/NT-Xent, SINCERE); ``denominator="all"``: ``sum_{a != i} e^{l(s_ia)}`` (SupCon L_out);
    ``denominator="negatives"``: ``sum_{n in N(i)} e^{l(s_in)}``, the positive decoupled from the
    denominator (DCL, Yeh et al.): the pair loss ``-w_ip l(s_ip) + log sum_n e^{l(s_in)}`` may be
    negative, with the weight ``w_ip`` of :meth:`positive_weights` (1 unless a subclass says otherwise)
    and needs at least one negative per anchor.
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
        return _mean_over_positives(self.pair_losses(sim, pairs, self.logit_map), pairs.rows, pairs)

    def pair_losses(self, sim: Tensor, pairs: Pairs, logit_map: LogitMap) -> Tensor:
        """The loss of every positive pair ``(pairs.rows, pairs.cols)`` ``[P]`` with ``logit_map``."""
        if self.denominator == "negatives" and bool((pairs.n_negatives[pairs.rows] == 0).any()):
            raise ValueError("labels: an anchor has no negative (every sample shares its label); a "
                             "decoupled denominator (the negatives alone) needs at least one")
        # who enters anchor i's log-sum-exp: every other sample, or its (kept) negatives
        terms = AllOthers() if self.denominator == "all" else pairs
        log_denominators, positive_sims = reduce_rows(sim, LogSumExpRows(logit_map, terms), pairs.rows, pairs.cols)
        positive_map = logit_map if self.positive_logit_map is None else self.positive_logit_map
        positive_logits = positive_map(positive_sims)
        if self.denominator == "all":
            return log_denominators[pairs.rows] - positive_logits
        if self.denominator == "negatives":
            weights = self.positive_weights(positive_sims.detach(), pairs)
            return log_denominators[pairs.rows] - (positive_logits if weights is None else weights * positive_logits)
        # -log(e^a / (e^a + e^b)) = softplus(b - a), b = logsumexp over negatives (-inf if none)
        # threshold 40 (not 20): past it softplus returns x and drops e^-x, ~2e-9 at 20 (float64 matters)
        return F.softplus(log_denominators[pairs.rows] - positive_logits, threshold=40)

    def positive_weights(self, positive_sims: Tensor, pairs: Pairs) -> Tensor | None:
        """Constant weights ``[P]`` of the positive logits under the decoupled rule (``None``: all 1)."""
        return None

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


# --------------------------------------------------------------------------- the temperature's rivals
class DCL(ContrastiveLoss):
    """Decoupled contrastive loss (Yeh et al. 2022): InfoNCE without the positive in its denominator,
    ``-s_ip / tau + log sum_{n in N(i)} e^{s_in / tau}`` (the ``"negatives"`` rule).

    Taking the positive out removes the factor ``1 - p_ip`` (``p_ip`` the softmax weight of the
    positive) that shrinks InfoNCE's gradient when the positive is already the closest, most
    strongly at small batches. As lightly's ``DCLLoss``, averaged over every anchor of both views.
    """

    def __init__(self, temperature: float = 0.1, reduction: Reduction = "mean", normalize: bool = True):
        super().__init__(Scaled(temperature), "negatives", reduction, normalize)


class DCLW(DCL):
    """DCL with the negative von Mises-Fisher weight on each positive (Yeh et al. 2022, DCLW):
    ``w_p = 2 - P * softmax_p(s_p / sigma)`` over the batch's ``P`` positive pairs, a constant of
    the gradient (their mean is 1; harder positives, of lower similarity, weigh more).

    In a two-view batch every image's two pairs share one similarity, and this is lightly's
    ``DCLWLoss`` (``2 - B softmax`` over the ``B`` images); with several positives per anchor the
    softmax runs over all positive pairs.
    """

    def __init__(self, temperature: float = 0.1, sigma: float = 0.5, reduction: Reduction = "mean",
                 normalize: bool = True):
        super().__init__(temperature, reduction, normalize)
        self.sigma = _temperature("sigma", sigma)

    def positive_weights(self, positive_sims: Tensor, pairs: Pairs) -> Tensor:
        return 2 - positive_sims.numel() * torch.softmax(positive_sims / self.sigma, dim=0)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", sigma={self.sigma}"


class MACL(ContrastiveLoss):
    """Model-aware contrastive learning (Huang et al. 2023): InfoNCE at a temperature that grows with
    the batch's alignment, with its reweighting.

    ``tau_A = tau_0 (1 + alpha (A - A_0))``, ``A`` the mean similarity of the batch's positive pairs
    (detached): an embedding that already aligns its views is trained at a higher temperature
    (more tolerant), a poorly aligned one at a lower (more uniform). Each pair's InfoNCE loss
    ``-log p_ip`` is weighted by ``V_ip = 1 / (1 - p_ip + eps)`` (detached), which undoes the
    ``1 - p_ip`` factor of its gradient, as DCL does by other means.

    As lightly's ``MACLLoss`` (``eps = 1e-8``), with one documented difference: lightly accepts
    ``alpha`` and ``A_0`` in ``[0, 1]``, which lets ``tau_A`` reach 0 or below (alpha 1, A_0 1, A < 0);
    here ``tau_A`` must be positive for every ``A`` in ``[-1, 1]``: ``alpha (1 + A_0) < 1``.
    ``1 - p_ip`` is computed as ``-expm1(-loss_ip)``, exact where lightly's ``1 - exp(log p)`` rounds.
    """

    def __init__(self, temperature: float = 0.1, alpha: float = 0.5, a0: float = 0.0, eps: float = 1e-8,
                 reduction: Reduction = "mean", normalize: bool = True):
        super().__init__(Scaled(temperature), "positive+negatives", reduction, normalize)
        self.temperature = self.logit_map.temperature
        alpha, a0 = _number_in("alpha", alpha, 0, math.inf), _number_in("a0", a0, -1, 1)  # a mean cosine similarity
        if alpha * (1 + a0) >= 1:
            raise ValueError(f"alpha * (1 + a0) must be < 1, so that the temperature "
                             f"tau_0 (1 + alpha (A - a0)) stays > 0 for every A in [-1, 1]; got alpha={alpha!r}, a0={a0!r}")
        self.alpha, self.a0 = float(alpha), float(a0)
        # the lowest temperature a batch can get (A = -1) must itself be a legal temperature
        _temperature("temperature * (1 - alpha (1 + a0)) (the lowest batch temperature)",
                     self.temperature * (1 - self.alpha * (1 + self.a0)))
        self.eps = _positive_number("eps", eps)

    def batch_temperature(self, mean_positive: Tensor | float) -> float:
        """``tau_A`` for the batch's mean positive similarity ``A``."""
        return _temperature("the batch temperature", self.temperature * (1 + self.alpha * (float(mean_positive) - self.a0)))

    def per_anchor(self, sim: Tensor, pairs: Pairs) -> Tensor:
        mean_positive = sim.detach()[pairs.rows, pairs.cols].mean()
        pair_loss = self.pair_losses(sim, pairs, Scaled(self.batch_temperature(mean_positive)))
        weights = 1 / (-torch.expm1(-pair_loss.detach()) + self.eps)
        return _mean_over_positives(weights * pair_loss, pairs.rows, pairs)

    def batch_statistics(self, sim: Tensor, positives: Tensor, negatives: Tensor) -> dict[str, Tensor]:
        """The temperature the batch was trained at (``tau``)."""
        return {"tau": torch.tensor(self.batch_temperature(sim[positives].mean()), device=sim.device)}

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}, a0={self.a0}, " + super().extra_repr()


class LearnedTemperature(ContrastiveLoss):
    """InfoNCE whose temperature is trained with the network, as CLIP's (Radford et al. 2021).

    The parameter is the log of the logit scale, ``theta = log(1 / tau)``, started at
    ``log(1 / initial_temperature)``; the scale ``e^theta`` is clamped to at most ``max_scale`` (CLIP:
    100, i.e. ``tau >= 0.01``), where the clamp also stops its gradient. The logits are
    ``s e^theta``; ``dL/dtheta = e^theta dL/d(e^theta)``. The engine trains ``theta`` without weight
    decay and records ``tau`` at every step (:meth:`batch_statistics`).
    """

    def __init__(self, initial_temperature: float = 0.07, max_scale: float = 100.0, reduction: Reduction = "mean",
                 normalize: bool = True):
        super().__init__(Scaled(1.0), "positive+negatives", reduction, normalize)
        initial_temperature = _temperature("initial_temperature", initial_temperature)
        self.max_scale = _positive_number("max_scale", max_scale)
        _temperature("1 / max_scale (the smallest temperature)", 1 / self.max_scale)
        if 1 / initial_temperature > self.max_scale:
            raise ValueError(f"initial_temperature must be >= 1 / max_scale = {1 / self.max_scale:g}, "
                             f"got {initial_temperature!r}")
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / initial_temperature)))

    def scale(self) -> Tensor:
        """``min(e^theta, max_scale)``: the factor of the logits."""
        return self.log_scale.exp().clamp(max=self.max_scale)

    @property
    def temperature(self) -> float:
        return float(1 / self.scale().detach())

    def _similarity(self, z: Tensor) -> Tensor:
        # the scale enters through one side of the product: [N, D] work, no second N x N matrix
        return (z * self.scale().to(z.dtype)) @ z.T

    def _given_similarity(self, sim: Tensor) -> Tensor:
        return sim * self.scale().to(sim.dtype)

    def batch_statistics(self, sim: Tensor, positives: Tensor, negatives: Tensor) -> dict[str, Tensor]:
        """The current temperature ``tau = 1 / scale`` (its trajectory, epoch by epoch, in the history)."""
        return {"tau": (1 / self.scale()).detach()}

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:.6g}, max_scale={self.max_scale}, " + super().extra_repr()


class ScheduledTemperature(InfoNCE):
    """InfoNCE at a temperature that follows a cosine over training (Kukleva et al. 2023):
    ``tau(p) = tau_min + (tau_max - tau_min) (1 + cos(2 pi periods p)) / 2``, ``p`` the training
    progress in ``[0, 1]`` (:meth:`set_progress`, told by the engine before every step).

    ``periods`` cycles over the run: 1 starts at ``tau_max`` (uniformity is cheap, the temperature
    high: group-wise), reaches ``tau_min`` (instance discrimination) half-way and returns. Before any
    progress is told it is at ``p = 0``.
    """

    def __init__(self, tau_min: float = 0.1, tau_max: float = 1.0, periods: float = 1.0, reduction: Reduction = "mean",
                 normalize: bool = True):
        tau_min, tau_max = _temperature("tau_min", tau_min), _temperature("tau_max", tau_max)
        if tau_min > tau_max:
            raise ValueError(f"tau_min must be <= tau_max, got tau_min={tau_min!r} > tau_max={tau_max!r}")
        super().__init__(tau_max, reduction, normalize)
        self.tau_min, self.tau_max = tau_min, tau_max
        self.periods = _positive_number("periods", periods)
        self.progress = 0.0

    def temperature_at(self, progress: float) -> float:
        """``tau(p)``."""
        progress = _number_in("progress", progress, 0, 1)
        cosine = (1 + math.cos(2 * math.pi * self.periods * progress)) / 2
        return min(max(self.tau_min + (self.tau_max - self.tau_min) * cosine, self.tau_min), self.tau_max)

    def set_progress(self, progress: float) -> None:
        self.logit_map.temperature = self.temperature_at(progress)
        self.progress = float(progress)

    def batch_statistics(self, sim: Tensor, positives: Tensor, negatives: Tensor) -> dict[str, Tensor]:
        """The temperature of the step (``tau``)."""
        return {"tau": torch.tensor(self.logit_map.temperature, device=sim.device)}

    def extra_repr(self) -> str:
        return (f"tau_min={self.tau_min}, tau_max={self.tau_max}, periods={self.periods}, "
                f"progress={self.progress:g}, " + super().extra_repr())
