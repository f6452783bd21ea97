"""The loss family: reference agreement, the properties the chapters rely on, robustness, errors.

(Agreement with the SymPy derivations lives in ``test_losses_vs_symbolic.py``.)
"""
import math

import pytest
import torch
from pytorch_metric_learning.losses import NTXentLoss, SupConLoss

from clmini.losses import (
    LOSSES, Artanh, ContrastiveLoss, DySTreSS, HardContrastive, HardSimple, InfoNCE, SINCERE,
    SimpleLoss, SupCon, TemperatureFree, make_loss, pair_masks, two_views,
)

DEFAULT_ARGS = {
    "infonce": {"temperature": 0.2}, "temperature-free": {}, "dystress": {}, "supcon": {"temperature": 0.2},
    "sincere": {"temperature": 0.2}, "simple": {}, "hard": {"temperature": 0.2, "k": 3},
    "hard-simple": {"alpha": 0.25}, "dcl": {"temperature": 0.2}, "dclw": {"temperature": 0.2},
    "macl": {"temperature": 0.2}, "learned-temperature": {"initial_temperature": 0.2},
    "scheduled-temperature": {"tau_min": 0.1, "tau_max": 0.5},
}


def every_loss(**overrides):
    return [make_loss(name, **{**args, **overrides}) for name, args in DEFAULT_ARGS.items()]


def random_batch(n=16, d=8, classes=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=dtype)
    y = torch.arange(n) % classes
    return z, y


def two_view_batch(b=8, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(b, d, generator=g, dtype=torch.float64)
    return two_views(z1, z1 + 0.5 * torch.randn(b, d, generator=g, dtype=torch.float64))


def value_and_grad(loss, z, y):
    z = z.detach().clone().requires_grad_(True)
    value = loss(z, y)
    (grad,) = torch.autograd.grad(value.sum(), z)
    return value.detach(), grad


# ----------------------------------------------------------------------------- references
LABEL_PATTERNS = {
    "several positives": torch.arange(24) % 4,
    "singletons mixed in": torch.tensor([0, 0, 0, 1, 1, 2, 3, 4, 4, 4, 4, 5, 6, 6, 7, 8]),
}
# (A single-class batch is left out: pytorch-metric-learning returns 0 whenever a batch has no
# negative pair, while L_out is still defined there; the SymPy tests cover that case.)


@pytest.mark.parametrize("pattern", LABEL_PATTERNS)
@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_supcon_matches_pytorch_metric_learning(pattern, tau):
    y = LABEL_PATTERNS[pattern]
    z = torch.randn(len(y), 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours = value_and_grad(SupCon(tau), z, y)
    theirs = value_and_grad(SupConLoss(temperature=tau), z, y)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("tau", [0.05, 0.2, 1.0])
def test_infonce_matches_ntxent_on_two_view_batches(tau):
    z, y = two_view_batch(b=12)
    torch.testing.assert_close(value_and_grad(InfoNCE(tau), z, y),
                               value_and_grad(NTXentLoss(temperature=tau), z, y), rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- properties
def test_one_positive_per_anchor_infonce_supcon_sincere_coincide():
    z, y = two_view_batch()
    reference = value_and_grad(InfoNCE(0.3), z, y)
    for loss in (SupCon(0.3), SINCERE(0.3)):
        torch.testing.assert_close(value_and_grad(loss, z, y), reference, rtol=1e-12, atol=1e-14)


def test_dystress_with_equal_bounds_is_infonce():
    z, y = random_batch()
    for detach in (True, False):
        torch.testing.assert_close(value_and_grad(DySTreSS(0.15, 0.15, detach=detach), z, y),
                                   value_and_grad(InfoNCE(0.15), z, y), rtol=1e-12, atol=1e-14)


def test_dystress_schedule_on_negatives_only():
    z, y = random_batch()
    sim = torch.nn.functional.normalize(z, dim=1) @ torch.nn.functional.normalize(z, dim=1).T
    loss = DySTreSS(0.1, 0.3, positive_temperature=0.2, reduction="none")
    # by hand: positive logits s/0.2, negative logits s/tau(s)
    tau = loss.logit_map.temperature(sim)
    positives, negatives = pair_masks(y)
    pos_logits = torch.where(positives, sim / 0.2, float("-inf"))
    neg_lse = torch.logsumexp(torch.where(negatives, sim / tau, float("-inf")), dim=1, keepdim=True)
    pair = torch.where(positives, torch.nn.functional.softplus(neg_lse - pos_logits), 0.0)
    torch.testing.assert_close(loss(z, y), pair.sum(1) / positives.sum(1))
    # with the positive at the schedule's own value it is DySTreSS again only when tau is constant
    torch.testing.assert_close(DySTreSS(0.2, 0.2, positive_temperature=0.2)(z, y), InfoNCE(0.2)(z, y))
    error("positive_temperature must be", DySTreSS, positive_temperature=0.0)


def test_hard_contrastive_keeping_every_negative_is_infonce():
    z, y = random_batch(n=20)
    reference = value_and_grad(InfoNCE(0.2), z, y)
    for loss in (HardContrastive(0.2, k=20), HardContrastive(0.2, alpha=1.0)):
        torch.testing.assert_close(value_and_grad(loss, z, y), reference, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(value_and_grad(HardSimple(alpha=1.0), z, y), value_and_grad(SimpleLoss(), z, y))


def test_hard_negatives_select_the_most_similar():
    sim = torch.tensor([[1.0, 0.9, 0.5, 0.4, -0.2, 0.3],
                        [0.9, 1.0, 0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    sim = torch.cat([sim, torch.eye(6, dtype=torch.float64)[2:]])
    sim = (sim + sim.T) / 2  # symmetric; row 0 keeps its order among negatives 2..5
    y = torch.tensor([0, 0, 1, 2, 3, 4])
    _, negatives = pair_masks(y)
    kept = HardContrastive(0.1, k=2).hard_negatives(sim, negatives)
    assert kept[0].nonzero().flatten().tolist() == [2, 3]
    kept = HardContrastive(0.1, alpha=0.5).hard_negatives(sim, negatives)  # ceil(0.5 * 4) = 2
    assert kept[0].nonzero().flatten().tolist() == [2, 3]


def test_ideal_configuration_temperature_free_is_zero_infonce_is_not():
    # two classes at opposite poles: every positive similarity 1, every negative -1
    z = torch.tensor([[1.0, 0.0]] * 3 + [[-1.0, 0.0]] * 3, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    value, grad = value_and_grad(TemperatureFree(), z, y)
    assert value < 1e-10 and grad.abs().max() == 0
    tau, n_neg = 0.5, 3
    value, grad = value_and_grad(InfoNCE(tau, normalize=False), z, y)
    assert value == pytest.approx(math.log1p(n_neg * math.exp(-2 / tau)), rel=1e-12)
    sim = (z @ z.T).requires_grad_(True)
    InfoNCE(tau).from_similarity(sim, y).backward()
    positives, _ = pair_masks(y)
    assert (sim.grad[positives] < 0).all(), "s/tau still pulls the positives at the optimum"


def same_class_gradients(loss, z, y):
    sim = (torch.nn.functional.normalize(z, dim=1) @ torch.nn.functional.normalize(z, dim=1).T)
    sim = sim.detach().requires_grad_(True)
    loss.from_similarity(sim, y).backward()
    positives, _ = pair_masks(y)
    return sim.grad[positives]


@pytest.mark.parametrize("per_class", [2, 4, 8, 32])
def test_sincere_never_repels_same_class_supcon_does(per_class):
    z, _ = random_batch(n=64, d=16, seed=per_class)
    y = torch.arange(64) // per_class
    assert (same_class_gradients(SINCERE(0.1), z, y) <= 0).all()
    supcon = same_class_gradients(SupCon(0.1), z, y)
    assert (supcon > 0).any() == (per_class > 2)  # one positive per anchor: SupCon is InfoNCE


def test_supcon_repulsion_grows_with_same_class_count():
    shares = []
    for per_class in (2, 4, 8, 16, 32):
        grads = torch.cat([same_class_gradients(SupCon(0.1), random_batch(64, 16, seed=s)[0],
                                                torch.arange(64) // per_class) for s in range(5)])
        shares.append((grads > 0).double().mean().item())
    assert shares[0] == 0.0
    assert all(a < b for a, b in zip(shares, shares[1:])), shares


def test_reductions_agree_and_skip_anchors_without_positives():
    z, _ = random_batch(n=8)
    y = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4])  # anchors 2, 6, 7 have no positive
    for loss_name, args in DEFAULT_ARGS.items():
        per_anchor = make_loss(loss_name, reduction="none", **args)(z, y)
        assert per_anchor.shape == (8,)
        assert (per_anchor[[2, 6, 7]] == 0).all()
        torch.testing.assert_close(make_loss(loss_name, reduction="sum", **args)(z, y), per_anchor.sum())
        torch.testing.assert_close(make_loss(loss_name, **args)(z, y), per_anchor.sum() / 5)


def test_variant_from_parts_sincere_with_temperature_free_logits():
    z, y = two_view_batch()
    variant = ContrastiveLoss(Artanh(), denominator="positive+negatives")
    torch.testing.assert_close(variant(z, y), TemperatureFree()(z, y))


def test_simple_loss_default_lambda():
    z, y = random_batch(n=6, classes=3)
    sim = torch.nn.functional.normalize(z, dim=1) @ torch.nn.functional.normalize(z, dim=1).T
    # anchor 0: positive 3, negatives 1, 2, 4, 5 -> lam = 1/5
    expected = -sim[0, 3] + (sim[0, 1] + sim[0, 2] + sim[0, 4] + sim[0, 5]) / 5
    torch.testing.assert_close(SimpleLoss(reduction="none")(z, y)[0], expected)


# ----------------------------------------------------------------------------- robustness
def assert_finite(loss, z, y):
    value, grad = value_and_grad(loss, z, y)
    assert torch.isfinite(value).all() and torch.isfinite(grad).all(), loss


@pytest.mark.parametrize("loss", every_loss(), ids=list(DEFAULT_ARGS))
def test_extreme_similarities_stay_finite(loss):
    e = torch.eye(4, dtype=torch.float64)
    duplicated = torch.cat([e, e])                            # similarities exactly 1 and 0
    antipodal = torch.cat([e[:2], -e[:2], e[:2], -e[:2]])     # exactly +1 and -1
    with_zeros = torch.cat([e[:3], torch.zeros(1, 4, dtype=torch.float64)] * 2)
    for z in (duplicated, antipodal, with_zeros):
        assert_finite(loss, z, torch.arange(4).repeat(2))
    single_class = torch.zeros(8, dtype=torch.long)  # no negatives at all
    if getattr(loss, "denominator", None) == "negatives":  # DCL: log of an empty sum, refused by name
        with pytest.raises(ValueError, match="has no negative"):
            loss(duplicated, single_class)
    else:
        assert_finite(loss, duplicated, single_class)


@pytest.mark.parametrize("tau", [0.01, 0.05])
def test_tiny_temperatures_stay_finite(tau):
    z, y = random_batch(n=64, d=4, dtype=torch.float32)
    for loss in (InfoNCE(tau), SupCon(tau), SINCERE(tau), HardContrastive(tau, k=4), DySTreSS(tau, 2 * tau)):
        assert_finite(loss, z * 1e3, y)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", list(DEFAULT_ARGS))
def test_half_precision_inputs_close_to_float32(dtype, name):
    z, y = random_batch(n=32, d=16, dtype=torch.float32)
    z = z.to(dtype)  # same rounded inputs for both
    loss = make_loss(name, **DEFAULT_ARGS[name])
    low, grad_low = value_and_grad(loss, z, y)
    high, grad_high = value_and_grad(loss, z.float(), y)
    assert low.dtype == torch.float32 and torch.isfinite(grad_low).all()
    torch.testing.assert_close(low, high, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_low.float(), grad_high, rtol=1e-2, atol=1e-2 * grad_high.abs().max().item())


def test_large_batch_stays_finite():
    z = torch.randn(4096, 16, generator=torch.Generator().manual_seed(0))
    z, y = two_views(z, z + 0.1)
    assert z.shape[0] == 8192
    for loss in every_loss():
        assert_finite(loss, z, y)


# ----------------------------------------------------------------------------- errors
def error(match, fn, *args, **kwargs):
    with pytest.raises(ValueError, match=match):
        fn(*args, **kwargs)


def test_bad_inputs_name_the_argument():
    loss = InfoNCE(0.1)
    z, y = random_batch(n=8)
    error("embeddings must be a 2-D", loss, z[0], y)
    error("embeddings must be a floating-point", loss, torch.ones(8, 3, dtype=torch.long), y)
    error(r"labels must have shape \[8\]", loss, z, y[:5])
    error("labels must be an integer", loss, z, y.double())
    error("need at least N = 2", loss, z[:1], y[:1])
    error("embeddings contains NaN", loss, z.index_fill(0, torch.tensor([3]), float("nan")), y)
    error("embeddings contains NaN or inf", loss, z.index_fill(0, torch.tensor([3]), float("inf")), y)
    error("no positive pair", loss, z, torch.arange(8))
    error("sim must be a square", loss.from_similarity, z[:, :5], y)
    error("sim contains NaN", loss.from_similarity, torch.full((8, 8), float("nan")), y)


@pytest.mark.parametrize("build, match", [
    (lambda: InfoNCE(0.0), "temperature must be"),
    (lambda: SupCon(-1), "temperature must be"),
    (lambda: SINCERE(float("nan")), "temperature must be"),
    (lambda: DySTreSS(0.3, 0.2), "tau_min must be <= tau_max"),
    (lambda: DySTreSS(0.0, 0.2), "tau_min must be"),
    (lambda: HardContrastive(0.1, k=0), "k must be an integer >= 1"),
    (lambda: HardContrastive(0.1, k=2.5), "k must be an integer"),
    (lambda: HardContrastive(0.1, alpha=0.0), r"alpha must be in \(0, 1\]"),
    (lambda: HardSimple(alpha=1.5), r"alpha must be in \(0, 1\]"),
    (lambda: HardContrastive(0.1), "exactly one of k"),
    (lambda: TemperatureFree(eps=1.0), r"eps must be in \(0, 1\)"),
    (lambda: SimpleLoss(lam=-1.0), "lam must be"),
    (lambda: InfoNCE(0.1, reduction="avg"), "reduction must be one of"),
    (lambda: make_loss("ntxent"), "loss must be one of"),
    (lambda: two_views(torch.ones(3, 2), torch.ones(4, 2)), "z1 and z2"),
])
def test_bad_arguments_name_the_argument(build, match):
    error(match, build)


def test_registry_is_complete():
    assert set(LOSSES) == set(DEFAULT_ARGS)


def test_large_finite_inputs_whose_sum_overflows_are_accepted():
    """The finite check sums first (cheap); a sum that overflows on finite entries is no error."""
    z = torch.full((8, 4), 6e4, dtype=torch.float16)  # the fp16 sum is inf, every entry finite
    assert torch.isinf(z.sum())
    assert torch.isfinite(InfoNCE(0.2)(z, torch.arange(4).repeat(2)))
    sim = torch.full((8, 8), 1e308, dtype=torch.float64)  # accepted (what the loss makes of it is its own)
    assert SimpleLoss(reduction="none").from_similarity(sim, torch.arange(4).repeat(2)).shape == (8,)
