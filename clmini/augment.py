"""SimCLR augmentations for a whole batch at once, on the batch's device.

Every image gets its own random parameters, drawn from one ``torch.Generator`` so a batch of views
is reproducible from a seed. The operations follow torchvision's ``RandomResizedCrop``,
``RandomHorizontalFlip``, ``ColorJitter``, ``RandomGrayscale`` and ``GaussianBlur`` as used by
SimCLR, written as tensor arithmetic over the batch instead of a Python loop over PIL images:

- crop + resize + flip is one affine resampling (``affine_grid`` + ``grid_sample``) per batch;
- colour jitter is per-sample factors broadcast over pixels (hue: a rotation of the chroma plane);
- blur is a separable Gaussian whose sigma differs per sample (a grouped convolution).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class AugmentConfig:
    """Parameters of the SimCLR augmentation pipeline (defaults: SimCLR's, jitter strength 0.5)."""

    crop_scale: tuple[float, float] = (0.2, 1.0)   # area of the crop / area of the image
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # width / height of the crop
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4  # RGB only
    hue: float = 0.1         # RGB only, fraction of a full turn
    grayscale_p: float = 0.2  # RGB only
    blur_p: float = 0.0      # SimCLR uses 0.5 on ImageNet, none on CIFAR
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    def __post_init__(self):
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        lo, hi = self.crop_ratio
        if not 0 < lo <= hi:
            raise ValueError(f"crop_ratio must satisfy 0 < min <= max, got {self.crop_ratio}")
        for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        for name in ("brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"blur_sigma must satisfy 0 < min <= max, got {self.blur_sigma}")


def augment(images: Tensor, generator: torch.Generator, config: AugmentConfig = AugmentConfig(),
            size: tuple[int, int] | None = None) -> Tensor:
    """One random view of each image: uint8 ``[B, C, H, W]`` -> float ``[B, C, *size]`` in [0, 1].

    ``generator`` must live on ``images.device``; ``size`` defaults to the input size.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"images must be uint8 [B, C, H, W], got {images.dtype} {tuple(images.shape)}")
    x = resized_crop_flip(images.float().div_(255), generator, config, size)
    rgb = x.shape[1] == 3
    x = color_jitter(x, generator, config, rgb)
    if rgb and config.grayscale_p > 0:
        gray = _bernoulli(x.shape[0], config.grayscale_p, generator, x.device)
        x = torch.where(gray[:, None, None, None], _luma(x).expand_as(x), x)
    if config.blur_p > 0:
        x = gaussian_blur(x, generator, config)
    return x


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device, *shape) -> Tensor:
    return torch.rand(n, *shape, generator=generator, device=device) * (high - low) + low


def _bernoulli(n: int, p: float, generator: torch.Generator, device) -> Tensor:
    return torch.rand(n, generator=generator, device=device) < p


def _luma(x: Tensor) -> Tensor:
    w = x.new_tensor(_LUMA).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def crop_boxes(n: int, height: int, width: int, generator: torch.Generator, config: AugmentConfig,
               device=None, attempts: int = 10) -> tuple[Tensor, Tensor]:
    """Crop sizes as fractions ``(h, w)`` of the image, each ``[n]``, as ``RandomResizedCrop``.

    Like torchvision: draw an area fraction uniformly in ``crop_scale`` and a log-uniform aspect
    ratio; keep the first of ``attempts`` draws that fits inside the image, else the whole image.
    """
    area = _uniform(n, *config.crop_scale, generator, device, attempts)
    log_ratio = _uniform(n, *map(math.log, config.crop_ratio), generator, device, attempts)
    ratio = log_ratio.exp()
    w = torch.sqrt(area * ratio * height / width)  # fraction of the width: w_px = sqrt(A*H*W*r)
    h = torch.sqrt(area / ratio * width / height)
    fits = (w <= 1) & (h <= 1)
    first = fits.float().argmax(1, keepdim=True)  # index of the first fitting draw (0 if none)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    any_fit = fits.any(1)
    return torch.where(any_fit, h, 1.0), torch.where(any_fit, w, 1.0)


def resized_crop_flip(x: Tensor, generator: torch.Generator, config: AugmentConfig,
                      size: tuple[int, int] | None = None) -> Tensor:
    """Random resized crop and horizontal flip as one affine resampling of the batch."""
    n, _, height, width = x.shape
    h, w = crop_boxes(n, height, width, generator, config, x.device)
    # In normalised coordinates ([-1, 1] across the image) a crop of relative size (h, w) centred
    # at (cy, cx) maps output (u, v) to input (w*u + cx, h*v + cy); the centre is uniform over the
    # positions that keep the crop inside the image. A flip negates the x scale.
    cx = (_uniform(n, -1, 1, generator, x.device)) * (1 - w)
    cy = (_uniform(n, -1, 1, generator, x.device)) * (1 - h)
    flip = torch.where(_bernoulli(n, config.flip_p, generator, x.device), -1.0, 1.0)
    zero = torch.zeros_like(w)
    theta = torch.stack([torch.stack([w * flip, zero, cx], 1),
                         torch.stack([zero, h, cy], 1)], 1)
    out_size = size or (height, width)
    grid = F.affine_grid(theta, [n, x.shape[1], *out_size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def color_jitter(x: Tensor, generator: torch.Generator, config: AugmentConfig, rgb: bool) -> Tensor:
    """Brightness and contrast (plus saturation and hue for RGB), applied with ``jitter_p``.

    The order is fixed (torchvision shuffles it per call); a sample that is not jittered gets the
    identity factors.
    """
    n, device = x.shape[0], x.device
    on = _bernoulli(n, config.jitter_p, generator, device).float().view(n, 1, 1, 1)

    def factor(strength: float) -> Tensor:
        f = _uniform(n, 1 - strength, 1 + strength, generator, device).view(n, 1, 1, 1)
        return 1 + on * (f - 1)

    x = (x * factor(config.brightness)).clamp_(0, 1)
    gray = _luma(x) if rgb else x
    mean = gray.mean((1, 2, 3), keepdim=True)
    x = ((x - mean) * factor(config.contrast) + mean).clamp_(0, 1)
    if rgb:
        gray = _luma(x)
        x = ((x - gray) * factor(config.saturation) + gray).clamp_(0, 1)
        angle = _uniform(n, -config.hue, config.hue, generator, device) * (2 * math.pi) * on.view(n)
        x = rotate_hue(x, angle)
    return x


# RGB <-> YIQ (NTSC): Y is luma, (I, Q) the chroma plane; rotating (I, Q) shifts the hue.
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


def rotate_hue(x: Tensor, angle: Tensor) -> Tensor:
    """Shift the hue of each RGB image by ``angle`` radians (a rotation in YIQ's chroma plane).

    A linear stand-in for torchvision's HSV hue shift: same luma, same chroma magnitude, hue turned
    by the angle; one ``[3, 3]`` matrix per sample instead of a per-pixel HSV round trip.
    """
    to_yiq = x.new_tensor(_RGB_TO_YIQ)
    cos, sin = angle.cos(), angle.sin()
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    rotation = torch.stack([torch.stack([one, zero, zero], 1),
                            torch.stack([zero, cos, -sin], 1),
                            torch.stack([zero, sin, cos], 1)], 1)  # [n, 3, 3]
    m = torch.linalg.inv(to_yiq) @ rotation @ to_yiq
    return torch.einsum("nij,njhw->nihw", m, x).clamp_(0, 1)


def gaussian_blur(x: Tensor, generator: torch.Generator, config: AugmentConfig) -> Tensor:
    """Separable Gaussian blur with a per-sample sigma, applied with probability ``blur_p``.

    Kernel size is about 10 % of the image side (SimCLR), odd, at least 3.
    """
    n, c, height, width = x.shape
    k = max(3, int(0.1 * min(height, width)) // 2 * 2 + 1)
    sigma = _uniform(n, *config.blur_sigma, generator, x.device)
    offsets = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    kernel = torch.exp(-0.5 * (offsets / sigma[:, None]) ** 2)
    kernel = kernel / kernel.sum(1, keepdim=True)
    skip = ~_bernoulli(n, config.blur_p, generator, x.device)
    # An identity kernel (1 at the centre) for samples that are not blurred.
    kernel[skip] = (offsets == 0).to(x.dtype)
    kernel = kernel.repeat_interleave(c, 0)  # one kernel per (sample, channel) group
    flat = x.reshape(1, n * c, height, width)
    flat = F.pad(flat, (k // 2,) * 4, mode="reflect")
    flat = F.conv2d(flat, kernel.view(n * c, 1, 1, k), groups=n * c)
    flat = F.conv2d(flat, kernel.view(n * c, 1, k, 1), groups=n * c)
    return flat.view(n, c, height, width).clamp_(0, 1)  # clamp: rounding of the kernel sum


def view_grid(images: Tensor, n_views: int = 8, seed: int = 0,
              config: AugmentConfig = AugmentConfig(), padding: int = 2) -> Tensor:
    """A picture of augmented views for the book: one row per image, originals in column 0.

    Returns a float ``[H', W', C]`` array in [0, 1] ready for ``plt.imshow``.
    """
    from torchvision.utils import make_grid

    generator = torch.Generator(images.device).manual_seed(seed)
    views = [images.float() / 255] + [augment(images, generator, config) for _ in range(n_views)]
    tiles = torch.stack(views, 1).flatten(0, 1)  # row-major: image 0's views, image 1's, ...
    grid = make_grid(tiles.cpu(), nrow=n_views + 1, padding=padding, pad_value=1.0)
    return grid.permute(1, 2, 0)
