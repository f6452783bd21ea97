"""DySTreSS's collapsed-batch loss (chapter 3, the negatives-only ablation): SymPy against the tensor code."""
from __future__ import annotations

import math

import pytest
import sympy as sp
import torch

from clmini import symbolic as S
from clmini.losses import DySTreSS, InfoNCE
from clmini.symbolic import n_negatives, tau_max, tau_min


def collapsed_batch(n_images: int, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Two views of ``n_images`` images, every embedding the same unit vector (every cosine = 1), float64."""
    z = torch.zeros(2 * n_images, dim, dtype=torch.float64)
    z[:, 0] = 1.0
    return z, torch.arange(n_images).repeat(2)


def test_collapsed_loss_closed_forms():
    c = S.collapsed_loss()
    assert c.negative_logit == 1 / tau_max and c.positive_logit == 1 / tau_min
    assert sp.simplify(c.exponent - (1 / tau_max - 1 / tau_min)) == 0
    assert sp.simplify(c.negatives_only - sp.log(1 + n_negatives * sp.exp(1 / tau_max - 1 / tau_min))) == 0
    assert c.as_designed == sp.log(n_negatives + 1)
    # equal temperatures: the ablation is InfoNCE, whose collapsed loss is log(|N| + 1)
    assert sp.simplify(c.negatives_only.subs(tau_max, tau_min) - c.as_designed) == 0


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_collapsed_loss_is_the_ablation_loss_at_s_equal_one(n):
    c = S.collapsed_loss()
    # compare the arguments of the logs (SymPy does not cancel log differences)
    assert sp.simplify(sp.exp(c.at(n)) - sp.exp(c.negatives_only.subs(n_negatives, n))) == 0


@pytest.mark.parametrize("n_images", [2, 5, 256])
@pytest.mark.parametrize("tau_range", [(0.07, 0.2), (0.1, 0.2), (0.05, 0.5)])
def test_collapsed_loss_matches_the_losses_on_a_collapsed_batch(n_images, tau_range):
    lo, hi = tau_range
    z, labels = collapsed_batch(n_images)
    c = S.collapsed_loss()
    values = {tau_min: lo, tau_max: hi, n_negatives: 2 * n_images - 2}
    expected_ablation = float(c.negatives_only.subs(values).evalf(30))
    expected_designed = float(c.as_designed.subs(values).evalf(30))
    ablation = DySTreSS(lo, hi, positive_temperature=lo)(z, labels)
    assert ablation.dtype == torch.float64
    assert ablation.item() == pytest.approx(expected_ablation, rel=1e-12, abs=1e-14)
    for loss in (DySTreSS(lo, hi), DySTreSS(lo, hi, detach=False), InfoNCE(lo)):
        assert loss(z, labels).item() == pytest.approx(expected_designed, rel=1e-12)
    assert expected_designed == pytest.approx(math.log(2 * n_images - 1), rel=1e-15)


def test_issue_numbers_for_the_authors_cifar_range():
    """Issue 14: ``log(1 + 510 e^(-9.3)) ~ 0.05`` at [0.07, 0.2], batch 256 (510 negatives)."""
    c = S.collapsed_loss()
    value = float(c.negatives_only.subs({tau_min: 0.07, tau_max: 0.2, n_negatives: 510}).evalf(30))
    assert float(c.exponent.subs({tau_min: 0.07, tau_max: 0.2})) == pytest.approx(-9.2857, abs=1e-4)
    assert value == pytest.approx(0.0462, abs=1e-4)
