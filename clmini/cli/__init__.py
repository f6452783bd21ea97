"""The command line (``python -m clmini``): ``pretrain``/``evaluate`` (:mod:`~clmini.cli.train`) and
``run``/``book`` (:mod:`~clmini.cli.book`)."""
