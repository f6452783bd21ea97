"""The loss family of the book: every loss is a logit map, a denominator rule and a reduction.

One batch holds ``N`` embeddings and ``N`` labels; equal labels mark positives (instance ids for
self-supervised two-view batches, classes for supervised ones). For anchor ``i``:

* positives ``P(i) = {j != i : y_j == y_i}``, negatives ``N(i) = {j : y_j != y_i}``;
* a **logit map** ``l(s)`` turns a cosine similarity into a logit: ``s / tau`` (:class:`Scaled`),
  ``2 artanh(s)`` (:class:`Artanh`), ``s / tau(sg[s])`` (:class:`CosineTemperature`, DySTreSS);
* a **denominator rule** says what competes with a positive pair ``(i, p)``:
  ``"positive+negatives"`` (InfoNCE / NT-Xent, SINCERE: ``l_ip`` and the negatives),
  ``"all"`` (SupCon ``L_out``: every other sample, the other positives included) or
  ``"negatives"`` (DCL: the negatives alone, the positive decoupled); the negatives may be
  restricted to the hardest ones (:class:`HardNegatives`, Wang & Liu eq. 9);
* the temperature itself may depend on the batch (:class:`MACL`), be trained
  (:class:`LearnedTemperature`) or follow the training progress (:class:`ScheduledTemperature`);
* a **reduction**: per positive pair -> mean over the anchor's positives -> batch. Anchors without
  a positive are left out of the mean (and are 0 under ``reduction="none"``), never NaN.

Everything is computed in log-space from one ``N x N`` similarity matrix: ``logsumexp`` over
``-inf``-masked rows, ``softplus`` for ``-log(e^a / (e^a + e^b))``; no Python loop over samples.
The pairs come from the labels (:class:`Pairs`, no ``N x N`` mask), and the matrix is read by
fused row reductions (:mod:`clmini.losses.rowwise`): logit map, mask and log-sum-exp go through
one cache-sized block of rows at a time, so a loss holds ``sim`` and its gradient and little else.
Half-precision inputs are promoted to float32 before any logit is formed (``exp(s/tau)`` or
``artanh(1 - eps)`` do not survive fp16/bf16).

A new variant is one line, e.g. SINCERE with temperature-free logits::

    ContrastiveLoss(Artanh(), denominator="positive+negatives")
"""
from clmini.losses.contrastive import (DCL, DCLW, MACL, SINCERE, ContrastiveLoss, DySTreSS, HardContrastive, InfoNCE,
                                       LearnedTemperature, ScheduledTemperature, SupCon, TemperatureFree)
from clmini.losses.core import DENOMINATORS, REDUCTIONS, Pairs, PairwiseLoss, Reduction, pair_masks, two_views
from clmini.losses.logit_maps import Artanh, CosineTemperature, LogitMap, Scaled
from clmini.losses.negatives import HardNegatives
from clmini.losses.registry import LOSSES, make_loss
from clmini.losses.rowwise import masked_logsumexp
from clmini.losses.simple import HardSimple, SimpleLoss

__all__ = [
    "LogitMap", "Scaled", "Artanh", "CosineTemperature", "HardNegatives",
    "PairwiseLoss", "ContrastiveLoss", "InfoNCE", "SINCERE", "SupCon", "TemperatureFree",
    "DySTreSS", "HardContrastive", "SimpleLoss", "HardSimple",
    "DCL", "DCLW", "MACL", "LearnedTemperature", "ScheduledTemperature",
    "LOSSES", "make_loss", "two_views", "pair_masks", "Pairs", "masked_logsumexp",
    "DENOMINATORS", "REDUCTIONS", "Reduction",
]
