"""``InferenceModel``: a loaded model with everything needed to feed it and read its answers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from seglab.data.classes import ClassMap

# The inference settings a saved model may carry and Predictor / evaluation honour.
SETTING_KEYS = ("size", "mode", "crop", "stride")


@dataclass
class InferenceModel:
    """A model ready for :func:`seglab.engine.inference.predict_logits`.

    ``model`` maps a normalised float ``[N, 3, H, W]`` batch to ``{"out": logits}`` (an eval
    ``nn.Module`` or an exported-file runtime); ``mean`` / ``std`` are its input
    normalisation on the 0..1 scale; ``source`` is the file or folder actually read;
    ``spec`` the registry spec (``name``, ``num_classes``, ``options``) when known;
    ``settings`` the inference settings saved with the model (``size``, ``mode``, ``crop``,
    ``stride``; empty when none were saved); ``recipe`` the training recipe when one was saved;
    ``channels`` the order the model reads (``"bgr"``: ``model`` reverses the channels itself,
    and ``mean``/``std`` stay in RGB order, as the pipeline applies them); ``notes`` say which
    defaults were used (e.g. generic class names).
    """

    model: Callable[[Tensor], dict[str, Tensor]]
    classmap: ClassMap
    mean: Sequence[float]
    std: Sequence[float]
    source: Path
    spec: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] | None = None
    channels: str = "rgb"
    notes: list[str] = field(default_factory=list)


def saved_classmap(classes: dict[str, Any] | None, num_classes: int) -> ClassMap:
    """The saved class table, or ``class_0..class_{n-1}`` for a model saved without one."""
    # A model saved without a class table still needs names and colours to draw its masks.
    if classes:
        return ClassMap.from_dict(classes)
    return ClassMap.from_names([f"class_{i}" for i in range(num_classes)])


def saved_settings(saved: dict[str, Any] | None) -> dict[str, Any]:
    """The saved inference settings (:data:`SETTING_KEYS`), without empty values."""
    return {k: saved[k] for k in SETTING_KEYS if saved and saved.get(k) is not None}
