"""clmini.engine.augment: per-sample parameters, the exact operations, reproducibility."""
from __future__ import annotations

import math

import pytest
import torch

from clmini.engine.augment import (BLUR_SIGMA, BRIGHTNESS, CONTRAST, GRAY, THETA, AugmentConfig, apply_view_params, augment,
                            gaussian_blur, rotate_hue, sample_view_params, view_grid)

# Everything off: augment() must then return the images unchanged.
IDENTITY = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0,
                         grayscale_p=0.0, blur_p=0.0)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def images(n=16, c=3, size=32, seed=0):
    return torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=gen(seed))


def test_identity_config_returns_the_images():
    x = images()
    assert torch.allclose(augment(x, gen(), IDENTITY), x.float() / 255, atol=1e-6)


def test_flip_is_a_mirror_image():
    x = images()
    out = augment(x, gen(), AugmentConfig(**{**IDENTITY.__dict__, "flip_p": 1.0}))
    assert torch.allclose(out, x.flip(-1).float() / 255, atol=1e-6)


def test_same_seed_same_views_other_seed_other_views():
    x = images()
    config = AugmentConfig(blur_p=0.5)
    assert torch.equal(augment(x, gen(1), config), augment(x, gen(1), config))
    assert not torch.allclose(augment(x, gen(1), config), augment(x, gen(2), config))


def test_output_shape_range_and_per_sample_randomness():
    x = images(8).expand(8, 3, 32, 32)[:1].repeat(8, 1, 1, 1)  # eight copies of one image
    out = augment(x, gen(), AugmentConfig(blur_p=0.5), size=(24, 24))
    assert out.shape == (8, 3, 24, 24) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert len({tuple(v.flatten()[:50].tolist()) for v in out}) == 8  # each copy got its own view


def crop_sizes(n, height, width, config):
    """Crop height and width, as fractions of the image, from the affine maps of ``n`` views."""
    theta = sample_view_params(n, height, width, gen(), config)[:, THETA]
    return theta[:, 4], theta[:, 0].abs()


def test_crop_sizes_follow_random_resized_crop():
    config = AugmentConfig()
    h, w = crop_sizes(20000, 224, 224, config)
    area, ratio = h * w, w / h
    assert (h <= 1).all() and (w <= 1).all()
    fitted = area < 1  # the whole-image fallback aside
    assert (area[fitted] >= 0.2 - 1e-6).all()
    assert (ratio[fitted] >= 3 / 4 - 1e-5).all() and (ratio[fitted] <= 4 / 3 + 1e-5).all()
    # The same distribution as torchvision's sampler (rejecting crops that do not fit skews the
    # area below U(0.2, 1)'s mean of 0.6): compare moments with torchvision's own draws.
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(0)
    reference = torch.tensor([h_ * w_ / 224**2 for _, _, h_, w_ in (
        RandomResizedCrop.get_params(torch.zeros(1, 224, 224), (0.2, 1.0), (3 / 4, 4 / 3))
        for _ in range(4000))])
    assert abs(float(area.mean() - reference.mean())) < 0.015
    assert abs(float(area.std() - reference.std())) < 0.015
    assert float(area.mean()) < 0.57  # the skew is there (0.6 would mean no rejection)
    # a non-square image: the ratio is in pixels, so for H = 2W a ratio-1 crop has w = 2h (fractions)
    h, w = crop_sizes(100, 64, 32, AugmentConfig(crop_scale=(0.25, 0.25), crop_ratio=(1.0, 1.0)))
    assert torch.allclose(w, 2 * h) and torch.allclose(h * w, torch.full((100,), 0.25))


def test_a_small_centre_crop_magnifies_the_centre():
    # An image whose left half is black and right half white: a crop narrower than the image
    # keeps a sharp edge but moves it; the mean stays near the image's (crops are centred uniformly).
    x = torch.zeros(4000, 1, 8, 8, dtype=torch.uint8)
    x[..., 4:] = 255
    out = augment(x, gen(), AugmentConfig(jitter_p=0.0, flip_p=0.0))
    assert abs(float(out.mean()) - 0.5) < 0.02
    assert (out[:, :, :, 0] <= out[:, :, :, -1]).all()  # no flip: dark side stays left


def test_brightness_and_contrast_factors_are_in_range():
    x = torch.full((2000, 1, 4, 4), 128, dtype=torch.uint8)
    x[:, :, :2] = 64  # half the image darker
    lo, hi = 64 / 255, 128 / 255
    no_crop = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=1.0)
    config = AugmentConfig(**no_crop, brightness=0.4, contrast=0.0)
    params = sample_view_params(2000, 4, 4, gen(), config)
    out = apply_view_params(x, params, blur=False)
    factor = out[:, 0, 3, 3] / hi
    assert factor.min() >= 0.6 - 1e-5 and factor.max() <= 1.4 + 1e-5 and factor.std() > 0.2
    assert torch.allclose(factor, params[:, BRIGHTNESS])
    config = AugmentConfig(**no_crop, brightness=0.0, contrast=0.4)
    out = apply_view_params(x, sample_view_params(2000, 4, 4, gen(), config), blur=False)
    mean = (lo + hi) / 2
    assert torch.allclose(out.mean((1, 2, 3)), torch.full((2000,), mean), atol=1e-5)  # contrast keeps the mean
    spread = (out[:, 0, 3, 3] - out[:, 0, 0, 0]) / (hi - lo)
    assert spread.min() >= 0.6 - 1e-4 and spread.max() <= 1.4 + 1e-4


def test_jitter_probability():
    params = sample_view_params(4000, 8, 8, gen(), AugmentConfig(jitter_p=0.8))
    changed = (params[:, BRIGHTNESS] != 1) & (params[:, CONTRAST] != 1)
    assert abs(float(changed.float().mean()) - 0.8) < 0.03
    assert ((params[:, BRIGHTNESS] == 1) == (params[:, CONTRAST] == 1)).all()  # one coin for all factors
    gray = sample_view_params(4000, 8, 8, gen(), AugmentConfig(grayscale_p=0.2))[:, GRAY]
    assert abs(float(gray.mean()) - 0.2) < 0.03


def test_hue_rotation_keeps_gray_and_luma_and_a_full_turn_is_identity():
    gray = torch.full((3, 3, 4, 4), 0.4)
    assert torch.allclose(rotate_hue(gray, torch.tensor([0.5, 1.0, 2.0])), gray, atol=1e-6)
    colour = torch.rand(3, 3, 4, 4, generator=gen()) * 0.5 + 0.25
    luma = lambda t: (t * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    turned = rotate_hue(colour, torch.tensor([0.3, -0.3, 0.1]))
    assert torch.allclose(luma(turned), luma(colour), atol=1e-5)
    assert not torch.allclose(turned, colour, atol=1e-3)
    assert torch.allclose(rotate_hue(colour, torch.full((3,), 2 * math.pi)), colour, atol=1e-5)


def test_grayscale_makes_channels_equal():
    out = augment(images(), gen(), AugmentConfig(**{**IDENTITY.__dict__, "grayscale_p": 1.0}))
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])


def test_blur_keeps_constants_and_smooths_noise():
    flat = torch.full((4, 3, 32, 32), 0.3)
    assert torch.allclose(gaussian_blur(flat, torch.full((4,), 1.5)), flat, atol=1e-6)
    noise = torch.rand(64, 1, 32, 32, generator=gen())
    sigma = sample_view_params(64, 32, 32, gen(), AugmentConfig(blur_p=0.5, blur_sigma=(1.0, 2.0)))[:, BLUR_SIGMA]
    assert 15 < int((sigma > 0).sum()) < 49 and ((sigma == 0) | (sigma >= 1)).all()
    blurred = gaussian_blur(noise, sigma)
    ratio = blurred.std((1, 2, 3)) / noise.std((1, 2, 3))
    assert (ratio[sigma > 0] < 0.6).all()
    assert torch.allclose(blurred[sigma == 0], noise[sigma == 0], atol=1e-6)  # sigma 0: unchanged


def test_bad_config_and_inputs_are_rejected():
    with pytest.raises(ValueError, match="crop_scale"):
        AugmentConfig(crop_scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="flip_p"):
        AugmentConfig(flip_p=1.5)
    with pytest.raises(ValueError, match="uint8"):
        augment(torch.rand(2, 3, 8, 8), gen())


def test_view_grid_shape():
    grid = view_grid(images(3, 1, 28), n_views=4, padding=2)
    # 3 rows of 1 + 4 tiles of 28 px with 2 px padding around each
    assert grid.shape == (3 * 30 + 2, 5 * 30 + 2, 3)
    assert grid.min() >= 0 and grid.max() <= 1
