"""Property-based tests of every loss (hypothesis), and the regressions of issue 12 as plain tests.

The property: for any batch (N in 2..24, D in 1..16, labels all distinct / some repeated / one class),
embeddings at any scale from 1e-30 to 1e30 (float32, float64, bfloat16; float16 where it can hold
them), and legal parameters, a loss either raises ``ValueError`` -- only when the labels hold no
positive pair -- or returns a finite value equal to the float64 reference (the same loss on the
float64 copy of the same input, normalised in float64) within a tolerance derived from the input's
dtype and the loss's conditioning, with finite gradients wherever the true gradient is representable.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clmini.losses import (LOSSES, Artanh, DySTreSS, HardContrastive, InfoNCE, SimpleLoss, SupCon,
                           TemperatureFree, make_loss)
from clmini.losses.core import MIN_TEMPERATURE

PROPERTY_SETTINGS = settings(max_examples=80, deadline=None, derandomize=True,
                             suppress_health_check=[HealthCheck.too_slow])
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


# ----------------------------------------------------------------------------- strategies
def log_uniform(low: float, high: float):
    return st.floats(math.log10(low), math.log10(high)).map(lambda e: min(max(10.0 ** e, low), high))


#: typical temperatures, and anything down to the smallest accepted one
temperatures = st.one_of(st.floats(0.01, 2.0), log_uniform(MIN_TEMPERATURE, 10.0))


@st.composite
def loss_params(draw, name: str, dtype: torch.dtype) -> dict:
    if name in ("infonce", "sincere", "supcon"):
        return {"temperature": draw(temperatures)}
    if name == "hard":
        return {"temperature": draw(temperatures), **draw(hard_selection())}
    if name == "temperature-free":
        smallest = Artanh.smallest_eps(torch.float64 if dtype == torch.float64 else torch.float32)
        return {"eps": draw(st.one_of(log_uniform(smallest, 0.5), st.just(smallest)))}
    if name == "dystress":
        tau_min, tau_max = sorted([draw(temperatures), draw(temperatures)])
        positive = draw(st.one_of(st.none(), temperatures))
        return {"tau_min": tau_min, "tau_max": tau_max, "detach": draw(st.booleans()),
                "positive_temperature": positive}
    if name == "dcl":
        return {"temperature": draw(temperatures)}
    if name == "dclw":
        return {"temperature": draw(temperatures), "sigma": draw(temperatures)}
    if name == "macl":
        a0 = draw(st.floats(-1.0, 1.0))
        alpha = draw(st.floats(0.0, min(10.0, 0.99 / (1 + a0)))) if a0 > -1 else draw(st.floats(0.0, 10.0))
        # the lowest batch temperature, tau_0 (1 - alpha (1 + a0)), must be a legal temperature too
        tau0 = max(draw(temperatures), 2 * MIN_TEMPERATURE / max(1 - alpha * (1 + a0), 1e-300))
        return {"temperature": min(tau0, 10.0), "alpha": alpha, "a0": a0}
    if name == "learned-temperature":
        tau = draw(temperatures)
        return {"initial_temperature": tau, "max_scale": min(1 / tau * draw(st.floats(1.0, 100.0)), 1 / MIN_TEMPERATURE)}
    if name == "scheduled-temperature":
        tau_min, tau_max = sorted([draw(temperatures), draw(temperatures)])
        return {"tau_min": tau_min, "tau_max": tau_max, "periods": draw(st.floats(0.1, 5.0))}
    lam = {"lam": draw(st.one_of(st.none(), st.floats(0.0, 10.0)))}
    if name == "hard-simple":
        return {**lam, **draw(hard_selection())}
    assert name == "simple", name
    return lam


def hard_selection():
    return st.one_of(st.builds(lambda k: {"k": k}, st.integers(1, 30)),
                     st.builds(lambda a: {"alpha": a}, st.floats(0.01, 1.0)))


@st.composite
def batches(draw, dtype: torch.dtype):
    """``(embeddings [N, D] of dtype, labels [N])`` at a random scale, from a drawn seed."""
    n, d = draw(st.integers(2, 24)), draw(st.integers(1, 16))
    pattern = draw(st.sampled_from(["distinct", "repeated", "one class"]))
    if pattern == "distinct":
        labels = torch.randperm(n, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))
    elif pattern == "one class":
        labels = torch.full((n,), 3)
    else:
        labels = torch.tensor(draw(st.lists(st.integers(0, max(1, n // 2)), min_size=n, max_size=n)))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    shape = draw(st.sampled_from(["gaussian", "clustered", "duplicates", "zero row"]))
    if shape == "clustered":  # similarities near 1 within a class
        centres = torch.randn(int(labels.max()) + 1, d, generator=g, dtype=torch.float64)
        z = centres[labels] + 0.05 * z
    elif shape == "duplicates":  # similarities exactly 1 within a class
        z = z[torch.unique(labels, return_inverse=True)[1]]
    elif shape == "zero row":
        z[draw(st.integers(0, n - 1))] = 0.0
    # float16 holds about 6e-8..6.5e4: scales 1e-3..1e3 for entries of a few units
    low, high = (-3, 3) if dtype == torch.float16 else (-30, 30)
    centre = draw(st.floats(low, high))
    spread = draw(st.sampled_from([0.0, 1.0, 3.0]))  # rows at different scales too
    exponents = (centre + spread * (2 * torch.rand(n, 1, generator=g, dtype=torch.float64) - 1)).clamp(low, high)
    return (z * 10.0 ** exponents).to(dtype), labels


# ----------------------------------------------------------------------------- reference and tolerance
def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def logit_slope(name: str, params: dict, sim: torch.Tensor, ds: float) -> float:
    """A bound on ``|dl/ds|`` of the loss's logit maps near the reference similarities ``sim``."""
    if name in ("simple", "hard-simple"):
        lam = params["lam"]
        return 1.0 + (1.0 if lam is None else lam * sim.shape[0])
    if name == "temperature-free":
        c = min(sim.abs().max().item() + ds, 1 - params["eps"])
        return 2 / ((1 - c) * (1 + c))
    if name == "dystress":
        lo, hi = params["tau_min"], params["tau_max"]
        slope = 1 / lo + math.pi / 2 * (hi - lo) / lo / lo  # |(tau - s tau') / tau^2|
        positive = params["positive_temperature"]
        return slope if positive is None else max(slope, 1 / positive)
    if name == "dclw":  # |w_p| <= N, and the weights move with the similarities through softmax(s / sigma)
        n = sim.shape[0]
        return n / params["temperature"] * (1 + 1 / params["sigma"])
    if name == "macl":  # the batch temperature is at least tau_0 (1 - alpha (1 + a0)), and moves with A
        low = params["temperature"] * (1 - params["alpha"] * (1 + params["a0"]))
        return (1 + params["alpha"] * params["temperature"] / low) / low
    if name == "learned-temperature":
        return min(1 / params["initial_temperature"], params["max_scale"]) * (1 + 1e-6)
    if name == "scheduled-temperature":
        return 1 / params["tau_min"]
    return 1 / params["temperature"]


def tolerance(name: str, params: dict, dtype: torch.dtype, sim: torch.Tensor, reference: torch.Tensor) -> float:
    u = torch.finfo(compute_dtype(dtype)).eps
    ds = 32 * u  # rounding of the normalisation and of the dot products (D <= 16 here)
    slope = logit_slope(name, params, sim, ds)
    if name == "temperature-free":
        ds += u  # the clamp bound 1 - eps is rounded to the dtype
    # a pair loss is a softplus / log-sum-exp of logit differences: 2 slope ds, twice for safety
    return 4 * slope * ds + 32 * u * (1 + reference.abs().max().item())


def gradient_bound(name, params, z64: torch.Tensor, sim: torch.Tensor) -> float:
    """A bound on the gradient with respect to the embeddings (mean reduction): ``|dL/dsim|`` sums to at
    most ~4 slope per row, ``sim = u u^T`` doubles it, and ``u = z / |z|`` divides it by ``|z|``
    (by F.normalize's 1e-12 at a zero row)."""
    norms = z64.norm(dim=1)
    smallest = torch.where(norms > 0, norms, 1e-12).min().item()
    return 16 * logit_slope(name, params, sim, 0.0) / smallest


def ambiguous_selection(params: dict, sim: torch.Tensor, labels: torch.Tensor, ds: float) -> bool:
    """Whether a hard selection (k or alpha) could keep other negatives under a rounding of ``sim`` by
    ``ds``: a negative within ``2 ds`` of an anchor's threshold. (Ties are all kept, so the loss jumps
    there; the low-precision value may rightly differ from the reference.)"""
    if "k" not in params and "alpha" not in params:
        return False
    for i in range(len(labels)):
        values = sim[i][labels != labels[i]].sort(descending=True).values
        if len(values) == 0:
            continue
        count = params["k"] if "k" in params else max(1, math.ceil(params["alpha"] * len(values)))
        threshold = values[min(count, len(values)) - 1]
        near = ((values - threshold).abs() <= 2 * ds).sum().item()
        if near > 1:
            return True
    return False


def check_loss(name: str, params: dict, z: torch.Tensor, labels: torch.Tensor, reduction: str) -> None:
    loss = make_loss(name, reduction=reduction, **params)
    if bool((torch.unique(labels, return_counts=True)[1] < 2).all()):
        with pytest.raises(ValueError, match="no positive pair"):
            loss(z, labels)
        return
    if getattr(loss, "denominator", None) == "negatives" and len(torch.unique(labels)) == 1:
        with pytest.raises(ValueError, match="has no negative"):  # DCL: the log of an empty sum
            loss(z, labels)
        return
    z = z.detach().clone().requires_grad_(True)
    value = loss(z, labels)
    (grad,) = torch.autograd.grad(value.sum(), z)
    assert value.dtype == compute_dtype(z.dtype)
    assert torch.isfinite(value).all(), (value, params)

    z64 = z.detach().double()
    # z / |z| in float64, which holds the squares of every scale drawn here (not F.normalize: its eps
    # floor of 1e-12 leaves smaller rows unnormalised); a zero row stays zero (the documented behaviour)
    norms = z64.norm(dim=1, keepdim=True)
    unit = torch.where(norms > 0, z64 / norms.clamp(min=torch.finfo(torch.float64).tiny), 0.0)
    reference = make_loss(name, reduction=reduction, **params)(unit, labels)
    sim = unit @ unit.T
    atol = tolerance(name, params, z.dtype, sim, reference)
    if not ambiguous_selection(params, sim, labels, 32 * torch.finfo(compute_dtype(z.dtype)).eps):
            torch.testing.assert_close(value.double(), reference, rtol=0, atol=atol,
                                   msg=lambda m: f"{name} {params} {z.dtype}: {m}")

    if gradient_bound(name, params, z64, sim) < torch.finfo(z.dtype).max / 16:
        assert torch.isfinite(grad).all(), (name, params, z.dtype)


# ----------------------------------------------------------------------------- properties
@pytest.mark.parametrize("name", sorted(LOSSES))
@PROPERTY_SETTINGS
@given(data=st.data())
def test_loss_equals_float64_reference_at_any_scale(name, data):
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    z, labels = data.draw(batches(dtype), label="batch")
    params = data.draw(loss_params(name, dtype), label="params")
    reduction = data.draw(st.sampled_from(["mean", "none"]), label="reduction")
    check_loss(name, params, z, labels, reduction)


@PROPERTY_SETTINGS
@given(name=st.sampled_from(["infonce", "sincere", "supcon", "hard"]),
       exponent=st.floats(-60.0, math.log10(MIN_TEMPERATURE) - 1e-9))
def test_temperatures_below_the_smallest_are_refused(name, exponent):
    extra = {"k": 2} if name == "hard" else {}
    with pytest.raises(ValueError, match=r"temperature must be >= 1\.17549e-38"):
        make_loss(name, temperature=10.0 ** exponent, **extra)


@PROPERTY_SETTINGS
@given(eps=log_uniform(1e-30, Artanh.smallest_eps(torch.float32) * 0.999),
       dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]))
def test_eps_below_the_float32_resolution_is_refused_there(eps, dtype):
    z, labels = torch.ones(4, 3, dtype=dtype), torch.tensor([0, 0, 1, 1])
    if eps < Artanh.smallest_eps(torch.float64):
        with pytest.raises(ValueError, match=r"eps must be >= 1\.11022e-16 in torch\.float64"):
            TemperatureFree(eps=eps)
        return
    loss = TemperatureFree(eps=eps)
    with pytest.raises(ValueError, match=r"eps must be >= 5\.96046e-08 in torch\.float32"):
        loss(z, labels)
    assert torch.isfinite(loss(z.double(), labels))  # float64 resolves it


# ----------------------------------------------------------------------------- issue 12 regressions
def test_huge_and_tiny_embeddings_equal_the_float64_value():
    z = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 4
    expected = InfoNCE(0.1)(z.double(), y)
    assert abs(expected.item() - 1.9459) > 0.5  # not the value of identical embeddings
    for scale in (1e30, 1e19, 1e-15, 1e-30, 1e-38):
        for dtype in (torch.float32, torch.float64):
            torch.testing.assert_close(InfoNCE(0.1)(z.to(dtype) * scale, y).double(), expected,
                                       rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(InfoNCE(0.1)(z.double() * 1e300, y), expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(InfoNCE(0.1)(z.double() * 1e-300, y), expected, rtol=1e-12, atol=0)


def test_huge_embeddings_have_the_gradient_of_the_unit_ones():
    z = torch.randn(8, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.arange(8) % 4
    grads = []
    for scale in (1.0, 1e200):
        x = (z * scale).requires_grad_(True)
        InfoNCE(0.1)(x, y).backward()
        grads.append(x.grad * scale)  # d/dz of a function of z / |z| scales as 1 / |z|
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-14)


def test_an_all_zero_row_stays_zero():
    """Documented behaviour (as F.normalize): a zero embedding has similarity 0 to every sample."""
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    z[2] = 0.0
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = InfoNCE(0.2, reduction="none")
    unit = F.normalize(z, dim=1)
    assert (unit[2] == 0).all()
    torch.testing.assert_close(loss(z * 1e25, y), loss.from_similarity(unit @ unit.T, y))
    x = z.float().requires_grad_(True)
    loss(x, y).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_temperature_free_small_eps():
    y = torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"eps must be >= 5\.96046e-08 in torch\.float32 \(the smallest "
                                         r"usable value: 1 - eps rounds to 1 below it\), got eps=1e-08"):
        TemperatureFree(eps=1e-8)(torch.ones(4, 3), y)
    with pytest.raises(ValueError, match=r"eps must be >= 5\.96046e-08 in torch\.float32"):
        TemperatureFree(eps=1e-8)(torch.ones(4, 3, dtype=torch.bfloat16), y)
    assert torch.isfinite(TemperatureFree(eps=1e-8)(torch.ones(4, 3, dtype=torch.float64), y))
    smallest = Artanh.smallest_eps(torch.float32)
    x = torch.ones(4, 3).requires_grad_(True)
    value = TemperatureFree(eps=smallest)(x, y)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match=r"eps must be >= 1\.11022e-16 in torch\.float64"):
        TemperatureFree(eps=1e-17)


def test_zero_dimensional_embeddings_are_refused():
    with pytest.raises(ValueError, match=r"embeddings: need at least D = 1 dimension, got D = 0"):
        InfoNCE(0.1)(torch.ones(4, 0), torch.tensor([0, 0, 1, 1]))


@pytest.mark.parametrize("build, match", [
    (lambda: InfoNCE(1e-39), r"temperature must be >= 1\.17549e-38 .*got 1e-39"),
    (lambda: SupCon(1e-39), r"temperature must be >= 1\.17549e-38"),
    (lambda: HardContrastive(1e-39, k=2), r"temperature must be >= 1\.17549e-38"),
    (lambda: DySTreSS(1e-39, 0.2), r"tau_min must be >= 1\.17549e-38"),
    (lambda: DySTreSS(1e-39, 1e-39), r"tau_min must be >= 1\.17549e-38"),
    (lambda: DySTreSS(positive_temperature=1e-39), r"positive_temperature must be >= 1\.17549e-38"),
    (lambda: DySTreSS(detach="no"), r"detach must be True or False, got 'no'"),
    (lambda: DySTreSS(detach=1), r"detach must be True or False, got 1"),
    (lambda: InfoNCE(0.1, normalize="false"), r"normalize must be True or False, got 'false'"),
    (lambda: SimpleLoss(normalize=0), r"normalize must be True or False, got 0"),
])
def test_issue_12_arguments_are_refused(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_smallest_temperature_keeps_the_worst_batch_finite():
    """At MIN_TEMPERATURE, positives at s = -1 and negatives at s = +1 (loss 2 / tau per pair, summed
    over 7 positives and 16 anchors) stay finite in float32, value and gradient of sim."""
    e = torch.tensor([1.0, 0.0])
    z = torch.stack([e, -e, e, -e] * 4)
    y = torch.tensor([0, 0, 1, 1] * 4)
    tau = MIN_TEMPERATURE
    for loss in (InfoNCE(tau), SupCon(tau), HardContrastive(tau, k=1), DySTreSS(tau, tau),
                 DySTreSS(tau, 1.0, detach=False), DySTreSS(tau, tau, positive_temperature=tau)):
        sim = (z @ z.T).requires_grad_(True)
        value = loss.from_similarity(sim, y)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(sim.grad).all(), loss
        assert torch.isfinite(loss(z, y))
