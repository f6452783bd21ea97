"""Experiments as variants of a base config, their tables and seed summaries, the book's one
comparison rule (:mod:`~clmini.study.verdicts`), the papers' claims as records
(:mod:`~clmini.study.claims`), number formatting (:mod:`~clmini.study.report`) and the figures the
chapters share (:mod:`~clmini.study.plots`)."""
