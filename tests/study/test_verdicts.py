"""clmini.study.verdicts: the one comparison rule, on synthetic numbers whose verdicts are known."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from clmini.study import verdicts
from clmini.study.verdicts import paired, peak, sensitivity, trend


def test_paired_interval_is_the_student_t_interval_of_the_differences():
    a, b = [0.80, 0.83, 0.81, 0.84], [0.78, 0.80, 0.80, 0.81]
    d = np.subtract(a, b)
    half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    result = paired(a, b, a="A", b="B")
    assert result.mean == pytest.approx(d.mean())
    assert (result.low, result.high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert result.verdict == "A above B" and result.resolved == 1
    assert result.n == 4 and result.differences == pytest.approx(tuple(d))
    assert result.text.startswith("A is above B by 0.02") and "4 paired seeds" in result.text


def test_pairing_removes_the_shared_seed_variation():
    """Seeds move both configurations a lot, the difference little: paired, it is resolved;
    the same numbers compared as independent groups would overlap completely."""
    seed_effect = np.array([0.70, 0.80, 0.75, 0.85])
    a, b = seed_effect + 0.010 + [0.001, -0.001, 0.0, 0.0005], seed_effect
    assert paired(a, b).verdict == "A above B"
    assert paired(b, a, a="SupCon", b="SINCERE").verdict == "SINCERE above SupCon"
    assert paired(b, a).resolved == -1
    # the sentence reads "SINCERE is above SupCon by x": its interval is that of SINCERE - SupCon
    text = paired(b, a, a="SupCon", b="SINCERE").text
    assert text.startswith("SINCERE is above SupCon by 0.010 (95 % CI +0.0")


@pytest.mark.parametrize("a, b, why", [
    ([0.80, 0.70, 0.82], [0.75, 0.76, 0.74], "the interval contains 0"),   # noisy differences
    ([0.80, 0.80, 0.80], [0.80, 0.80, 0.80], "the interval contains 0"),   # identical
    ([0.90, 0.91], [0.10, 0.11], "fewer than 3 seeds"),                   # huge, but two seeds
    ([0.90], [0.10], "fewer than 3 seeds"),                               # one seed: no interval
])
def test_cases_that_must_not_resolve(a, b, why):
    result = paired(a, b)
    assert result.verdict == "not resolved" and result.resolved == 0
    assert why in result.text


def test_one_seed_has_no_interval():
    result = paired([0.9], [0.1])
    assert math.isnan(result.low) and math.isnan(result.high)
    assert "needs ≥ 2 seeds" in result.interval and "1 seed, no interval" in result.text


def test_a_constant_nonzero_difference_is_resolved():
    assert paired([0.81, 0.71, 0.91], [0.80, 0.70, 0.90]).verdict == "A above B"


def test_confidence_level_changes_the_verdict_on_the_border():
    d = np.array([0.01, 0.03, -0.002])  # 95 %: contains 0; 50 %: does not
    assert paired(d, [0, 0, 0]).verdict == "not resolved"
    assert paired(d, [0, 0, 0], confidence=0.5).verdict == "A above B"


@pytest.mark.parametrize("a, b, match", [
    ([0.1, 0.2], [0.1], "same, non-zero number of seeds"),
    ([], [], "same, non-zero number of seeds"),
    ([0.1, math.nan, 0.2], [0.1, 0.2, 0.3], "finite"),
    ([[0.1, 0.2]], [[0.1, 0.2]], "1-d"),
])
def test_paired_refuses_bad_input(a, b, match):
    with pytest.raises(ValueError, match=match):
        paired(a, b)
    with pytest.raises(ValueError, match="confidence"):
        paired([1, 2, 3], [1, 2, 3], confidence=1.0)


SEEDS = np.array([0.0, 0.02, -0.01])  # a seed effect shared by every grid point


def grid(means, noise=(0.0, 0.0, 0.0)):
    return [m + SEEDS + np.asarray(noise) for m in means]


def test_trend_rises_monotone_and_sorts_the_grid():
    result = trend([1.0, 0.1, 0.5], grid([0.9, 0.5, 0.7], noise=(0.001, -0.001, 0.0)))
    assert result.direction == "rises" and result.monotone
    assert result.overall.a == "τ = 1" and result.overall.b == "τ = 0.1"
    assert "rises from τ = 0.1 to τ = 1 by 0.400" in result.text
    assert "no step resolved the other way" in result.text


def test_trend_with_a_resolved_reversal_is_not_monotone():
    result = trend([0.1, 0.5, 1.0], grid([0.5, 0.8, 0.7]))
    assert result.direction == "rises" and not result.monotone
    assert [s.b for s in result.reversals] == ["τ = 0.5"]
    assert "goes back from τ = 0.5 to τ = 1" in result.text


def test_trend_that_must_not_resolve():
    noisy = [np.array([0.80, 0.70, 0.90]), np.array([0.81, 0.72, 0.86]), np.array([0.79, 0.74, 0.85])]
    result = trend([0.1, 0.5, 1.0], noisy)
    assert result.direction == "not resolved" and not result.monotone
    assert "does not change resolvably" in result.text


def test_trend_falls_and_two_seed_grids_never_resolve():
    assert trend([0.1, 1.0], grid([0.9, 0.5])).direction == "falls"
    assert trend([0.1, 1.0], [[0.9, 0.91], [0.1, 0.11]]).direction == "not resolved"


def test_peak_inside_resolved_and_not_resolved():
    reverse_u = peak([0.05, 0.2, 1.0], grid([0.70, 0.80, 0.72]))
    assert reverse_u.interior and reverse_u.x == 0.2 and "a reverse U" in reverse_u.text
    barely = peak([0.05, 0.2, 1.0], grid([0.70, 0.80, 0.72], noise=(0.0, 0.0, 0.0))[:2]
                  + [np.array([0.90, 0.71, 0.71])])
    assert not barely.interior and "no resolved reverse U" in barely.text
    at_end = peak([0.05, 0.2, 1.0], grid([0.9, 0.8, 0.7]))
    assert not at_end.interior and "smallest τ of the grid" in at_end.text and at_end.against_ends == ()
    assert "too few points" in peak([0.1, 1.0], grid([0.8, 0.7])).text


def test_grid_input_checks():
    with pytest.raises(ValueError, match="one row of per-seed values per grid point"):
        trend([0.1, 0.5], [[0.1, 0.2, 0.3]])
    with pytest.raises(ValueError, match="distinct"):
        trend([0.1, 0.1], grid([0.5, 0.6]))
    with pytest.raises(ValueError, match="one row of per-seed values"):
        peak([0.1, 0.5, 1.0], [[0.1, 0.2, 0.3], [0.1, 0.2], [0.3, 0.4, 0.5]])


def test_sensitivity_flags_a_metric_the_configurations_do_not_move():
    seeds = np.array([0.0, 0.01, -0.01])
    moving = sensitivity({"a": 0.70 + seeds, "b": 0.80 + seeds}, [0.6, 0.61, 0.59], metric="kNN")
    assert not moving.saturated and moving.range == pytest.approx(0.1)
    assert moving.init == pytest.approx(0.6) and "moves more than the seeds do" in moving.text
    stuck = sensitivity({"a": 0.820 + seeds, "b": 0.825 + seeds}, 0.82, metric="probe")
    assert stuck.saturated and "cannot rank them here" in stuck.text
    one_seed = sensitivity({"a": [0.7], "b": [0.8]}, 0.6)
    assert one_seed.saturated and math.isnan(one_seed.seed_sd) and "not known" in one_seed.text
    with pytest.raises(ValueError):
        sensitivity({}, 0.6)


def test_min_seeds_is_three():
    assert verdicts.MIN_SEEDS == 3
