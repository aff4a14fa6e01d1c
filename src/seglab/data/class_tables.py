"""Built-in class tables of the datasets whose files carry no table of their own.

Rows are ``(name, (r, g, b))`` in train-id order (``VOC_CLASSES`` holds names only: VOC masks
are palette PNGs and the display colours come from ``classes.default_palette``). The format
adapters in ``seglab.data.formats`` turn them into ``ClassMap`` / mask decoders; the
Cityscapes label table lives in ``classes.py`` because it also defines the id remaps.
"""

from __future__ import annotations

from seglab.data.classes import Color

# SegNet's CamVid: 11 classes + Void (index 11, the ignore class unless keep_void).
CAMVID11: tuple[tuple[str, Color], ...] = (
    ("Sky", (128, 128, 128)),
    ("Building", (128, 0, 0)),
    ("Pole", (192, 192, 128)),
    ("Road", (128, 64, 128)),
    ("Pavement", (60, 40, 222)),
    ("Tree", (128, 128, 0)),
    ("SignSymbol", (192, 128, 128)),
    ("Fence", (64, 64, 128)),
    ("Car", (64, 0, 128)),
    ("Pedestrian", (64, 64, 0)),
    ("Bicyclist", (0, 128, 192)),
    ("Void", (0, 0, 0)),
)

# Pascal VOC 2012: background + 20 object classes; 255 (object borders) is the ignore value.
VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

# SUIM: each mask channel is 0 or 255, so the 3-bit code r*4 + g*2 + b is the class id.
SUIM_CLASSES: tuple[tuple[str, Color], ...] = (
    ("Background (waterbody)", (0, 0, 0)),
    ("Human divers", (0, 0, 255)),
    ("Plants and sea-grass", (0, 255, 0)),
    ("Wrecks and ruins", (0, 255, 255)),
    ("Robots", (255, 0, 0)),
    ("Reefs and invertebrates", (255, 0, 255)),
    ("Fish and vertebrates", (255, 255, 0)),
    ("Sea-floor and rocks", (255, 255, 255)),
)
