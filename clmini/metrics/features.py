"""Features of a trained network: encoder outputs ``h`` and projections ``z``, in chunks."""
from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor, nn

CHUNK = 1024  # rows per block of the pairwise computations: memory O(CHUNK * N)


def autocast(device: torch.device, enabled: bool = True):
    """bfloat16 autocast on CUDA (tensor cores, no loss scaling needed); nothing elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def encode(model: nn.Module, images: Tensor, batch_size: int = 1024) -> tuple[Tensor, Tensor]:
    """Encoder features ``h`` and projections ``z`` (float32) of uint8 ``images``, in eval mode."""
    was_training = model.training
    model.eval()
    features, projections = [], []
    device = images.device
    try:
        for batch in images.split(batch_size):
            with autocast(device):
                h = model.features(batch.float().div_(255))
                z = model.head(h)
            features.append(h.float())
            projections.append(z.float())
    finally:
        model.train(was_training)
    return torch.cat(features), torch.cat(projections)


def check_rows(a: Tensor, b: Tensor, what: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{what}: {a.shape[0]} rows vs {b.shape[0]} labels or rows")
