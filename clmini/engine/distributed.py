"""Data parallelism on ``torch.distributed``: a loss over the whole batch of every process.

With ``K`` processes (``torchrun --nproc_per_node K``, NCCL on CUDA, gloo on the CPU) each holds
``n`` of the global batch's ``N = K n`` embeddings. A contrastive loss needs all of them: each
anchor's negatives are the other processes' samples too. :func:`gathered_loss` gathers the
embeddings of every process through an all-gather whose backward *sums* the gradients that every
process computes for a slice and returns the sum to the slice's owner
(``torch.distributed.nn.functional.all_gather``), and scores this process's anchors against all of
them.

The scaling, derived (``L`` the single-process loss of the global batch, a mean over its ``C``
anchors with a positive; ``l_i`` anchor ``i``'s loss; ``Z_r`` process ``r``'s embeddings):

* process ``r`` returns ``L_r = K / C * sum_{i in r} l_i``, so ``sum_r L_r = K L``;
* the all-gather's backward gives process ``r`` the gradient ``sum_s dL_s/dZ_r = K dL/dZ_r``;
* DistributedDataParallel averages the parameter gradients over the ``K`` processes:
  ``1/K sum_r (dZ_r/dtheta)^T K dL/dZ_r = dL/dtheta``, the single-process gradient.

The two usual mistakes are the two ways of dropping a factor: a gather without gradient (the other
processes' samples are constants: the negatives' side of every pair is lost), or ``L_r`` without the
factor ``K`` (every gradient ``K`` times too small after DDP's averaging). ``tests/engine/
test_distributed.py`` checks the value and the gradients against one process on the concatenated
batch, with different inputs on each process (the same input everywhere would hide both).

Quantities of the whole batch (MACL's mean positive similarity, DCLW's weights) are computed over
the gathered batch, so they are the single-process ones too. Each process computes the loss's
``N x N`` matrix; only its own anchors' rows carry a gradient.
"""
from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
from torch import Tensor

from clmini.losses import PairwiseLoss


def world_size() -> int:
    """The number of processes of the default group (1 without ``torch.distributed``)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the default group (0 without ``torch.distributed``)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def gather_with_grad(x: Tensor) -> Tensor:
    """``x`` of every process, concatenated in rank order; the backward sums each slice's gradients
    over the processes and returns them to its owner."""
    if world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather
    with warnings.catch_warnings():  # its successor in _functional_collectives is private and lacks a gloo backward
        warnings.filterwarnings("ignore", message=r".*all_gather is deprecated", category=FutureWarning)
        return torch.cat(all_gather(x))


def gather(x: Tensor) -> Tensor:
    """``x`` of every process, concatenated in rank order, without gradient (labels)."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def gathered_loss(loss: PairwiseLoss, embeddings: Tensor, labels: Tensor) -> Tensor:
    """This process's share ``K / C * sum_{i in r} l_i`` of the global batch's mean loss (see the
    module's derivation); with one process, ``loss(embeddings, labels)``.

    ``embeddings`` ``[n, D]`` and ``labels`` ``[n]`` are this process's; every process must pass
    the same ``n``. Labels must mean the same on every process (instance ids offset per process, or
    classes). ``loss.reduction`` must be ``"mean"``.
    """
    if loss.reduction != "mean":
        raise ValueError(f"gathered_loss reduces over the global batch itself: the loss's reduction must be "
                         f"'mean', got {loss.reduction!r}")
    k = world_size()
    if k == 1:
        return loss(embeddings, labels)
    n = torch.tensor([embeddings.shape[0]], device=embeddings.device)
    sizes = gather(n)
    if bool((sizes != n).any()):
        raise ValueError(f"gathered_loss: every process must hold the same number of embeddings, got {sizes.tolist()}")
    per_anchor, has_positive = loss.anchor_losses(gather_with_grad(embeddings), gather(labels))
    mine = per_anchor[rank() * embeddings.shape[0]:(rank() + 1) * embeddings.shape[0]]
    return k * mine.sum() / has_positive.sum()


__all__ = ["world_size", "rank", "gather", "gather_with_grad", "gathered_loss"]
