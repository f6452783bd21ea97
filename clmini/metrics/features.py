"""Features of a trained network: encoder outputs ``h`` and projections ``z``, in chunks."""
from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor, nn

CHUNK = 1024  # rows per block of the pairwise computations: memory O(CHUNK * N)


def autocast(device: torch.device, precision: str = "fp32"):
    """bfloat16 autocast on ``device`` for ``precision="bf16"`` (no loss scaling needed: bf16 has
    float32's range); nothing for ``"fp32"``."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp32":
        return nullcontext()
    raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")


@torch.no_grad()
def encode(model: nn.Module, images: Tensor, batch_size: int = 1024,
           precision: str = "fp32") -> tuple[Tensor, Tensor]:
    """Encoder features ``h`` and projections ``z`` (float32) of uint8 ``images``, in eval mode,
    the network run in ``precision`` (:func:`autocast`)."""
    was_training = model.training
    model.eval()
    features, projections = [], []
    device = images.device
    try:
        for batch in images.split(batch_size):
            with autocast(device, precision):
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
