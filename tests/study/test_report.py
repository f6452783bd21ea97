"""clmini.study.report: the computed sentences chapters glue into their prose."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from clmini.study import report


def test_mean_std_one_and_several_values():
    assert report.mean_std([0.5]) == "0.500"
    assert report.mean_std([1.0, 3.0], digits=1) == "2.0 ± 1.4"
    assert report.mean_std([0.81], digits=1, scale=100) == "81.0"
    with pytest.raises(ValueError):
        report.mean_std([])


@pytest.mark.parametrize("y, direction, monotone", [
    ([3.0, 2.0, 1.0], "falls", True),
    ([1.0, 2.0, 3.0], "rises", True),
    ([1.0, 3.0, 2.0], "rises", False),
    ([2.0, 2.0, 2.0], "flat", True),
])
def test_trend_direction_and_monotonicity(y, direction, monotone):
    result = report.trend([0.1, 0.5, 1.0], y)
    assert (result.direction, result.monotone) == (direction, monotone)
    assert result.span == max(y) - min(y)
    assert ("not monotone" in result.text) == (not monotone)


def test_trend_sorts_by_x_and_tolerates_small_steps():
    assert report.trend([1.0, 0.1, 0.5], [1.0, 3.0, 2.0]).direction == "falls"
    assert report.trend([0.1, 0.5, 1.0], [3.0, 3.001, 1.0], tol=0.01).monotone
    assert report.trend([0.1], [1.0]).text.startswith("cannot")


def test_trend_text_names_the_extremes_when_not_monotone():
    text = report.trend([0.05, 0.2, 1.0], [2.41, 2.95, 2.38]).text
    assert text == "is not monotone: highest at τ = 0.2, lowest at τ = 1; from τ = 0.05 to τ = 1 it falls by 0.03 overall"
    assert report.trend([0.1, 1.0], [3.0, 2.0]).text == "falls monotonically, by 1 from τ = 0.1 to τ = 1"


def test_peak_interior_or_at_an_end():
    assert report.peak([0.1, 0.3, 1.0], [1, 2, 1]).interior
    end = report.peak([0.1, 0.3, 1.0], [3, 2, 1])
    assert not end.interior and end.x == 0.1 and "smallest" in end.text
    assert "too few points" in report.peak([0.1, 1.0], [1, 2]).text
    within = report.peak([0.1, 0.3, 1.0], [1.0, 1.05, 1.0], threshold=0.1)
    assert not within.interior and "no clear reverse U" in within.text


def test_trend_with_a_threshold():
    flat = report.trend([0.1, 0.5, 1.0], [1.0, 1.02, 1.01], tol=0.05)
    assert flat.direction == "flat" and flat.text.startswith("changes by no more than the threshold of 0.05")
    assert report.trend([0.1, 0.5, 1.0], [1.0, 0.98, 2.0], tol=0.05).monotone


def test_compare_against_margin_and_spread():
    clear = report.compare(0.80, 0.78, margin=0.01)
    assert clear.beats and "more than the threshold of 0.010" in clear.text
    assert not report.compare(0.80, 0.78, margin=0.01, spread=0.05).beats
    lower = report.compare(0.70, 0.78, margin=0.01)
    assert not lower.beats and lower.text.startswith("is lower by 0.080, more than")
    assert "not a clear difference" in report.compare(0.785, 0.78, margin=0.01).text


def test_compare_runs_uses_twice_the_larger_seed_std():
    result = report.compare_runs([0.80, 0.82], [0.70], margin=0.01)
    assert math.isclose(result.spread, 2 * pd.Series([0.80, 0.82]).std())
    assert report.compare_runs([0.8], [0.7]).spread == 0.0  # unknown with one seed: counts as 0


def test_agreement_sentences():
    falls = report.trend([1, 2, 3], [3, 2, 1])
    rises = report.trend([1, 2, 3], [1, 2, 3])
    wobbly = report.trend([1, 2, 3], [3, 3.5, 1])
    expected = {"uniformity": "falls", "tolerance": "rises"}
    assert report.agreement({"uniformity": falls, "tolerance": rises}, expected).endswith("rises).")
    assert "uniformity is not monotone" in report.agreement({"uniformity": wobbly, "tolerance": rises}, expected)
    assert report.agreement({"uniformity": rises, "tolerance": rises}, expected).startswith("Only tolerance")
    assert report.agreement({"uniformity": rises, "tolerance": falls}, expected).startswith("Neither")


def test_wide_table_one_column_per_label_mean_std_over_seeds():
    table = pd.DataFrame({"column": ["a", "a", "b"], "acc": [0.80, 0.82, 0.75], "unif": [1.0, 1.0, 2.0]})
    wide = report.wide_table(table, "column", {"acc": "accuracy %", "unif": "uniformity"}, order=["b", "a"],
                             scale={"acc": 100}, digits={"acc": 1})
    assert list(wide.columns) == ["b", "a"] and list(wide.index) == ["accuracy %", "uniformity"]
    assert wide.loc["accuracy %", "b"] == "75.0"
    assert wide.loc["accuracy %", "a"] == "81.0 ± 1.4"
    assert wide.loc["uniformity", "a"] == "1.000 ± 0.000"
