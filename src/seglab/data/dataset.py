"""``SegmentationDataset``: (image path, mask path) pairs -> (uint8 [3,H,W], int64 [H,W])."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from seglab.data.classes import ClassMap
from seglab.data.decode import (
    ORIENTATION_NAMES,
    file_orientation,
    image_file_size,
    read_image_file,
)
from seglab.data.geotiff import is_tiff, read_tiff, tiff_size
from seglab.data.masks import MaskDecoder
from seglab.data.transforms import JointTransform, apply_joint
from seglab.errors import DataError

Pair = tuple[Path, Path]


def read_image(path: str | Path) -> torch.Tensor:
    """Decode an image file to ``uint8 [3,H,W]`` RGB.

    Safe on untrusted files (see ``seglab.data.decode``): the bytes are checked before
    torchvision's native decoder sees them (Pillow decodes the rest), the pixel limit is
    enforced from the header, 16-bit samples become 8-bit, grey and RGBA become RGB, and the
    EXIF orientation is applied for every format. Any failure is a ``DataError`` naming the
    file.
    """
    if is_tiff(path):  # multi-band TIFF / GeoTIFF: [C,H,W], bands as stored (data.geotiff)
        return read_tiff(path)
    return read_image_file(Path(path))


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) from the file header (EXIF rotation considered), without decoding."""
    if is_tiff(path):  # Pillow cannot open multi-band or 16-bit multi-sample TIFFs
        return tiff_size(path)
    return image_file_size(path)


def _orientation_hint(image_path: Path, mask_path: Path) -> str:
    """Why the sizes may differ when one file of a pair carries an EXIF rotation."""
    if is_tiff(image_path):
        return ""
    image, mask = file_orientation(image_path, "image"), file_orientation(mask_path, "mask")
    if image == mask:
        return ""
    return (
        f" (after EXIF orientation: image {ORIENTATION_NAMES[image]}, mask"
        f" {ORIENTATION_NAMES[mask]}; each file is loaded as displayed, so a mask drawn on"
        " the stored pixels of a rotated image does not fit: rotate the mask or remove the"
        " image's EXIF orientation)"
    )


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
                + _orientation_hint(image_path, mask_path)
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

