"""Fixtures shared by the tests that run the real chapters."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smoke_runs(tmp_path_factory):
    """One run cache for every smoke-sized run of the real chapters in this test session: fresh (so no
    run from another session or code version can hide a bug) and shared, as a book build shares one
    (chapters 2, 3 and 5 reuse chapter 1's runs; an exercise reuses its chapter's)."""
    return tmp_path_factory.mktemp("smoke-runs")
