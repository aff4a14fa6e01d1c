"""What a model needs to be fed, read and run, when its file does not say: ``ModelSettings``.

The same settings, with the same names, are accepted by every verb (``seglab eval``,
``predict``, ``bench``, ``compare``, ``import``) and by :func:`seglab.evaluate`,
:class:`seglab.Predictor` and :func:`seglab.export.export_model`; only
:func:`seglab.artifacts.loader.load_inference_model` applies them.

Normalisation is ``(pixels / scale - mean) / std`` per input channel, in the order the model
reads its channels (``channels``: ``rgb`` or ``bgr``). ``scale`` is required with ``mean``
or ``std`` because the same numbers mean different things on the two scales (``std 1`` on
the 0..255 scale is "no division"; on the 0..1 scale it is "divide by 255"):

- ``scale=1``: ``mean``/``std`` are for pixels in 0..1 (torchvision's ImageNet values
  ``0.485,0.456,0.406`` / ``0.229,0.224,0.225``);
- ``scale=255``: they are for pixels in 0..255 (Caffe-style ``104,117,123`` / ``1,1,1``).

Internally, and in every saved ``config.json``, they are stored on the 0..1 scale.

The inference settings (``mode``, ``crop``, ``stride``, ``scales``, ``flip``, ``size``) given
here override the ones the model was saved with; the loader merges both into the model's one
:class:`~seglab.artifacts.model.InferenceSettings`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from seglab.artifacts.model import MODES
from seglab.data.classes import ClassMap, default_palette, read_class_table
from seglab.errors import ConfigError, ModelError

CHANNEL_ORDERS = ("rgb", "bgr")
SCALES = (1, 255)
SCALE_HELP = "--scale 1 (values for pixels in 0..1) or --scale 255 (for pixels in 0..255)"


@dataclass(frozen=True)
class ModelSettings:
    """Settings given for a model, each None when not given (the file's own are used).

    ``mean``/``std``: per-channel normalisation, in the model's channel order, on the scale
    ``scale`` (1 or 255, required with either); ``channels``: ``"rgb"`` or ``"bgr"`` (the
    order the model reads); ``classes``: a :class:`ClassMap`, a class-table file
    (``classes.csv``, ``label_colors.txt``, one name per line) or a list of names;
    ``size``: the model input size ``(H, W)`` images are resized to; ``num_classes``: the
    class count (needed to build a registry model for a state dict); ``model``: the registry
    name a state dict is loaded into, with ``model_options`` for its builder. ``mode``
    (``whole`` or ``slide``), ``crop``, ``stride``, ``scales`` and ``flip`` override the
    inference settings saved with the model.
    """

    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    scale: float | None = None
    channels: str | None = None
    classes: Any = None
    size: tuple[int, int] | None = None
    num_classes: int | None = None
    model: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    mode: str | None = None
    crop: Any = None
    stride: Any = None
    scales: Sequence[float] | None = None
    flip: bool | None = None

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise ConfigError(problem)

    def _problem(self) -> str | None:
        given = [n for n in ("mean", "std") if getattr(self, n) is not None]
        if given and self.scale is None:
            return f"--{given[0]} needs its scale said explicitly: {SCALE_HELP}"
        if self.scale is not None and self.scale not in SCALES:
            return f"--scale must be 1 or 255, got {self.scale:g}"
        for what in given:
            values = list(getattr(self, what))
            if not values or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                     and math.isfinite(v) for v in values):
                return f"--{what} must be finite numbers, one per channel, got {values}"
            if what == "std" and min(values) <= 0:
                return f"--std values must be > 0 (the input is divided by them), got {values}"
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            return (f"--mean has {len(self.mean)} values but --std has {len(self.std)}: give one "
                    "per input channel")
        if self.channels is not None and self.channels not in CHANNEL_ORDERS:
            return f"--channels must be rgb or bgr, got {self.channels!r}"
        if self.num_classes is not None and (isinstance(self.num_classes, bool)
                                             or int(self.num_classes) < 1):
            return f"--num-classes must be a positive integer, got {self.num_classes!r}"
        if self.mode is not None and self.mode not in MODES:
            return f"unknown inference mode {self.mode!r}: use one of {', '.join(MODES)}"
        if self.scales is not None and (not list(self.scales) or not all(
                isinstance(s, int | float) and math.isfinite(s) and s > 0 for s in self.scales)):
            return f"scales must be positive numbers, got {list(self.scales)}"
        return None

    @property
    def normalization_given(self) -> bool:
        """True when both ``mean`` and ``std`` were given."""
        return self.mean is not None and self.std is not None

    def unit_mean(self) -> list[float] | None:
        """``mean`` on the 0..1 scale (model channel order), None when not given."""
        return None if self.mean is None else [float(v) / float(self.scale) for v in self.mean]

    def unit_std(self) -> list[float] | None:
        """``std`` on the 0..1 scale (model channel order), None when not given."""
        return None if self.std is None else [float(v) / float(self.scale) for v in self.std]

    def with_defaults(self, **values: Any) -> ModelSettings:
        """A copy where each given value fills a setting left as None."""
        return replace(self, **{k: v for k, v in values.items() if getattr(self, k) is None})


NO_SETTINGS = ModelSettings()


def missing_normalization(source: Any) -> ModelError:
    """The error for a model that says nothing about its input normalisation."""
    has_no = ("has no seglab_config metadata, so it does not say"
              if str(source).lower().endswith((".onnx", ".pt", ".ts", ".torchscript"))
              else "does not say")
    return ModelError(
        f"{source} {has_no} how its input is normalised: give --mean and --std with "
        f"{SCALE_HELP}, and --channels bgr if it reads BGR (e.g. --mean 0.485,0.456,0.406 "
        "--std 0.229,0.224,0.225 --scale 1 for ImageNet statistics; --mean 0,0,0 --std 1,1,1 "
        "--scale 255 for raw 0..255 pixels)"
    )


def resolve_classmap(classes: Any, num_classes: int, source: Any) -> ClassMap | None:
    """``classes`` (ClassMap, dict, class-table file or names) as a ClassMap of ``num_classes``.

    None stays None. Raises ConfigError when the count differs from the model's.
    """
    if classes is None:
        return None
    if isinstance(classes, ClassMap):
        classmap = classes
    elif isinstance(classes, dict):
        classmap = ClassMap.from_dict(classes)
    elif isinstance(classes, str | Path):
        rows = read_class_table(classes)
        colors = [tuple(r.color) if r.color is not None else tuple(c)
                  for r, c in zip(rows, default_palette(len(rows)).tolist(), strict=True)]
        classmap = ClassMap(tuple(r.name for r in rows), tuple(colors))
    else:
        classmap = ClassMap.from_names([str(n) for n in classes])
    if classmap.num_classes != num_classes:
        raise ConfigError(f"--classes lists {classmap.num_classes} classes but {source} "
                          f"predicts {num_classes}")
    return classmap


def model_order_to_rgb(values: Sequence[float], channels: str) -> list[float]:
    """Per-channel values in the model's order -> RGB order (what the pipeline applies)."""
    return list(values)[::-1] if channels == "bgr" else list(values)


def model_settings(settings: ModelSettings | None = None, **values: Any) -> ModelSettings:
    """``settings`` with the keyword values given (not None) set on it: how the Python API
    (``evaluate(..., mean=..., std=..., scale=255, flip=False)``, ``Predictor(...)``) builds
    one."""
    given = {k: v for k, v in values.items() if v is not None}
    if "size" in given and isinstance(given["size"], int):
        given["size"] = (given["size"], given["size"])
    if "size" in given:
        given["size"] = tuple(int(v) for v in given["size"])
    if "scales" in given:
        given["scales"] = tuple(given["scales"])
    return replace(settings or NO_SETTINGS, **given)
