"""Encoders and the projection head.

A :class:`ContrastiveNet` is ``standardise -> encoder f -> head g``: the loss sees the projection
``z = g(f(x))``, downstream evaluation (kNN, linear probe) the encoder features ``h = f(x)``, as in
SimCLR. Inputs are float images in [0, 1]; the per-channel standardisation is part of the network
(a buffer saved with the weights), so evaluation needs no separate preprocessing.

Convolutions run in the channels-last memory layout: oneDNN on the CPU and cuDNN with bfloat16
on the GPU have their fastest kernels for it (about 25 % per training step on a 2-core CPU).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

ARCHS = ("small-cnn", "resnet18")


class Standardize(nn.Module):
    """``(x - mean) / std`` per channel, with the data set's statistics stored as buffers."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SmallCNN(nn.Sequential):
    """Three conv-BN-ReLU blocks with max-pooling, then global average pooling.

    Sized for 28 x 28 inputs on a CPU: ``width`` 32 -> 64 -> 128 channels (about 93k parameters at
    the default), features of dimension ``4 * width``.
    """

    def __init__(self, in_channels: int = 1, width: int = 32):
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        super().__init__(
            _conv_block(in_channels, width), nn.MaxPool2d(2),
            _conv_block(width, 2 * width), nn.MaxPool2d(2),
            _conv_block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = 4 * width


def resnet18_cifar(in_channels: int = 3) -> nn.Module:
    """torchvision's ResNet-18 adapted to small images (SimCLR's CIFAR variant).

    A 3 x 3 stride-1 stem and no max-pool keep 32 x 32 inputs from being downsampled to 8 x 8 before
    the first residual stage; the classifier is removed, so the output is the 512-d pooled feature.
    """
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    net.out_dim = 512
    return net


class ProjectionHead(nn.Sequential):
    """SimCLR's MLP head ``Linear -> BN -> ReLU -> Linear`` to ``out_dim`` (128)."""

    def __init__(self, in_dim: int, hidden_dim: int | None = None, out_dim: int = 128):
        hidden_dim = hidden_dim or in_dim
        super().__init__(nn.Linear(in_dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim),
                         nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))


class ContrastiveNet(nn.Module):
    """Standardisation, encoder and projection head; ``forward`` returns the projection ``z``."""

    def __init__(self, encoder: nn.Module, head: nn.Module, standardize: Standardize):
        super().__init__()
        self.standardize, self.encoder, self.head = standardize, encoder, head

    def features(self, x: Tensor) -> Tensor:
        """Encoder features ``h = f(x)`` (what kNN and the linear probe use)."""
        return self.encoder(self.standardize(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def build_model(arch: str, in_channels: int, mean: Sequence[float], std: Sequence[float],
                proj_dim: int = 128, width: int = 32) -> ContrastiveNet:
    """The network for ``arch`` in :data:`ARCHS` (``width`` applies to ``small-cnn`` only)."""
    if arch == "small-cnn":
        encoder = SmallCNN(in_channels, width)
    elif arch == "resnet18":
        encoder = resnet18_cifar(in_channels)
    else:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    if proj_dim < 1:
        raise ValueError(f"proj_dim must be >= 1, got {proj_dim}")
    model = ContrastiveNet(encoder, ProjectionHead(encoder.out_dim, out_dim=proj_dim), Standardize(mean, std))
    return model.to(memory_format=torch.channels_last)
