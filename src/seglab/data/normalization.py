"""The default input normalisation: ImageNet's mean and std per RGB channel, on the 0..1 scale.

The one definition: the training step (``transforms.normalize``), saved model folders
(``artifacts.pretrained``) and the loader's default for registry models all read it. It lives
in a module of its own, without torch, so that reading it costs no import time.
"""

from __future__ import annotations

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
