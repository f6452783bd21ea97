"""clmini.study.health: the spread check, on embeddings and numbers whose answer is known."""
from __future__ import annotations

import math

import numpy as np
import pytest

from clmini.study.health import spread_check, spread_threshold


def _mean_offdiagonal_cosine(z: np.ndarray) -> float:
    sim = z @ z.T
    n = len(z)
    return float((sim.sum() - np.trace(sim)) / (n * (n - 1)))


def test_threshold_is_the_sd_of_the_cosine_of_random_directions():
    rng = np.random.default_rng(0)
    d = 64
    u, v = (rng.standard_normal((200_000, d)) for _ in range(2))
    cos = (u * v).sum(1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)
    assert spread_threshold(d) == pytest.approx(1 / 8)
    assert cos.std() == pytest.approx(spread_threshold(d), rel=0.01)
    with pytest.raises(ValueError):
        spread_threshold(0)


def test_mean_negative_cosine_is_the_squared_centroid_length():
    """The module's identity: mean cosine over i != j = (N |z̄|² − 1) / (N − 1)."""
    rng = np.random.default_rng(1)
    z = rng.standard_normal((500, 16)) + 0.7
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n, centroid = len(z), z.mean(0)
    assert _mean_offdiagonal_cosine(z) == pytest.approx((n * centroid @ centroid - 1) / (n - 1))


def test_a_uniform_embedding_passes_and_a_cap_is_flagged():
    rng = np.random.default_rng(2)
    d = 128
    uniform = rng.standard_normal((2000, d))
    uniform /= np.linalg.norm(uniform, axis=1, keepdims=True)
    cap = rng.standard_normal((2000, d)) + np.r_[6.0, np.zeros(d - 1)]     # bunched around one direction
    cap /= np.linalg.norm(cap, axis=1, keepdims=True)
    check = spread_check({"uniform": [_mean_offdiagonal_cosine(uniform)] * 3,
                          "cap": [_mean_offdiagonal_cosine(cap)] * 3}, d)
    assert check.ok("uniform") and not check.ok("cap")
    assert check.flagged == {"cap": (0, 1, 2)}


def test_flags_name_configurations_and_seeds():
    check = spread_check({"InfoNCE τ=0.05": [0.24, 0.29, 0.24], "InfoNCE τ=0.1": [0.008, 0.008, 0.006],
                          "HardSimple": [0.005, 0.173, 0.047]}, 128, seeds=[0, 1, 2])
    assert check.flagged == {"InfoNCE τ=0.05": (0, 1, 2), "HardSimple": (1,)}
    assert check.kept(["InfoNCE τ=0.05", "InfoNCE τ=0.1", "HardSimple"]) == ["InfoNCE τ=0.1"]
    assert check.spread_max == pytest.approx(0.047)
    assert "InfoNCE τ=0.05 (seeds 0, 1, 2" in check.text and "HardSimple (seed 1: mean negative cosine 0.173)" \
        in check.text and "1/√128 = 0.088" in check.text and "at or below 0.047" in check.text
    assert check.caveat(["HardSimple", "InfoNCE τ=0.1"]).endswith("flags as not spread: HardSimple (seed 1).")
    assert check.caveat(["InfoNCE τ=0.1"]).startswith("None of the runs")
    with pytest.raises(KeyError):
        check.ok("Simple")


def test_nothing_flagged_and_everything_flagged():
    fine = spread_check({"a": [0.0, 0.01], "b": [-0.002, 0.03]}, 128)
    assert not fine.flagged and fine.text.startswith("every run spreads") and fine.spread_max == 0.03
    bad = spread_check({"a": [0.5, 0.9]}, 128)
    assert bad.flagged == {"a": (0, 1)} and math.isnan(bad.spread_max) and "No run stays below it" in bad.text


@pytest.mark.parametrize("values", [{}, {"a": [0.1], "b": [0.1, 0.2]}, {"a": [math.nan]}, {"a": [1.5]}, {"a": []}])
def test_rejects_bad_input(values):
    with pytest.raises(ValueError):
        spread_check(values, 128)
