"""The temperature's rivals (chapter 5): DCL, DCLW, MACL, a learned and a scheduled temperature.

Each agrees with its SymPy derivation (``clmini.symbolic``, 30-digit arithmetic) in value and in
gradient, float64, relative error <= 1e-10, on every label pattern of the other losses' test; the
batch-level quantities (DCLW's weights, MACL's batch temperature and reweighting) are computed here
from their definitions and given to the derivation as the constants they are in the gradient. DCL,
DCLW and MACL also agree with lightly's ``DCLLoss``, ``DCLWLoss`` and ``MACLLoss`` on two-view
batches, value and gradient with respect to the embeddings.
"""
from __future__ import annotations

import math

import pytest
import sympy as sp
import torch

from clmini import symbolic as S
from clmini.losses import DCL, DCLW, MACL, InfoNCE, LearnedTemperature, ScheduledTemperature, make_loss, two_views
from test_losses_vs_symbolic import PATTERNS, assert_anchor, assert_close, random_similarity


def anchors(labels: list[int], i: int) -> tuple[list[int], list[int]]:
    return ([j for j in range(len(labels)) if j != i and labels[j] == labels[i]],
            [j for j in range(len(labels)) if labels[j] != labels[i]])


def check_against_symbolic(loss, name: str, labels: list[int], seed: int, params_of=lambda sim, pos: {}) -> None:
    """``loss`` (reduction none) against ``S.evaluate_anchor(name, ...)`` for every anchor and entry;
    ``params_of(sim, positive pairs)`` -> {anchor: parameters} or parameters shared by all anchors."""
    n = len(labels)
    sim = random_similarity(n, seed=seed).requires_grad_(True)
    values = loss.from_similarity(sim, torch.tensor(labels))
    values.sum().backward()
    rows, grad = sim.detach().tolist(), sim.grad.tolist()
    pairs = [(i, p) for i in range(n) for p in anchors(labels, i)[0]]
    params = params_of(rows, pairs)
    for i in range(n):
        positives, negatives = anchors(labels, i)
        assert_anchor(values[i].item(), grad[i], rows[i], positives, negatives, name, f"{name}, anchor {i}",
                      **(params.get(i, {}) if any(isinstance(k, int) for k in params) else params))


WITH_NEGATIVES = [p for p in PATTERNS if p != "single-class"]


@pytest.mark.parametrize("pattern", WITH_NEGATIVES)
def test_dcl_equals_its_derivation(pattern):
    check_against_symbolic(DCL(0.2, reduction="none"), "dcl", PATTERNS[pattern], seed=1, params_of=lambda *_: {"tau": 0.2})


@pytest.mark.parametrize("pattern", WITH_NEGATIVES)
def test_dclw_equals_its_derivation_with_the_batch_weights(pattern):
    sigma, labels = 0.5, PATTERNS[pattern]

    def weights(rows, pairs):
        # w_p = 2 - P softmax(s_p / sigma) over the batch's P positive pairs, by the definition
        e = [math.exp(rows[i][p] / sigma) for i, p in pairs]
        w = {pair: 2 - len(pairs) * x / sum(e) for pair, x in zip(pairs, e)}
        return {i: {"tau": 0.3, "weights": [w[i, p] for p in anchors(labels, i)[0]]} for i in range(len(labels))
                if anchors(labels, i)[0]}
    check_against_symbolic(DCLW(0.3, sigma=sigma, reduction="none"), "dclw", labels, seed=2, params_of=weights)


@pytest.mark.parametrize("pattern", WITH_NEGATIVES)
def test_macl_equals_its_derivation_at_the_batch_temperature(pattern):
    tau0, alpha, a0, eps, labels = 0.2, 0.5, 0.1, 1e-8, PATTERNS[pattern]

    def constants(rows, pairs):
        mean = sum(rows[i][p] for i, p in pairs) / len(pairs)
        t = float(S.macl_temperature().subs({S.tau: tau0, S.alpha: alpha, S.a0: a0, S.mean_positive: mean}))
        out = {}
        for i in range(len(labels)):
            positives, negatives = anchors(labels, i)
            if not positives:
                continue
            weights = []
            for p in positives:  # V = 1 / (1 - p_ip + eps), p_ip the softmax weight of the positive
                share = math.exp(rows[i][p] / t) / (math.exp(rows[i][p] / t) + sum(math.exp(rows[i][n] / t) for n in negatives))
                weights.append(1 / (1 - share + eps))
            out[i] = {"tau": t, "weights": weights}
        return out
    check_against_symbolic(MACL(tau0, alpha=alpha, a0=a0, reduction="none"), "macl", labels, seed=3, params_of=constants)


@pytest.mark.parametrize("pattern", ["one-positive", "several-positives", "single-class"])
def test_the_learned_temperature_equals_infonce_and_its_log_scale_gradient_the_derivation(pattern):
    labels = PATTERNS[pattern]
    loss = LearnedTemperature(initial_temperature=0.15, reduction="none").double()
    tau = 1 / loss.scale().item()
    assert tau == pytest.approx(0.15, rel=1e-7)  # the parameter is created in float32
    check_against_symbolic(loss, "learned-temperature", labels, seed=4, params_of=lambda *_: {"tau": tau})
    # dL/dtheta = -tau dL/dtau, summed over the anchors
    sim = random_similarity(len(labels), seed=4)
    loss.zero_grad()
    loss.from_similarity(sim, torch.tensor(labels)).sum().backward()
    rows, expected = sim.tolist(), 0.0
    for i in range(len(labels)):
        positives, negatives = anchors(labels, i)
        if positives:
            anchor = S.anchor_loss("learned-temperature", len(positives), len(negatives))
            point = dict(zip(anchor.similarities, [rows[i][j] for j in positives + negatives]))
            expected += float(sp.N((-S.tau * S.temperature_derivative(anchor)).subs({**point, S.tau: sp.Float(tau, 40)}), 30))
    assert_close(loss.log_scale.grad.item(), expected, "dL/dtheta")


def test_the_learned_scale_is_clamped_where_clip_clamps_it():
    loss = LearnedTemperature(initial_temperature=0.01, max_scale=100.0).double()
    with torch.no_grad():
        loss.log_scale.fill_(math.log(1000.0))
    assert loss.temperature == pytest.approx(0.01)
    z, y = two_views(torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64))
    loss(z, y).backward()
    assert loss.log_scale.grad.item() == 0.0  # beyond the clamp the scale does not move
    stats = loss.batch_statistics(torch.eye(8, dtype=torch.float64), torch.eye(8, dtype=torch.bool),
                                  ~torch.eye(8, dtype=torch.bool))
    assert stats["tau"].item() == pytest.approx(0.01)


@pytest.mark.parametrize("progress", [0.0, 0.2, 0.5, 0.9, 1.0])
def test_the_schedule_follows_its_derivation_and_is_infonce_at_each_step(progress):
    loss = ScheduledTemperature(tau_min=0.1, tau_max=0.8, periods=1.0, reduction="none")
    loss.set_progress(progress)
    expected = S.scheduled_temperature().subs({S.tau_min: sp.Rational(1, 10), S.tau_max: sp.Rational(4, 5),
                                               S.periods: 1, S.progress: sp.nsimplify(progress)})
    assert loss.logit_map.temperature == pytest.approx(float(expected), rel=1e-14)
    labels = PATTERNS["several-positives"]
    check_against_symbolic(loss, "scheduled-temperature", labels, seed=5,
                           params_of=lambda *_: {"tau": loss.logit_map.temperature})
    sim = random_similarity(len(labels), seed=6)
    torch.testing.assert_close(loss.from_similarity(sim, torch.tensor(labels)),
                               InfoNCE(loss.logit_map.temperature, reduction="none").from_similarity(sim, torch.tensor(labels)),
                               rtol=0, atol=0)
    assert {0.0: 0.8, 0.5: 0.1, 1.0: 0.8}.get(progress, loss.logit_map.temperature) == pytest.approx(loss.logit_map.temperature)


# ----------------------------------------------------------------------------- lightly, where definitions coincide
def lightly_pair(seed: int, b: int = 16, d: int = 8):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(b, d, generator=g, dtype=torch.float64)
    return z1, z1 + 0.7 * torch.randn(b, d, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("ours, theirs", [
    (lambda: DCL(0.1), lambda L: L.DCLLoss(temperature=0.1)),
    (lambda: DCL(0.5), lambda L: L.DCLLoss(temperature=0.5)),
    (lambda: DCLW(0.1, sigma=0.5), lambda L: L.DCLWLoss(temperature=0.1, sigma=0.5)),
    (lambda: DCLW(0.2, sigma=1.0), lambda L: L.DCLWLoss(temperature=0.2, sigma=1.0)),
    (lambda: MACL(0.1, alpha=0.5, a0=0.0), lambda L: L.MACLLoss(temperature=0.1, alpha=0.5, A_0=0.0)),
    (lambda: MACL(0.2, alpha=0.3, a0=0.5), lambda L: L.MACLLoss(temperature=0.2, alpha=0.3, A_0=0.5)),
], ids=["dcl-0.1", "dcl-0.5", "dclw-0.1", "dclw-0.2", "macl-0.1", "macl-0.2"])
def test_agrees_with_lightly_in_value_and_gradient(ours, theirs):
    import lightly.loss as lightly_loss  # a test requirement (requirements.txt)
    for seed in range(3):
        z1, z2 = lightly_pair(seed)
        a1, a2 = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
        b1, b2 = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
        mine = ours()(*two_views(a1, a2))
        with pytest.warns(UserWarning) if "DCLW" in type(ours()).__name__ else _nothing():
            reference = theirs(lightly_loss)(b1, b2)
        mine.backward()
        reference.backward()
        assert_close(mine.item(), reference.item(), f"{type(ours()).__name__}, seed {seed}: value")
        torch.testing.assert_close(a1.grad, b1.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(a2.grad, b2.grad, rtol=1e-10, atol=1e-12)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ----------------------------------------------------------------------------- bad input, robustness
@pytest.mark.parametrize("build, match", [
    (lambda: DCL(0.0), "temperature must be"),
    (lambda: DCLW(0.1, sigma=-1.0), "sigma must be"),
    (lambda: MACL(0.1, alpha=-0.1), "alpha must be"),
    (lambda: MACL(0.1, a0=1.5), "a0 must be"),
    (lambda: MACL(0.1, alpha=1.0, a0=0.0), r"alpha \* \(1 \+ a0\) must be < 1"),
    (lambda: MACL(0.1, eps=0.0), "eps must be"),
    (lambda: LearnedTemperature(initial_temperature=0.001, max_scale=100.0), "initial_temperature must be >="),
    (lambda: LearnedTemperature(max_scale=float("inf")), "max_scale must be"),
    (lambda: ScheduledTemperature(tau_min=0.5, tau_max=0.1), "tau_min must be <= tau_max"),
    (lambda: ScheduledTemperature(periods=0), "periods must be"),
    (lambda: ScheduledTemperature().set_progress(1.5), "progress must be a number in"),
    (lambda: DCL(0.1)(torch.randn(4, 3), torch.tensor([0, 0, 0, 0])), "has no negative"),
    (lambda: DCLW(0.1)(torch.randn(4, 3), torch.tensor([0, 1, 2, 3])), "no positive pair"),
])
def test_bad_input_is_refused_by_name(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize("name", ["dcl", "dclw", "macl", "learned-temperature", "scheduled-temperature"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_finite_at_extreme_similarities_and_scales(name, dtype):
    """Identical views, antipodal negatives, huge and tiny embeddings: a finite value and gradient."""
    loss = make_loss(name)
    base = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
    for scale in (1e-20, 1.0, 1e20):
        z = (torch.cat([base, base]) * scale).to(dtype).requires_grad_(True)
        value = loss(z, torch.arange(4).repeat(2))
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(z.grad).all(), (name, dtype, scale)


def test_what_each_rival_changes_in_the_positive_gradient():
    """The derivations behind chapter 5: InfoNCE's pull on its positive is ``-(1 - p)/tau``, ``p`` the
    positive's softmax weight; DCL's is ``-1/tau`` (the factor is gone); MACL's reweighting
    ``V = 1/(1 - p)`` (eps = 0) restores ``-1/tau`` at its own temperature; DCLW scales it by ``w``."""
    info = S.anchor_loss("infonce", 1, 3)
    (sp1,), negatives = info.positives, info.negatives
    p = sp.exp(sp1 / S.tau) / (sp.exp(sp1 / S.tau) + sp.Add(*(sp.exp(n / S.tau) for n in negatives)))
    assert sp.simplify(info.gradient()[sp1] + (1 - p) / S.tau) == 0
    assert sp.simplify(S.anchor_loss("dcl", 1, 3).gradient()[sp1] + 1 / S.tau) == 0
    macl = S.anchor_loss("macl", 1, 3)
    (w,) = S.positive_weights(1)
    assert sp.simplify(macl.gradient()[sp1].subs(w, 1 / (1 - p)) + 1 / S.tau) == 0
    assert sp.simplify(S.anchor_loss("dclw", 1, 3).gradient()[sp1] + w / S.tau) == 0
    # the schedule starts and ends at tau_max, passes tau_min half-way through each period
    assert S.scheduled_temperature().subs({S.progress: 0}) == S.tau_max
    assert sp.simplify(S.scheduled_temperature().subs({S.progress: 1 / (2 * S.periods)}) - S.tau_min) == 0
