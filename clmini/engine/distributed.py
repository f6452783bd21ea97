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

Batch normalisation must see the global batch too: :func:`sync_batch_norm` makes it so, with
``torch.nn.SyncBatchNorm`` on CUDA and, on the CPU (where that layer refuses to run), with
:class:`SyncBatchNormCPU`, which sums each channel's moments over the processes through the same
autograd-aware collectives.
"""
from __future__ import annotations

import os
import warnings

import torch
import torch.distributed as dist
from torch import Tensor, nn

from clmini.losses import PairwiseLoss


def world_size() -> int:
    """The number of processes of the default group (1 without ``torch.distributed``)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the default group (0 without ``torch.distributed``)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def init_from_env(device: torch.device) -> bool:
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE`` > 1 in the environment):
    NCCL on CUDA (each process on the GPU of its ``LOCAL_RANK``), gloo on the CPU. Returns whether
    this process is one of several."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def destroy() -> None:
    """Leave the process group (after the last collective)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_from_env() -> int:
    """This process's rank as torchrun set it (``RANK``; 0 when not launched by it)."""
    return int(os.environ.get("RANK", "0"))


def local_device(device: torch.device) -> torch.device:
    """The device of this process: its ``LOCAL_RANK``'s GPU when several processes share CUDA."""
    if device.type == "cuda" and world_size() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def broadcast(obj, src: int = 0):
    """``obj`` of process ``src`` on every process (any picklable object)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def average_gradients_(parameters) -> None:
    """Average the gradients of ``parameters`` over the processes, in place (those no DDP wrapper holds)."""
    if world_size() == 1:
        return
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world_size())


def _all_reduce_with_grad(x: Tensor) -> Tensor:
    from torch.distributed.nn.functional import all_reduce
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*all_reduce is deprecated", category=FutureWarning)
        return all_reduce(x)


class SyncBatchNormCPU(nn.modules.batchnorm._BatchNorm):
    """Batch normalisation over the global batch of every process, on any device (for the CPU, where
    ``torch.nn.SyncBatchNorm`` refuses to run): each channel's count, sum and sum of squares are
    summed over the processes (autograd-aware: the backward sums the gradients as well), then the
    batch is normalised with the global mean and (biased) variance and the running statistics move
    with the unbiased one, as ``BatchNorm`` does. With one process, or in evaluation, it is BatchNorm."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N, C, ...), got {x.dim()}-D")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        self._check_input_dim(x)
        xf, channels = x.float(), x.shape[1]
        dims = [0, *range(2, x.dim())]
        count = torch.full((1,), x.numel() / channels, dtype=torch.float32, device=x.device)
        total = _all_reduce_with_grad(torch.cat([xf.sum(dims), xf.square().sum(dims), count]))
        n = total[-1]
        mean = total[:channels] / n
        var = (total[channels:2 * channels] / n - mean.square()).clamp(min=0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - factor).add_(factor * mean)
                self.running_var.mul_(1 - factor).add_(factor * var * n / (n - 1))
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def sync_batch_norm(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` with every batch-norm layer normalising over the global batch (a no-op with one process)."""
    if world_size() == 1:
        return model
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert_cpu(model)


def _convert_cpu(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncBatchNormCPU):
        synced = SyncBatchNormCPU(module.num_features, module.eps, module.momentum, module.affine,
                                  module.track_running_stats)
        synced.load_state_dict(module.state_dict())
        return synced.to(next(iter(module.state_dict().values())).device)
    for name, child in module.named_children():
        module.add_module(name, _convert_cpu(child))
    return module


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


__all__ = ["world_size", "rank", "rank_from_env", "init_from_env", "destroy", "local_device", "barrier", "broadcast", "average_gradients_",
           "gather", "gather_with_grad", "gathered_loss", "SyncBatchNormCPU", "sync_batch_norm"]
