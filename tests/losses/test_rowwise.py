"""The fused row reductions every loss reads ``sim`` through, and the pairs and selections they use.

The SymPy oracle (``test_losses_vs_symbolic.py``) checks the losses on batches that fit in one block
of rows; here the same losses must give the same values and gradients whatever the block size, and
the pieces (label-derived pairs, hard-negative thresholds, masked log-sum-exp) must equal their
whole-matrix definitions. The memory bound is measured as ``benchmarks/bench_losses.py`` does.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clmini.losses import LOSSES as LOSS_REGISTRY
from clmini.losses import HardNegatives, Pairs, make_loss, masked_logsumexp, pair_masks, rowwise
from clmini.losses.negatives import _kth_largest_

LOSSES = {  # id: (registry name, arguments)
    "infonce": ("infonce", {"temperature": 0.2}), "temperature-free": ("temperature-free", {}),
    "dystress": ("dystress", {}), "dystress-full": ("dystress", {"detach": False, "positive_temperature": 0.3}),
    "supcon": ("supcon", {"temperature": 0.2}), "sincere": ("sincere", {"temperature": 0.2}),
    "simple": ("simple", {}), "hard-k": ("hard", {"temperature": 0.2, "k": 3}),
    "hard-alpha": ("hard", {"temperature": 0.2, "alpha": 0.3}), "hard-simple": ("hard-simple", {"alpha": 0.25}),
}
LABELS = {
    "two views": torch.arange(13).repeat(2),
    "classes, shuffled, singletons": torch.tensor([3, 0, 0, 5, 1, 3, 1, 1, 9, 0, 3, 4, 4, 4, 1, 3, 8, 0, 6, 1, 3]),
    "single class": torch.zeros(7, dtype=torch.long),
}


def similarity(n, seed=0, dtype=torch.float64, levels=None):
    """Cosines of random unit vectors; rounded to ``levels`` steps for ties between negatives."""
    z = torch.nn.functional.normalize(torch.randn(n, 5, generator=torch.Generator().manual_seed(seed),
                                                  dtype=dtype), dim=1)
    sim = z @ z.T
    return sim if levels is None else (sim * levels).round() / levels


def loss_per_anchor(case):
    name, args = LOSSES[case]
    return make_loss(name, reduction="none", **args)


def value_and_grad(loss, sim, labels):
    sim = sim.detach().clone().requires_grad_(True)
    value = loss.from_similarity(sim, labels)
    value.sum().backward()
    return value.detach(), sim.grad


# ----------------------------------------------------------------------------- blocks
@pytest.mark.parametrize("pattern", list(LABELS))
@pytest.mark.parametrize("case", list(LOSSES))
@pytest.mark.parametrize("rows_per_block", [1, 4])
def test_block_size_changes_nothing(case, pattern, rows_per_block, monkeypatch):
    labels = LABELS[pattern]
    loss = loss_per_anchor(case)
    sim = similarity(len(labels), levels=8)  # ties at the hard-negative thresholds too
    whole = value_and_grad(loss, sim, labels)
    assert len(labels) ** 2 <= rowwise.BLOCK_ELEMENTS  # the reference is one block
    monkeypatch.setattr(rowwise, "BLOCK_ELEMENTS", rows_per_block * len(labels))
    torch.testing.assert_close(value_and_grad(loss, sim, labels), whole, rtol=1e-13, atol=1e-15)


def test_non_contiguous_similarity():
    labels = LABELS["classes, shuffled, singletons"]
    sim = similarity(len(labels))
    for case in LOSSES:
        loss = loss_per_anchor(case)
        torch.testing.assert_close(value_and_grad(loss, sim.T, labels), value_and_grad(loss, sim, labels),
                                   rtol=1e-13, atol=1e-15)  # sim is symmetric: sim.T is the same matrix


@pytest.mark.parametrize("rows_per_block", [1, 3, 100])
def test_masked_logsumexp_is_logsumexp_over_the_mask(rows_per_block, monkeypatch):
    monkeypatch.setattr(rowwise, "BLOCK_ELEMENTS", rows_per_block * 11)
    generator = torch.Generator().manual_seed(0)
    x = 5 * torch.randn(7, 11, generator=generator, dtype=torch.float64)
    mask = torch.rand(7, 11, generator=generator) < 0.5
    mask[2] = False  # a row with nothing: -inf, zero gradient
    x_ours, x_ref = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ours = masked_logsumexp(x_ours, mask)
    reference = torch.logsumexp(torch.where(mask, x_ref, float("-inf")), dim=1)
    torch.testing.assert_close(ours, reference, rtol=1e-14, atol=0)
    weights = torch.arange(7.0, dtype=torch.float64)
    (ours[mask.any(1)] * weights[mask.any(1)]).sum().backward()
    (reference[mask.any(1)] * weights[mask.any(1)]).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-14, atol=1e-15)
    assert ours[2] == float("-inf") and (x_ours.grad[2] == 0).all()


# ----------------------------------------------------------------------------- pairs and selection
@pytest.mark.parametrize("pattern", list(LABELS))
def test_pairs_from_labels_are_the_masks(pattern):
    labels = LABELS[pattern]
    pairs = Pairs.from_labels(labels)
    positives, negatives = pair_masks(labels)
    rows, cols = positives.nonzero(as_tuple=True)  # row-major, as Pairs lists them
    assert torch.equal(pairs.rows, rows) and torch.equal(pairs.cols, cols)
    assert torch.equal(pairs.n_positives, positives.sum(1)) and torch.equal(pairs.n_negatives, negatives.sum(1))
    assert torch.equal(pairs.positives, positives) and torch.equal(pairs.negatives, negatives)  # on demand


@pytest.mark.parametrize("selection", [{"k": 1}, {"k": 4}, {"k": 50}, {"alpha": 0.3}, {"alpha": 1.0}])
@pytest.mark.parametrize("pattern", list(LABELS))
def test_blockwise_selection_is_the_mask(selection, pattern, monkeypatch):
    """``select`` (thresholds, numbers kept) agrees with ``forward``'s mask, ties and ``k > |N(i)|`` included."""
    monkeypatch.setattr(rowwise, "BLOCK_ELEMENTS", 1)
    labels = LABELS[pattern]
    sim = similarity(len(labels), levels=4)
    hard = HardNegatives(**selection)
    thresholds, kept = hard.select(sim, Pairs.from_labels(labels))
    mask = hard(sim, pair_masks(labels)[1])
    assert torch.equal(kept, mask.sum(1))
    _, negatives = pair_masks(labels)
    assert torch.equal(mask, negatives & (sim >= thresholds[:, None]))


def test_kth_largest_is_the_sorted_rows_kth():
    generator = torch.Generator().manual_seed(0)
    values = torch.randint(-5, 5, (40, 30), generator=generator).double()  # many ties
    values[values < -3] = float("-inf")
    k = torch.randint(1, 31, (40,), generator=generator)
    expected = values.sort(dim=1, descending=True).values.gather(1, (k - 1)[:, None]).squeeze(1)
    assert torch.equal(_kth_largest_(values.clone(), k), expected)


# ----------------------------------------------------------------------------- memory
@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux peak-RSS reset")
def test_every_loss_holds_at_most_three_matrices():
    """Peak memory of forward+backward at N = 2048, in N x N float32 matrices, measured as the
    benchmark measures it (fresh process, peak RSS, large allocations mmap-ed): sim and its
    gradient are two; the bound of the issue is 4, this test keeps a margin below it."""
    root = Path(__file__).resolve().parents[2]
    script = ("import sys; sys.path.insert(0, 'benchmarks'); import bench_losses as b\n"
              "for name in b.LOSSES: print(name, b.peak_bytes(name, 2048, 128, 'cpu') / (4 * 2048 ** 2))")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True,
                         check=True).stdout
    peaks = {name: float(value) for name, value in (line.split() for line in out.splitlines())}
    assert len(peaks) == len(LOSS_REGISTRY) and max(peaks.values()) <= 3.0, peaks
