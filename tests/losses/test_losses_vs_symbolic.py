"""Every loss of ``clmini.losses`` equals its SymPy derivation in value and gradient.

For each loss and label pattern a random float64 similarity matrix (cosines of random unit vectors)
goes through ``from_similarity(..., reduction="none")``; each anchor's value and each entry of the
autograd gradient of the summed losses, ``dL_i/ds_ij``, is compared with ``clmini.symbolic``
evaluated in 30-digit arithmetic at the same numbers: relative error <= 1e-10 (absolute floor
1e-12 for entries near 0). Anchors without a positive must give 0 and a zero gradient row; pairs
a loss does not use (the diagonal, negatives a hard loss did not select) a zero gradient.
"""
from __future__ import annotations

from fractions import Fraction
import math

import pytest
import sympy as sp
import torch
import torch.nn.functional as F

from clmini import symbolic as S
from clmini.losses import (
    DySTreSS, HardContrastive, HardSimple, InfoNCE, SINCERE, SimpleLoss, SupCon, TemperatureFree,
    two_views,
)
from clmini.losses import Artanh, CosineTemperature, Scaled

REL, ABS = 1e-10, 1e-12

# label patterns (anchor sizes stay small so the symbolic side compiles quickly)
PATTERNS = {
    "one-positive": [0, 1, 2, 3, 0, 1, 2, 3],              # two views of 4 images
    "several-positives": [0, 0, 0, 1, 1, 1, 1, 2, 2],      # 2, 3 and 1 positives per anchor
    "singletons-mixed": [0, 0, 1, 1, 1, 2, 3, 4, 5],       # 4 anchors without positive
    "single-class": [7, 7, 7, 7, 7],                       # no negatives at all
}

# (id, loss, symbolic name, parameters, hard-negative selection, detach)
CONFIGS = [
    ("infonce", InfoNCE(temperature=0.2, reduction="none"), "infonce", {"tau": 0.2}, None, True),
    ("infonce-small-tau", InfoNCE(temperature=0.05, reduction="none"), "infonce", {"tau": 0.05}, None, True),
    ("sincere", SINCERE(temperature=0.1, reduction="none"), "sincere", {"tau": 0.1}, None, True),
    ("supcon", SupCon(temperature=0.1, reduction="none"), "supcon", {"tau": 0.1}, None, True),
    ("temperature-free", TemperatureFree(reduction="none"), "temperature-free", {}, None, True),
    ("dystress", DySTreSS(tau_min=0.07, tau_max=0.2, reduction="none"), "dystress",
     {"tau_min": 0.07, "tau_max": 0.2}, None, True),
    ("dystress-full", DySTreSS(tau_min=0.1, tau_max=0.5, detach=False, reduction="none"), "dystress",
     {"tau_min": 0.1, "tau_max": 0.5}, None, False),
    ("simple", SimpleLoss(reduction="none"), "simple", {"lam": None}, None, True),
    ("simple-lam", SimpleLoss(lam=0.3, reduction="none"), "simple", {"lam": 0.3}, None, True),
    ("hard-k", HardContrastive(temperature=0.2, k=2, reduction="none"), "hard", {"tau": 0.2}, ("k", 2), True),
    ("hard-alpha", HardContrastive(temperature=0.5, alpha=0.5, reduction="none"), "hard", {"tau": 0.5},
     ("alpha", 0.5), True),
    ("hard-simple-k", HardSimple(k=3, reduction="none"), "hard-simple", {"lam": None}, ("k", 3), True),
    ("hard-simple-alpha", HardSimple(alpha=0.6, reduction="none"), "hard-simple", {"lam": None},
     ("alpha", 0.6), True),
]


def random_similarity(n: int, seed: int, dim: int = 4) -> torch.Tensor:
    """Cosines of random unit vectors, kept away from +-1 (where the temperature-free map is clamped)."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        z = F.normalize(torch.randn(n, dim, generator=generator, dtype=torch.float64), dim=1)
        sim = z @ z.T
        off_diagonal = sim[~torch.eye(n, dtype=torch.bool)]
        if off_diagonal.abs().max() < 0.999:
            return sim


def select_hard(negatives: list[int], row: list[float], selection) -> list[int]:
    """Wang & Liu's hard negatives by their definition: the top k, or the top ceil(alpha |N|)."""
    if selection is None:
        return negatives
    kind, value = selection
    # Fraction(str(alpha)): the decimal alpha the user wrote, so 0.6 * 5 is exactly 3
    count = value if kind == "k" else math.ceil(Fraction(str(value)) * len(negatives))
    return sorted(negatives, key=lambda j: row[j], reverse=True)[:count]


def assert_close(actual: float, expected: float, what: str) -> None:
    assert abs(actual - expected) <= REL * abs(expected) + ABS, \
        f"{what}: clmini {actual!r} vs SymPy {expected!r} (rel. error {abs(actual - expected) / max(abs(expected), 1e-300):.2e})"


def assert_anchor(value: float, grad_row: list[float], row: list[float], positives: list[int], negatives: list[int],
                  name: str, what: str, **params) -> None:
    """One anchor's loss and gradient row against ``S.evaluate_anchor`` at the same similarities; without
    a positive, a loss of 0 and a zero gradient row. Pairs the loss does not use must get a zero gradient."""
    expected, expected_grad = 0.0, [0.0] * len(row)
    if positives:
        at = S.evaluate_anchor(name, [row[j] for j in positives], [row[j] for j in negatives], **params)
        expected = at.value
        for j, g in zip(positives + negatives, at.grad_positives + at.grad_negatives):
            expected_grad[j] = g
    assert_close(value, expected, f"{what}: loss")
    for j, g in enumerate(expected_grad):
        assert_close(grad_row[j], g, f"{what}, dL/ds_{j}")


@pytest.mark.parametrize("pattern", list(PATTERNS))
@pytest.mark.parametrize("config", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_value_and_gradient_equal_the_symbolic_derivation(config, pattern):
    _, loss, name, params, selection, detach = config
    labels = torch.tensor(PATTERNS[pattern])
    n = len(labels)
    sim = random_similarity(n, seed=n + len(name)).requires_grad_(True)
    values = loss.from_similarity(sim, labels)
    assert values.shape == (n,) and values.dtype == torch.float64
    values.sum().backward()
    grad = sim.grad.tolist()
    rows = sim.detach().tolist()
    y = labels.tolist()
    for i in range(n):
        positives = [j for j in range(n) if j != i and y[j] == y[i]]
        negatives = select_hard([j for j in range(n) if y[j] != y[i]], rows[i], selection)
        assert_anchor(values[i].item(), grad[i], rows[i], positives, negatives, name, f"{pattern}, anchor {i}",
                      detach=detach, **params)


@pytest.mark.parametrize("config", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_embeddings_path_equals_similarity_path(config):
    """``loss(z, labels)`` normalises and forms ``z z^T``: the same values and embedding gradients."""
    loss = config[1]
    generator = torch.Generator().manual_seed(0)
    z1, z2 = (3 * torch.randn(5, 6, generator=generator, dtype=torch.float64) for _ in range(2))
    z, labels = two_views(z1, z2)
    z_a, z_b = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    direct = loss(z_a, labels)
    unit = F.normalize(z_b, dim=1)
    via_similarity = loss.from_similarity(unit @ unit.T, labels)
    torch.testing.assert_close(direct, via_similarity, rtol=1e-12, atol=1e-13)
    direct.sum().backward()
    via_similarity.sum().backward()
    torch.testing.assert_close(z_a.grad, z_b.grad, rtol=1e-10, atol=1e-12)


def test_logit_maps_carry_the_symbolic_maps():
    """The tensor logit maps' own SymPy expressions are this module's (one definition, two forms)."""
    assert sp.simplify(Scaled(0.3).symbolic(S.s) - S.scaled_logit(S.s)) == 0
    assert Scaled(0.3).symbol_values() == {S.tau: 0.3}
    assert sp.simplify(Artanh().symbolic(S.s) - S.artanh_logit(S.s)) == 0
    cosine = CosineTemperature(0.07, 0.2)
    assert sp.simplify(cosine.symbolic(S.s) - S.dystress_logit(S.s)) == 0
    assert cosine.symbol_values() == {S.tau_min: 0.07, S.tau_max: 0.2}
    # and the tensor schedule is the symbolic one
    grid = torch.linspace(-1, 1, 9, dtype=torch.float64)
    schedule = S.lambdify(S.dystress_temperature(S.s), (S.s, S.tau_min, S.tau_max))
    torch.testing.assert_close(cosine.temperature(grid), torch.as_tensor(schedule(grid.numpy(), 0.07, 0.2)),
                               rtol=1e-14, atol=1e-15)
    # each map's forward is its own SymPy expression at its own parameter values
    inside = torch.linspace(-0.99, 0.99, 41, dtype=torch.float64)
    for logit_map in (Scaled(0.3), Artanh(), cosine):
        exact = S.lambdify(logit_map.symbolic(S.s).subs(logit_map.symbol_values()), (S.s,))
        torch.testing.assert_close(logit_map(inside), torch.as_tensor(exact(inside.numpy()), dtype=torch.float64),
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("logit_map, derivative", [
    (Scaled(0.3), sp.diff(S.scaled_logit(S.s), S.s).subs(S.tau, 0.3)),
    (Artanh(), sp.diff(S.artanh_logit(S.s), S.s)),
    (CosineTemperature(0.07, 0.2), (1 / S.dystress_temperature(S.s)).subs({S.tau_min: 0.07, S.tau_max: 0.2})),
    (CosineTemperature(0.07, 0.2, detach=False), sp.diff(S.dystress_logit(S.s), S.s).subs({S.tau_min: 0.07,
                                                                                           S.tau_max: 0.2})),
], ids=["scaled", "artanh", "dystress", "dystress-full"])
def test_logit_map_derivatives_are_the_symbolic_ones(logit_map, derivative):
    """Each map's ``slope_`` (the derivative the fused row reductions apply, and its autograd's) is
    ``dl/ds`` of its SymPy expression; ``sg[s]`` in DySTreSS's temperature: ``1 / tau(s)``."""
    inside = torch.linspace(-0.99, 0.99, 41, dtype=torch.float64).requires_grad_(True)
    (grad,) = torch.autograd.grad(logit_map(inside).sum(), inside)
    exact = torch.as_tensor(S.lambdify(derivative, (S.s,))(inside.detach().numpy()), dtype=torch.float64)
    torch.testing.assert_close(grad, exact.expand_as(grad), rtol=1e-12, atol=1e-12)  # (Scaled's is a number)


def test_artanh_gradient_vanishes_where_clamped():
    s = torch.tensor([-1.0, -1 + 1e-7, 0.5, 1 - 1e-7, 1.0], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(Artanh(eps=1e-6)(s).sum(), s)
    assert grad[[0, 1, 3, 4]].eq(0).all() and grad[2] == pytest.approx(2 / (1 - 0.25), rel=1e-15)
