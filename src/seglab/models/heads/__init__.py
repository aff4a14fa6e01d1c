"""Segmentation heads, one per file; each maps a backbone's feature list to class logits."""

from seglab.models.heads.aspp import ASPP, DeepLabV3Head
from seglab.models.heads.deeplabv3plus import DeepLabV3PlusHead
from seglab.models.heads.fcn import FCNHead
from seglab.models.heads.lraspp import LRASPPHead
from seglab.models.heads.ocr import OCRHead
from seglab.models.heads.ppm import PSPHead, PyramidPooling
from seglab.models.heads.unet import UNetDecoder

__all__ = [
    "ASPP",
    "DeepLabV3Head",
    "DeepLabV3PlusHead",
    "FCNHead",
    "LRASPPHead",
    "OCRHead",
    "PSPHead",
    "PyramidPooling",
    "UNetDecoder",
]
