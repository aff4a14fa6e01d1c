"""Use a trained model: ``Predictor`` for Python code, ``predict_paths`` for files and videos.

- :mod:`seglab.predict.predictor`: :class:`Predictor` (any saved model, original resolution).
- :mod:`seglab.predict.inputs`: :func:`collect_inputs` (files, folders, globs, videos).
- :mod:`seglab.predict.writers`: the per-image outputs (mask, color, overlay, proba).
- :mod:`seglab.predict.video`: overlay videos.
- :mod:`seglab.predict.files`: :func:`predict_paths`, tying them together.

Loading lives in :mod:`seglab.artifacts.loader`; ``load_inference_model``, ``InferenceModel``
and ``resolve_device`` are re-exported here for the code that imported them from here.
"""

from seglab.artifacts.device import resolve_device
from seglab.artifacts.loader import load_inference_model
from seglab.artifacts.model import InferenceModel
from seglab.predict.files import PredictSummary, Progress, predict_paths
from seglab.predict.inputs import IMAGE_SUFFIXES, VIDEO_SUFFIXES, InputFile, collect_inputs
from seglab.predict.predictor import TTA_SCALES, Predictor
from seglab.predict.writers import DEFAULT_SAVE, SAVE_KINDS, class_shares, parse_save

__all__ = [
    "DEFAULT_SAVE",
    "IMAGE_SUFFIXES",
    "SAVE_KINDS",
    "TTA_SCALES",
    "VIDEO_SUFFIXES",
    "InferenceModel",
    "InputFile",
    "PredictSummary",
    "Predictor",
    "Progress",
    "class_shares",
    "collect_inputs",
    "load_inference_model",
    "parse_save",
    "predict_paths",
    "resolve_device",
]
