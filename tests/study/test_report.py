"""clmini.study.report: how chapters print numbers (the comparisons are clmini.study.verdicts')."""
from __future__ import annotations


import pandas as pd
import pytest

from clmini.study import report


def test_mean_std_one_and_several_values():
    assert report.mean_std([0.5]) == "0.500"
    assert report.mean_std([1.0, 3.0], digits=1) == "2.0 ± 1.4"
    assert report.mean_std([0.81], digits=1, scale=100) == "81.0"
    with pytest.raises(ValueError):
        report.mean_std([])


def test_wide_table_one_column_per_label_mean_std_over_seeds():
    table = pd.DataFrame({"column": ["a", "a", "b"], "acc": [0.80, 0.82, 0.75], "unif": [1.0, 1.0, 2.0]})
    wide = report.wide_table(table, "column", {"acc": "accuracy %", "unif": "uniformity"}, order=["b", "a"],
                             scale={"acc": 100}, digits={"acc": 1})
    assert list(wide.columns) == ["b", "a"] and list(wide.index) == ["accuracy %", "uniformity"]
    assert wide.loc["accuracy %", "b"] == "75.0"
    assert wide.loc["accuracy %", "a"] == "81.0 ± 1.4"
    assert wide.loc["uniformity", "a"] == "1.000 ± 0.000"
