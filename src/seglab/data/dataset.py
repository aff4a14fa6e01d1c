"""``SegmentationDataset``: (image path, mask path) pairs -> (uint8 [3,H,W], int64 [H,W])."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from seglab.data.classes import ClassMap
from seglab.data.geotiff import is_tiff, read_tiff, tiff_size
from seglab.data.masks import MaskDecoder
from seglab.data.transforms import JointTransform, apply_joint
from seglab.errors import DataError

Pair = tuple[Path, Path]
# Formats libjpeg/libpng/libwebp in torchvision decode natively; the rest go through Pillow.
_NATIVE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


def _read_image_pillow(path: Path) -> torch.Tensor:
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                # Scale high-bit-depth grey to 8 bits instead of clipping it.
                arr = np.asarray(im, dtype=np.float64)
                peak = arr.max() or 1.0
                im = Image.fromarray((arr * (255.0 / peak)).astype(np.uint8))
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode image ({exc})") from exc
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def read_image(path: str | Path) -> torch.Tensor:
    """Decode an image file to ``uint8 [3,H,W]`` RGB.

    ``torchvision.io.decode_image`` for PNG/JPEG/WebP (EXIF orientation applied, grey and
    RGBA converted to RGB); Pillow for everything else (BMP, TIFF, ...) and as a fallback.
    Undecodable or truncated files raise ``DataError`` naming the file.
    """
    from torchvision.io import ImageReadMode, decode_image, read_file

    if is_tiff(path):  # multi-band TIFF / GeoTIFF: [C,H,W], bands as stored (data.geotiff)
        return read_tiff(path)
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    if path.suffix.lower() in _NATIVE_SUFFIXES:
        try:
            return decode_image(
                read_file(str(path)), mode=ImageReadMode.RGB, apply_exif_orientation=True
            )
        except (RuntimeError, ValueError):
            pass  # Pillow decides: it reads some variants libpng rejects, or names the error.
    return _read_image_pillow(path)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) from the file header (EXIF rotation considered), without decoding."""
    if is_tiff(path):  # Pillow cannot open multi-band or 16-bit multi-sample TIFFs
        return tiff_size(path)
    try:
        with Image.open(path) as im:
            width, height = im.size
            orientation = im.getexif().get(0x0112, 1) if hasattr(im, "getexif") else 1
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot read image header ({exc})") from exc
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


class SegmentationDataset(Dataset):
    """Pairs of files -> ``(uint8 [3,H,W] image, int64 [H,W] mask)``.

    Mask values are train ids ``0..num_classes-1`` or ``classmap.ignore_index``. ``transform``
    is a joint transform (see ``seglab.data.transforms``) applied after decoding.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        decoder: MaskDecoder,
        transform: JointTransform | None = None,
        name: str = "",
    ) -> None:
        self.pairs: list[Pair] = [(Path(i), Path(m)) for i, m in pairs]
        self.decoder = decoder
        self.transform = transform
        self.name = name

    @property
    def classmap(self) -> ClassMap:
        return self.decoder.classmap

    def __len__(self) -> int:
        return len(self.pairs)

    def load_mask(self, index: int) -> np.ndarray:
        """Decoded ``int64 [H,W]`` mask, without reading the image or transforming."""
        return self.decoder.decode_file(self.pairs[index][1])

    def load_pair(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded, size-checked pair before the transform."""
        image_path, mask_path = self.pairs[index]
        image = read_image(image_path)
        mask = torch.from_numpy(self.decoder.decode_file(mask_path))
        if tuple(image.shape[1:]) != tuple(mask.shape):
            raise DataError(
                f"size mismatch: image {image_path} is {image.shape[2]}x{image.shape[1]}"
                f" (WxH) but mask {mask_path} is {mask.shape[1]}x{mask.shape[0]}"
            )
        return image, mask

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.load_pair(index)
        return apply_joint(self.transform, image, mask)

    def __repr__(self) -> str:
        return (
            f"SegmentationDataset({self.name or 'unnamed'}, {len(self)} pairs, "
            f"{self.classmap.num_classes} classes)"
        )

