"""clmini: the companion package of the clmini book on contrastive losses.

One subpackage per layer; each imports only the layers below it (``tests/test_layers.py`` checks
the contract, see ``.importlinter``):

==================  ===========================================================================
:mod:`clmini.cli`       ``python -m clmini pretrain|evaluate|run|book``
:mod:`clmini.book`      chapter parameters and profiles, the papermill runner, the Jupyter Book build
:mod:`clmini.chapters`  what a single chapter needs and no other (one module per chapter)
:mod:`clmini.study`     experiments as variants of a base config, tables, comparisons, figures
:mod:`clmini.engine`    config, data, augmentations, models, objectives, trainer and hooks, run cache
:mod:`clmini.metrics`   kNN, linear probe, geometry of embeddings
:mod:`clmini.symbolic`  SymPy derivations of every loss and of the results the chapters show
:mod:`clmini.losses`    the loss family: logit maps, denominator rules, reductions, one registry
==================  ===========================================================================

Where a new thing goes: a loss in :mod:`clmini.losses` (and its derivation in
:mod:`clmini.symbolic`), a metric in :mod:`clmini.metrics` (a per-epoch one also in
:data:`clmini.engine.hooks.MONITORS`), a chapter as ``notebooks/NN_name.md`` with its own helpers,
if any, in ``clmini/chapters/``.
"""

__version__ = "0.2.0"
