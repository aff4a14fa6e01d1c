"""Use a trained model: ``Predictor`` for Python code, ``predict_paths`` for files and videos.

- :mod:`seglab.predict.predictor`: :class:`Predictor` (any saved model, original resolution).
- :mod:`seglab.predict.inputs`: :func:`collect_inputs` (files, folders, globs, videos).
- :mod:`seglab.predict.writers`: the per-image outputs (mask, color, overlay, proba).
- :mod:`seglab.predict.video`: overlay videos.
- :mod:`seglab.predict.files`: :func:`predict_paths`, tying them together.

Loading a saved model is :func:`seglab.artifacts.loader.load_inference_model`.
"""

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
    "InputFile",
    "PredictSummary",
    "Predictor",
    "Progress",
    "class_shares",
    "collect_inputs",
    "parse_save",
    "predict_paths",
]
