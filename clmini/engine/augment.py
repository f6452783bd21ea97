"""SimCLR augmentations for a whole batch at once, on the batch's device.

Every image gets its own random parameters. They are drawn in one call from a CPU
``torch.Generator`` into a small ``[B, 12]`` table (:func:`sample_view_params`) and then applied to
the batch on its device (:func:`apply_view_params`). Drawing on the CPU makes the views a function
of the seed alone, the same on any device, and keeps the dozens of tiny parameter computations
off the GPU, where each would be a kernel launch; the pixels are touched only on the device.

The operations follow torchvision's ``RandomResizedCrop``, ``RandomHorizontalFlip``,
``ColorJitter``, ``RandomGrayscale`` and ``GaussianBlur`` as SimCLR uses them, written as tensor
arithmetic over the batch instead of a Python loop over PIL images:

- crop + resize + flip is one affine resampling (``affine_grid`` + ``grid_sample``);
- colour jitter is per-sample factors broadcast over pixels (hue: a rotation of YIQ's chroma plane);
- blur is a separable Gaussian whose sigma differs per sample (a grouped convolution).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)
# RGB -> YIQ (NTSC): Y is luma, (I, Q) the chroma plane; rotating (I, Q) turns the hue.
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))
_ATTEMPTS = 10  # crop draws per sample before falling back to the whole image, as torchvision

# Columns of the parameter table: the affine crop/flip map, then the photometric parameters.
THETA, BRIGHTNESS, CONTRAST, SATURATION, HUE, GRAY, BLUR_SIGMA = slice(0, 6), 6, 7, 8, 9, 10, 11
N_PARAMS = 12


@dataclass(frozen=True)
class AugmentConfig:
    """Parameters of the SimCLR augmentation pipeline (defaults: SimCLR's, jitter strength 0.5)."""

    crop_scale: tuple[float, float] = (0.2, 1.0)   # area of the crop / area of the image
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # width / height of the crop, in pixels
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

    ``generator`` is a CPU generator (the parameters are drawn on the CPU whatever the device of
    ``images``); ``size`` defaults to the input size.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"images must be uint8 [B, C, H, W], got {images.dtype} {tuple(images.shape)}")
    params = sample_view_params(images.shape[0], *images.shape[2:], generator, config)
    if images.device.type == "cuda":
        params = params.pin_memory().to(images.device, non_blocking=True)  # no sync with the GPU
    return apply_view_params(images, params, size, blur=config.blur_p > 0)


def _lerp(u: Tensor, bounds: tuple[float, float]) -> Tensor:
    return bounds[0] + (bounds[1] - bounds[0]) * u


def sample_view_params(n: int, height: int, width: int, generator: torch.Generator,
                       config: AugmentConfig = AugmentConfig()) -> Tensor:
    """The random parameters of ``n`` views, a CPU float table ``[n, N_PARAMS]``.

    Columns: ``THETA`` the affine map from output to input coordinates (crop, resize, flip);
    ``BRIGHTNESS``/``CONTRAST``/``SATURATION`` factors (1 = unchanged), ``HUE`` an angle in radians,
    ``GRAY`` 1 to convert to grayscale, ``BLUR_SIGMA`` (0 = no blur). All come from one draw of
    uniforms, so the stream consumed per view does not depend on the outcome of any coin.
    """
    if generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU generator, got one on {generator.device}")
    u = torch.rand(n, 2 * _ATTEMPTS + 11, generator=generator)
    area, log_ratio = _lerp(u[:, :_ATTEMPTS], config.crop_scale), \
        _lerp(u[:, _ATTEMPTS:2 * _ATTEMPTS], (math.log(config.crop_ratio[0]), math.log(config.crop_ratio[1])))
    u = u[:, 2 * _ATTEMPTS:]
    # RandomResizedCrop: a crop of area A * H * W pixels and width/height ratio r is
    # sqrt(A H W r) wide and sqrt(A H W / r) high; keep the first draw that fits, else the whole image.
    ratio = log_ratio.exp()
    w = torch.sqrt(area * ratio * height / width)  # as fractions of the image's width and height
    h = torch.sqrt(area / ratio * width / height)
    fits = (w <= 1) & (h <= 1)
    first = fits.float().argmax(1, keepdim=True)
    any_fit = fits.any(1)
    w = torch.where(any_fit, w.gather(1, first).squeeze(1), 1.0)
    h = torch.where(any_fit, h.gather(1, first).squeeze(1), 1.0)
    # In normalised coordinates ([-1, 1] across the image) the crop maps output (x, y) to input
    # (w x + cx, h y + cy), its centre uniform over the positions inside the image; a flip negates w.
    cx, cy = (2 * u[:, 0] - 1) * (1 - w), (2 * u[:, 1] - 1) * (1 - h)
    w = torch.where(u[:, 2] < config.flip_p, -w, w)
    zero = torch.zeros(n)
    jitter = u[:, 3] < config.jitter_p

    def factor(column: int, strength: float) -> Tensor:
        return torch.where(jitter, _lerp(u[:, column], (1 - strength, 1 + strength)), 1.0)

    hue = torch.where(jitter, _lerp(u[:, 7], (-config.hue, config.hue)) * 2 * math.pi, 0.0)
    gray = (u[:, 8] < config.grayscale_p).float()
    sigma = torch.where(u[:, 9] < config.blur_p, _lerp(u[:, 10], config.blur_sigma), 0.0)
    return torch.stack([w, zero, cx, zero, h, cy, factor(4, config.brightness), factor(5, config.contrast),
                        factor(6, config.saturation), hue, gray, sigma], 1)


def apply_view_params(images: Tensor, params: Tensor, size: tuple[int, int] | None = None,
                      blur: bool = True) -> Tensor:
    """Apply a parameter table (:func:`sample_view_params`) to uint8 ``images`` on their device.

    Saturation, hue and grayscale apply to RGB images only. ``blur=False`` skips the blur pass
    (the table's ``BLUR_SIGMA`` must then be 0) instead of convolving with identity kernels.
    """
    n, channels, height, width = images.shape
    x = images.float().div_(255)
    grid = F.affine_grid(params[:, THETA].reshape(n, 2, 3), [n, channels, *(size or (height, width))],
                         align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    per_sample = params.view(n, N_PARAMS, 1, 1)
    x = (x * per_sample[:, BRIGHTNESS:BRIGHTNESS + 1]).clamp_(0, 1)
    rgb = channels == 3
    mean = (_luma(x) if rgb else x).mean((1, 2, 3), keepdim=True)
    x = ((x - mean) * per_sample[:, CONTRAST:CONTRAST + 1] + mean).clamp_(0, 1)
    if rgb:
        gray = _luma(x)
        x = ((x - gray) * per_sample[:, SATURATION:SATURATION + 1] + gray).clamp_(0, 1)
        x = rotate_hue(x, params[:, HUE])
        x = torch.lerp(x, _luma(x).expand_as(x), per_sample[:, GRAY:GRAY + 1])
    if blur:
        x = gaussian_blur(x, params[:, BLUR_SIGMA])
    return x


@functools.lru_cache(maxsize=None)
def _constants(device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
    """Colour constants, copied to each device once (a copy per call would synchronise the GPU)."""
    to_yiq = torch.tensor(_RGB_TO_YIQ, dtype=torch.float64)
    values = {"luma": torch.tensor(_LUMA).view(1, 3, 1, 1), "to_yiq": to_yiq, "from_yiq": torch.linalg.inv(to_yiq)}
    return {k: v.to(device, dtype) for k, v in values.items()}


def _luma(x: Tensor) -> Tensor:
    return (x * _constants(x.device, x.dtype)["luma"]).sum(1, keepdim=True)


def rotate_hue(x: Tensor, angle: Tensor) -> Tensor:
    """Turn the hue of each RGB image by ``angle`` radians (a rotation in YIQ's chroma plane).

    A linear stand-in for torchvision's HSV hue shift: same luma, same chroma magnitude, hue turned
    by the angle; one ``[3, 3]`` matrix per sample instead of a per-pixel HSV round trip.
    """
    c = _constants(x.device, x.dtype)
    cos, sin = angle.cos(), angle.sin()
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    rotation = torch.stack([one, zero, zero, zero, cos, -sin, zero, sin, cos], 1).view(-1, 3, 3)
    m = c["from_yiq"] @ rotation @ c["to_yiq"]
    return torch.einsum("nij,njhw->nihw", m, x).clamp_(0, 1)


def gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur, ``sigma`` per sample (0: unchanged).

    Kernel size is about 10 % of the image side (SimCLR), odd, at least 3.
    """
    n, c, height, width = x.shape
    k = max(3, int(0.1 * min(height, width)) // 2 * 2 + 1)
    offsets = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    sigma = sigma.to(x.dtype)[:, None]
    kernel = torch.exp(-0.5 * (offsets / sigma.clamp(min=1e-6)) ** 2)
    # sigma = 0 gives the identity kernel (1 at the centre): the sample passes unchanged.
    kernel = torch.where(sigma > 0, kernel / kernel.sum(1, keepdim=True), (offsets == 0).to(x.dtype))
    kernel = kernel.repeat_interleave(c, 0)  # one kernel per (sample, channel) group
    flat = F.pad(x.reshape(1, n * c, height, width), (k // 2,) * 4, mode="reflect")
    flat = F.conv2d(flat, kernel.view(n * c, 1, 1, k), groups=n * c)
    flat = F.conv2d(flat, kernel.view(n * c, 1, k, 1), groups=n * c)
    return flat.view(n, c, height, width).clamp_(0, 1)  # clamp: rounding of the kernel sum


def view_grid(images: Tensor, n_views: int = 8, seed: int = 0,
              config: AugmentConfig = AugmentConfig(), padding: int = 2) -> Tensor:
    """A picture of augmented views for the book: one row per image, the original in column 0.

    Returns a float ``[H', W', 3]`` array in [0, 1] ready for ``plt.imshow``.
    """
    from torchvision.utils import make_grid

    generator = torch.Generator().manual_seed(seed)
    views = [images.float() / 255] + [augment(images, generator, config) for _ in range(n_views)]
    tiles = torch.stack(views, 1).flatten(0, 1)  # row-major: image 0's views, image 1's, ...
    grid = make_grid(tiles.cpu(), nrow=n_views + 1, padding=padding, pad_value=1.0)
    return grid.permute(1, 2, 0)
