"""Experiments as variants of a base config, their tables and seed summaries, computed sentences
(:mod:`~clmini.study.report`) and the figures the chapters share (:mod:`~clmini.study.plots`)."""
