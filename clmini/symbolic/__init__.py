"""SymPy derivations of the loss family and of the results the chapters show.

Everything here is exact: SymPy expressions in symbols that read as the papers' notation, so a
chapter can ``glue`` them as math and a test can check the tensor code of :mod:`clmini.losses`
against them. Notation (the book's notation page, ``../shared/PAPERS.md`` section 0):

* one anchor ``i`` with positive similarities ``s_p1, s_p2, ...`` (same label) and negative
  similarities ``s_n1, s_n2, ...`` (other labels); all are cosines in ``[-1, 1]``;
* a *logit map* ``l(s)``: ``s / tau`` (InfoNCE, SupCon, SINCERE, the hard loss),
  ``2 artanh(s)`` (temperature-free), ``s / tau(s)`` with DySTreSS's cosine schedule;
* ``N`` in Wang & Liu's formulas counts the terms of the InfoNCE denominator, i.e. the positive and
  ``N - 1`` negatives.

Two layers:

1. :func:`anchor_loss` -- one anchor's loss for every loss of :data:`clmini.losses.LOSSES` as an
   :class:`AnchorLoss` (expression, gradient, lambdified functions), and :func:`evaluate_anchor`,
   its value and gradient in high precision (mpmath, 30 digits) at given similarities: the oracle
   of ``tests/losses/test_losses_vs_symbolic.py`` (:mod:`~clmini.symbolic.core`).
2. One function per result a chapter shows, each returning SymPy objects (a small frozen dataclass
   whose fields are named after the math), with the paper equation in its docstring; one module
   per paper: :mod:`~clmini.symbolic.wang_liu`, :mod:`~clmini.symbolic.temperature_free` and
   :mod:`~clmini.symbolic.equal_negatives`, :mod:`~clmini.symbolic.dystress`,
   :mod:`~clmini.symbolic.supcon_sincere`.

Derivations are cached (``functools.lru_cache``): call them freely with the same small sizes.
The logit maps' expressions are the losses' own (:meth:`clmini.losses.LogitMap.symbolic`): one
definition for the tensor code and the derivations.
"""
from clmini.symbolic import dystress, equal_negatives, supcon_sincere, temperature_free, wang_liu
from clmini.symbolic.core import *  # noqa: F403
from clmini.symbolic.core import __all__ as _core
from clmini.symbolic.dystress import *  # noqa: F403
from clmini.symbolic.supcon_sincere import *  # noqa: F403
from clmini.symbolic.temperature_free import *  # noqa: F403
from clmini.symbolic.wang_liu import *  # noqa: F403

__all__ = [*_core, *wang_liu.__all__, *temperature_free.__all__, *dystress.__all__,
           *supcon_sincere.__all__, "equal_negatives"]
