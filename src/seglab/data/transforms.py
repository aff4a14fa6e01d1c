"""Joint image + mask transforms (``torchvision.transforms.v2``) and on-device normalisation.

Images stay ``uint8`` through the loader; ``normalize`` turns a batch into floats on the device
in the model step. The presets wrap the image as ``tv_tensors.Image`` and the mask as
``tv_tensors.Mask`` so every geometric op moves both the same way: images are resampled
bilinearly, masks with nearest neighbour, and pixels a crop or rotation invents in the mask
get the ignore index (so they count neither as a class nor in the loss).

Any band count: every geometric step works on ``[C,H,W]`` for any C. Colour jitter
(``brightness``, ``saturation``) is torchvision's ``ColorJitter`` on 3-band (RGB) images; on
other band counts (multi-band imagery) ``brightness`` multiplies every band by one factor drawn
from ``[1 - b, 1 + b]`` (what ``ColorJitter`` does to RGB), and ``saturation``, which is only
defined for RGB, is left out (see ``BandJitter``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from seglab.data.classes import IGNORE_INDEX
from seglab.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from seglab.errors import ConfigError

JointTransform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def normalize(
    images: torch.Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """``uint8 [N,C,H,W]`` (or ``[C,H,W]``) -> float32 ``(x/255 - mean) / std``, on its device.

    ``mean`` and ``std`` are on the 0..1 scale, one value per channel (ImageNet's three by
    default, or dataset statistics from ``seglab.data.stats.image_mean_std``), so 4-band or
    12-band imagery normalises like RGB.
    """
    if images.dtype != torch.uint8:
        raise ConfigError(f"normalize expects uint8 images, got {images.dtype}")
    if images.ndim not in (3, 4):
        raise ConfigError(f"normalize expects [N,C,H,W] or [C,H,W], got {tuple(images.shape)}")
    bands = images.shape[-3]
    if len(mean) != bands or len(std) != bands:
        raise ConfigError(
            f"images have {bands} channels but mean has {len(mean)} values and std "
            f"{len(std)}: set data.mean and data.std with one value per band (`seglab data"
            " inspect` prints them)"
        )
    shape = (1, bands, 1, 1) if images.ndim == 4 else (bands, 1, 1)
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(shape)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(shape)
    # Fold the /255 into the scale: one multiply-add per pixel.
    return (images.float() - mean_t * 255.0) * (1.0 / (std_t * 255.0))


def _pair_size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    if len(size) != 2:
        raise ConfigError(f"size must be an int or (height, width), got {size!r}")
    return (int(size[0]), int(size[1]))


class RandomScale:
    """Resize image and mask by one factor drawn uniformly from ``scale_range``."""

    def __init__(self, scale_range: tuple[float, float]) -> None:
        low, high = scale_range
        if not 0 < low <= high:
            raise ConfigError(f"scale range must satisfy 0 < low <= high, got {scale_range}")
        self.scale_range = (float(low), float(high))

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        factor = random.uniform(*self.scale_range)
        height, width = F.get_size(image)
        size = [max(1, round(height * factor)), max(1, round(width * factor))]
        # v2 dispatches on the tv_tensor type: bilinear + antialias for Image, nearest for Mask.
        return F.resize(image, size, antialias=True), F.resize(mask, size)

    def __repr__(self) -> str:
        return f"RandomScale(scale_range={self.scale_range})"


class GaussianNoiseUint8:
    """Add N(0, sigma) noise (sigma on the 0..255 scale) to a uint8 image; masks untouched."""

    def __init__(self, sigma: float, p: float = 0.5) -> None:
        self.sigma = float(sigma)
        self.p = float(p)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.sigma <= 0 or random.random() >= self.p:
            return image, mask
        noisy = image.float() + torch.randn(image.shape) * self.sigma
        out = tv_tensors.wrap(noisy.round_().clamp_(0, 255).to(torch.uint8), like=image)
        return out, mask

    def __repr__(self) -> str:
        return f"GaussianNoiseUint8(sigma={self.sigma}, p={self.p})"


class BandJitter:
    """Colour jitter for any band count: ``ColorJitter`` on RGB, brightness only otherwise.

    On 3-band images: ``v2.ColorJitter(brightness, saturation)``. On other band counts one
    factor ``f ~ U[max(0, 1 - brightness), 1 + brightness]`` scales every band (clipped to
    255), so the bands keep their ratios (spectral indices such as NDVI are unchanged);
    saturation is skipped, having no meaning beyond RGB. Masks are untouched.
    """

    def __init__(self, brightness: float = 0.0, saturation: float = 0.0) -> None:
        self.brightness = float(brightness)
        self.saturation = float(saturation)
        self.rgb = v2.ColorJitter(brightness=self.brightness, saturation=self.saturation)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if image.shape[-3] == 3:
            return self.rgb(image, mask)
        if self.brightness <= 0:
            return image, mask
        factor = random.uniform(max(0.0, 1.0 - self.brightness), 1.0 + self.brightness)
        scaled = (image.float() * factor).round_().clamp_(0, 255).to(torch.uint8)
        return tv_tensors.wrap(scaled, like=image), mask

    def __repr__(self) -> str:
        return f"BandJitter(brightness={self.brightness}, saturation={self.saturation})"


def _fill(ignore_index: int) -> dict:
    return {tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}


def train_transform(
    crop_size: int | Sequence[int] | None = (512, 512),
    *,
    scale_range: tuple[float, float] | None = (0.5, 2.0),
    hflip: float = 0.5,
    rotation: float = 0.0,
    brightness: float = 0.0,
    saturation: float = 0.0,
    noise_sigma: float = 0.0,
    resize: int | Sequence[int] | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> v2.Compose:
    """Training preset: [resize] -> random scale -> pad + random crop -> flip -> rotate -> colour.

    Args:
        crop_size: output (height, width); smaller images are padded (image 0, mask ignore).
            ``None`` keeps the (scaled) size — only for batches of equal-size images.
        scale_range: random scale factor range, ``None`` for no scaling.
        hflip: probability of a horizontal flip.
        rotation: maximum rotation in degrees (0 = off); corners become ignore in the mask.
        brightness, saturation: ``ColorJitter`` strengths (0 = off); on images that are not
            3-band, brightness scales all bands by one factor and saturation is skipped.
        noise_sigma: Gaussian noise std on the 0..255 scale, applied half of the time.
        resize: resize every image to this size first (e.g. to train at half resolution).
        ignore_index: mask value for padded / rotated-in pixels.
    """
    steps: list = []
    if resize is not None:
        steps.append(v2.Resize(_pair_size(resize), antialias=True))
    if scale_range is not None:
        steps.append(RandomScale(scale_range))
    if crop_size is not None:
        steps.append(
            v2.RandomCrop(_pair_size(crop_size), pad_if_needed=True, fill=_fill(ignore_index))
        )
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(p=hflip))
    if rotation > 0:
        steps.append(
            v2.RandomRotation(
                rotation, interpolation=InterpolationMode.BILINEAR, fill=_fill(ignore_index)
            )
        )
    if brightness > 0 or saturation > 0:
        steps.append(BandJitter(brightness=brightness, saturation=saturation))
    if noise_sigma > 0:
        steps.append(GaussianNoiseUint8(noise_sigma))
    return v2.Compose(steps)


def eval_transform(resize: int | Sequence[int] | None = None) -> v2.Compose:
    """Evaluation preset: identity, or a resize (image bilinear, mask nearest)."""
    steps: list = []
    if resize is not None:
        steps.append(v2.Resize(_pair_size(resize), antialias=True))
    return v2.Compose(steps)


def apply_joint(
    transform: JointTransform | None, image: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``transform`` on an (image, mask) pair; return plain uint8 / int64 tensors."""
    if transform is None:
        return image, mask
    out_image, out_mask = transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
    return (
        out_image.as_subclass(torch.Tensor).contiguous(),
        out_mask.as_subclass(torch.Tensor).to(torch.int64).contiguous(),
    )
