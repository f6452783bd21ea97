"""clmini.engine.models: shapes, the CIFAR-style ResNet-18 stem, standardisation travelling with the weights."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from clmini.engine.models import ProjectionHead, SmallCNN, build_model, resnet18_cifar


def test_small_cnn_shapes_and_size():
    model = build_model("small-cnn", 1, [0.5], [0.25])
    x = torch.rand(4, 1, 28, 28)
    assert model.features(x).shape == (4, 128) and model(x).shape == (4, 128)
    encoder_params = sum(p.numel() for p in model.encoder.parameters())
    assert 80_000 < encoder_params < 110_000  # CPU-sized
    assert SmallCNN(3, width=8).out_dim == 32


def test_resnet18_cifar_keeps_resolution_in_the_stem():
    net = resnet18_cifar(3)
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, nn.Identity) and isinstance(net.fc, nn.Identity)
    x = torch.rand(2, 3, 32, 32)
    assert net(x).shape == (2, 512)
    # the first residual stage sees the full 32 x 32 input (torchvision's stem would give 8 x 8)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
    assert stem(x).shape[-2:] == (32, 32)
    model = build_model("resnet18", 1, [0.5], [0.5], proj_dim=64)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 64)


def test_standardisation_is_part_of_the_state_dict():
    model = build_model("small-cnn", 3, [0.1, 0.2, 0.3], [0.5, 0.5, 0.5], width=4)
    state = model.state_dict()
    assert torch.allclose(state["standardize.mean"].flatten(), torch.tensor([0.1, 0.2, 0.3]))
    x = torch.full((1, 3, 2, 2), 0.6)
    expected = torch.tensor([1.0, 0.8, 0.6]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert torch.allclose(model.standardize(x), expected)
    fresh = build_model("small-cnn", 3, [0.0] * 3, [1.0] * 3, width=4)
    fresh.load_state_dict(state)
    assert torch.allclose(fresh.standardize(x), expected)


def test_projection_head_and_errors():
    head = ProjectionHead(32, out_dim=16)
    assert head(torch.rand(5, 32)).shape == (5, 16)
    with pytest.raises(ValueError, match="arch must be one of"):
        build_model("vit", 3, [0.5] * 3, [0.5] * 3)
    with pytest.raises(ValueError, match="proj_dim"):
        build_model("small-cnn", 1, [0.5], [0.5], proj_dim=0)
