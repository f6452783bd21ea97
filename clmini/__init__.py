"""clmini: the companion package of the clmini book on contrastive losses.

Modules (named after the math they hold):

- :mod:`clmini.losses`    -- the loss family: logit maps, denominator rules, reductions
- :mod:`clmini.symbolic`  -- SymPy derivations of every loss and the results the chapters show
- :mod:`clmini.data`, :mod:`clmini.augment`, :mod:`clmini.models`,
  :mod:`clmini.train`, :mod:`clmini.evaluate` -- the training and evaluation engine
- :mod:`clmini.notebooks` -- the papermill runner and the book build (``python -m clmini``)
"""

__version__ = "0.1.0"
