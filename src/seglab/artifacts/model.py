"""``InferenceModel``: a loaded model with everything needed to feed it and read its answers.

``InferenceSettings`` is the one value saying how a model is run: its input normalisation and
channel order, and the inference settings saved with it (``size``, ``mode``, ``crop``,
``stride``, ``scales``, ``flip``). The loader resolves it once (saved file, then the caller's
:class:`~seglab.artifacts.settings.ModelSettings`); evaluation, ``seglab predict``,
``Predictor``, compare and export all read it, so one model behaves one way everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import Tensor

from seglab.data.classes import ClassMap

# The inference settings a saved model may carry (config.json / embedded "inference").
SETTING_KEYS = ("size", "mode", "crop", "stride", "scales", "flip")
MODES = ("whole", "slide")  # whole image, or sliding windows


@dataclass(frozen=True)
class InferenceSettings:
    """How a model is run; each inference setting None when nothing said it (default applies).

    ``mean``/``std``: normalisation on the 0..1 scale in RGB order (as the pipeline applies
    it); ``channels``: the order the model reads (``"bgr"``: the model reverses the channels
    itself). ``size``: model input size images are resized to; ``mode`` ``whole`` or
    ``slide`` with ``crop``/``stride``; ``scales``: test-time scales; ``flip``: also run the
    mirrored image. Sizes are kept as they were given (a saved list, a caller's tuple).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: str = "rgb"
    size: Any = None
    mode: str | None = None
    crop: Any = None
    stride: Any = None
    scales: tuple[float, ...] | None = None
    flip: bool | None = None

    @classmethod
    def from_saved(cls, mean: Sequence[float], std: Sequence[float], channels: str = "rgb",
                   *saved: dict[str, Any] | None) -> InferenceSettings:
        """The settings from saved sections, the first one saying a key winning (e.g. a model
        folder's ``inference`` before the keys its recipe implies)."""
        values: dict[str, Any] = {}
        for section in saved:
            for key in SETTING_KEYS:
                if section and section.get(key) is not None:
                    values.setdefault(key, section[key])
        return cls(tuple(float(v) for v in mean), tuple(float(v) for v in std),
                   channels).overridden(**values)

    def overridden(self, **values: Any) -> InferenceSettings:
        """A copy with each value given (not None) replacing the setting."""
        given = {k: v for k, v in values.items() if v is not None}
        if "scales" in given:
            given["scales"] = tuple(float(s) for s in given["scales"])
        for key in ("mean", "std"):
            if key in given:
                given[key] = tuple(float(v) for v in given[key])
        if "flip" in given:
            given["flip"] = bool(given["flip"])
        return replace(self, **given)

    def saved(self) -> dict[str, Any]:
        """The inference settings that are set, as ``config.json``'s ``inference`` holds them."""
        return {k: _plain(getattr(self, k)) for k in SETTING_KEYS if getattr(self, k) is not None}

    def resolved(self) -> dict[str, Any]:
        """Every inference setting with its default filled in (the evaluation document's)."""
        return {"mode": self.mode or "whole", "crop": self.crop, "stride": self.stride,
                "scales": list(self.scales or (1.0,)), "flip": bool(self.flip),
                "size": self.size}

    def predict_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`seglab.engine.inference.predict_logits`."""
        return {"mean": self.mean, "std": self.std, **self.resolved()}


def recipe_inference(recipe: dict[str, Any] | None) -> dict[str, Any]:
    """The inference settings a training recipe (as a mapping) implies: its ``eval`` section's
    and ``augment.eval_resize`` as the size. What a model folder saves from training, what a
    checkpoint says, and what fills a model folder's gaps."""
    recipe = recipe or {}
    evaluation = recipe.get("eval") or {}
    implied = {**evaluation, "size": (recipe.get("augment") or {}).get("eval_resize")}
    return {key: implied.get(key) for key in SETTING_KEYS}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass
class InferenceModel:
    """A model ready for :func:`seglab.engine.inference.predict_logits`.

    ``model`` maps a normalised float ``[N, 3, H, W]`` batch to ``{"out": logits}`` (an eval
    ``nn.Module`` or an exported-file runtime); ``inference`` says how to run it
    (:class:`InferenceSettings`: normalisation, channel order, saved inference settings);
    ``source`` is the file or folder actually read; ``spec`` the registry spec (``name``,
    ``num_classes``, ``options``) when known; ``recipe`` the training recipe when one was
    saved; ``notes`` say which defaults were used (e.g. generic class names).
    """

    model: Callable[[Tensor], dict[str, Tensor]]
    classmap: ClassMap
    inference: InferenceSettings
    source: Path
    spec: dict[str, Any] | None = None
    recipe: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def mean(self) -> tuple[float, ...]:
        """Input mean on the 0..1 scale, RGB order."""
        return self.inference.mean

    @property
    def std(self) -> tuple[float, ...]:
        """Input std on the 0..1 scale, RGB order."""
        return self.inference.std

    @property
    def channels(self) -> str:
        """The channel order the model reads (``rgb`` or ``bgr``)."""
        return self.inference.channels

    @property
    def settings(self) -> dict[str, Any]:
        """The inference settings that were saved or given (:meth:`InferenceSettings.saved`)."""
        return self.inference.saved()


def saved_classmap(classes: dict[str, Any] | None, num_classes: int) -> ClassMap:
    """The saved class table, or ``class_0..class_{n-1}`` for a model saved without one."""
    # A model saved without a class table still needs names and colours to draw its masks.
    if classes:
        return ClassMap.from_dict(classes)
    return ClassMap.from_names([f"class_{i}" for i in range(num_classes)])
