"""Row reductions of an ``N x N`` similarity matrix, fused and one block of rows at a time.

Every loss reduces each row of ``sim`` to one number -- the log-sum-exp of its logits over the
entries its denominator admits (contrastive losses), or their plain sum (the simple loss) -- and
picks out the positive pairs' similarities. Written as whole-matrix expressions, each step (logit
map, mask, max, exp, sum; in backward the softmax, the map's derivative, the scatter of the
positive terms) is one more pass that allocates one more ``N x N`` tensor, and on a CPU faulting
in those fresh pages costs about as much as the arithmetic. Here each block of rows
(:data:`BLOCK_ELEMENTS` entries, sized for a core's cache) goes through every step in two scratch
buffers reused from block to block, and backward recomputes its block from ``sim`` rather than
saving ``N x N`` intermediates: a loss holds ``sim`` and, in backward, its gradient -- two
``N x N`` matrices -- plus the scratch.

The pieces:

* a *selection* says which entries of a block of rows each row's reduction leaves out, through
  ``fill_outside_(values, sim_rows, start, fill, scratch) -> values``:
  :class:`clmini.losses.core.Pairs` (the anchor's negatives, or only its hardest),
  :class:`AllOthers` (every sample but the anchor), :class:`GivenMask`;
* a *row reduction* with ``forward`` and ``backward`` per block: :class:`LogSumExpRows` (a logit
  map and a selection) or :class:`SumRows` (a selection);
* :func:`reduce_rows` runs one over ``sim`` as a single autograd node.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import Tensor

#: Entries per block of rows on the CPU: 1 MiB of float32, which stays in a core's L2 cache through
#: the dozen steps applied to it (more rows per block: more cache misses; fewer: more Python).
BLOCK_ELEMENTS = 1 << 18
#: Elsewhere (GPUs) kernel launches rather than caches set the cost: whole matrices up to N = 8192.
DEVICE_BLOCK_ELEMENTS = 1 << 26


class Scratch(NamedTuple):
    """Buffers of one block's shape ``[B, N]``, overwritten freely by whoever holds them."""

    floats: Tensor  # sim's dtype
    flags: Tensor   # bool


def row_blocks(sim: Tensor) -> Iterator[tuple[slice, Scratch]]:
    """``(rows, scratch)`` for each block of rows of ``sim``: the scratch is allocated once per
    call, not per block (with large allocations mmap-ed, as in the benchmark, a fresh buffer per
    block costs more page faults than the block costs arithmetic)."""
    n_rows, n_cols = sim.shape
    elements = BLOCK_ELEMENTS if sim.device.type == "cpu" else DEVICE_BLOCK_ELEMENTS
    step = max(1, min(n_rows, elements // n_cols))
    floats = sim.new_empty(step, n_cols)                                         # [B, N]
    flags = torch.empty(step, n_cols, dtype=torch.bool, device=sim.device)       # [B, N]
    for start in range(0, n_rows, step):
        size = min(step, n_rows - start)
        yield slice(start, start + size), Scratch(floats[:size], flags[:size])


# --------------------------------------------------------------------------- selections
class AllOthers:
    """Every sample but the anchor itself (SupCon's ``L_out`` denominator)."""

    @staticmethod
    def fill_outside_(values: Tensor, sim_rows: Tensor, start: int, fill: float, scratch: Scratch) -> Tensor:
        values.diagonal(start).fill_(fill)  # [B, N] block of rows start..: its (i, i) entries
        return values


class GivenMask:
    """The ``True`` entries of an explicit boolean ``[N, N]`` mask."""

    def __init__(self, mask: Tensor):
        self.mask = mask

    def fill_outside_(self, values: Tensor, sim_rows: Tensor, start: int, fill: float, scratch: Scratch) -> Tensor:
        outside = torch.logical_not(self.mask[start:start + len(values)], out=scratch.flags)  # [B, N]
        return values.masked_fill_(outside, fill)                                           # [B, N]


class _Identity:
    """``l(s) = s``, in the logit-map protocol (``logits_``, ``slope_``) of :class:`LogSumExpRows`."""

    @staticmethod
    def logits_(s: Tensor, out: Tensor) -> Tensor:
        return out.copy_(s)

    @staticmethod
    def slope_(s: Tensor, grad: Tensor, scratch: Scratch) -> Tensor:
        return grad


# --------------------------------------------------------------------------- row reductions
class LogSumExpRows:
    """Row ``i`` -> ``log sum_j exp(l(s_ij))`` over the entries the selection admits; ``-inf``
    (with zero gradient) for a row that admits none. ``logit_map`` follows the protocol of
    :class:`clmini.losses.LogitMap`: ``logits_(s, out)`` and ``slope_(s, grad, scratch)``."""

    def __init__(self, logit_map, selection):
        self.logit_map, self.selection = logit_map, selection

    def forward(self, sim_rows: Tensor, start: int, scratch: Scratch) -> Tensor:
        logits = self.logit_map.logits_(sim_rows, scratch.floats)                          # [B, N]
        self.selection.fill_outside_(logits, sim_rows, start, float("-inf"), scratch)      # [B, N]
        shift = logits.amax(dim=1)                                                         # [B, N] -> [B]
        empty = torch.isneginf(shift)  # a row that admits nothing: -inf
        shift = torch.where(empty, 0.0, shift)
        total = _exp_(logits.sub_(shift[:, None])).sum(dim=1)                              # [B, N] -> [B]
        return torch.where(empty, float("-inf"), total.log_().add_(shift))

    def backward(self, sim_rows: Tensor, start: int, reduced: Tensor, grad_reduced: Tensor, out: Tensor,
                 scratch: Scratch) -> None:
        """``out = grad_i * softmax_ij * l'(s_ij)``, exactly 0 where not admitted."""
        logits = self.logit_map.logits_(sim_rows, out)                                     # [B, N]
        shift = torch.where(torch.isneginf(reduced), 0.0, reduced)
        _exp_(logits.sub_(shift[:, None])).mul_(grad_reduced[:, None])                     # [B, N]
        self.selection.fill_outside_(out, sim_rows, start, 0.0, scratch)                   # [B, N]
        self.logit_map.slope_(sim_rows, out, scratch)                                      # [B, N]


class SumRows:
    """Row ``i`` -> ``sum_j s_ij`` over the entries the selection admits."""

    def __init__(self, selection):
        self.selection = selection

    def forward(self, sim_rows: Tensor, start: int, scratch: Scratch) -> Tensor:
        values = scratch.floats.copy_(sim_rows)                                           # [B, N]
        return self.selection.fill_outside_(values, sim_rows, start, 0.0, scratch).sum(dim=1)  # [B, N] -> [B]

    def backward(self, sim_rows: Tensor, start: int, reduced: Tensor, grad_reduced: Tensor, out: Tensor,
                 scratch: Scratch) -> None:
        out.copy_(grad_reduced[:, None].expand_as(out))                                   # [B, N]
        self.selection.fill_outside_(out, sim_rows, start, 0.0, scratch)


def _exp_(exponents: Tensor) -> Tensor:
    """``exp`` in place of exponents clamped to ``[log(tiny) / 2, 0]`` (``tiny``: the dtype's smallest
    normal number; the bound is -43.7 in float32, -354 in float64).

    The exponents are ``logit - (row maximum or log-sum-exp)``: at most 0 for every admitted entry
    (up to rounding), and each row's terms sum to at least 1, so terms below ``sqrt(tiny)`` cannot
    change the sum (nor a gradient by more than ``sqrt(tiny)`` times its scale). The clamp is for
    speed: ``exp`` of ``-inf`` or of anything that rounds to a subnormal (``log(tiny)`` itself does)
    leaves the vectorised path -- measured 15x and 100x slower on AVX-512 -- and the entries a row
    leaves out are ``-inf`` (forward) or arbitrary (backward, zeroed afterwards).
    """
    return exponents.clamp_(min=math.log(torch.finfo(exponents.dtype).tiny) / 2, max=0.0).exp_()


class _ReduceRows(torch.autograd.Function):
    """``sim`` -> (each row reduced ``[N]``, ``sim[rows, cols]`` ``[P]``) as one autograd node.

    Saves only ``sim`` (already alive) and ``[N]``/``[P]`` vectors; backward writes its single
    ``N x N`` gradient block by block, then adds the picked entries' gradients in place.
    """

    @staticmethod
    def forward(ctx, sim: Tensor, reduction, rows: Tensor, cols: Tensor):
        reduced = sim.new_empty(sim.shape[0])
        for block, scratch in row_blocks(sim):
            reduced[block] = reduction.forward(sim[block], block.start, scratch)
        ctx.reduction = reduction
        ctx.save_for_backward(sim, reduced, rows, cols)
        return reduced, sim[rows, cols]

    @staticmethod
    def backward(ctx, grad_reduced: Tensor, grad_picked: Tensor):
        sim, reduced, rows, cols = ctx.saved_tensors
        grad = torch.empty_like(sim)                                                      # [N, N]
        for block, scratch in row_blocks(sim):
            ctx.reduction.backward(sim[block], block.start, reduced[block], grad_reduced[block], grad[block],
                                   scratch)
        grad.index_put_((rows, cols), grad_picked, accumulate=True)                       # [N, N], P entries
        return grad, None, None, None


def reduce_rows(sim: Tensor, reduction, rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor]:
    """Each row of ``sim`` ``[N, N]`` reduced by ``reduction`` ``[N]``, and the entries ``sim[rows, cols]``
    ``[P]`` (the positive pairs), differentiable, in one fused pass over ``sim``."""
    return _ReduceRows.apply(sim, reduction, rows, cols)


def masked_logsumexp(x: Tensor, mask: Tensor) -> Tensor:
    """Row-wise ``log sum_{j: mask_ij} exp(x_ij)`` of a 2-D ``x``: ``-inf`` (with zero gradient) for a
    row with no ``True``."""
    none = torch.empty(0, dtype=torch.long, device=x.device)
    return reduce_rows(x, LogSumExpRows(_Identity, GivenMask(mask)), none, none)[0]
