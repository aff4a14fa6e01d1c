"""Export a trained model to ONNX or TorchScript, check it against eager PyTorch, run it back.

The exported graph has one input, ``input``: a *normalised* float32 ``[N, B, H, W]`` batch
(B = 3 for RGB, one per band for multi-band models; ``(pixels / 255 - mean) / std`` with the
model's own per-band mean/std), and one output, ``out``: the
class logits ``[N, C, H, W]`` at the input's size. Auxiliary heads are dropped. Without
``dynamic`` every axis is fixed to the export size (batch 1); with it batch, height and width
are free (ONNX only).

The model's config (spec, classes, normalisation, inference settings) travels inside the file:
as ONNX ``metadata_props`` (key ``seglab_config``, JSON) or as a TorchScript extra file
(``seglab_config.json``), so an exported file alone is enough for :class:`seglab.Predictor`.
The wrappers that run exported files live in :mod:`seglab.artifacts.runtimes` (re-exported
here: ``OnnxSegmenter``, ``TorchScriptSegmenter``, ``load_onnx_model``).

ONNX with dynamic axes goes through the dynamo exporter, a fixed-size graph through the
(much faster, equally exact there) legacy one; each falls back to the other, with a note in
the report, when it cannot take the model or its graph fails the parity gate
(:mod:`seglab.export.writers`). ``int8`` writes a quantised copy instead
(:mod:`seglab.export.quantize`), its agreement with the fp32 model reported, not gated.

This package face only re-exports: :mod:`seglab.export.exporting` (``export_model``),
:mod:`seglab.export.parity` (the parity gate), :mod:`seglab.export.writers` (one file written)
and :mod:`seglab.export.quantize` (int8).
"""

from seglab.artifacts.runtimes import (
    CONFIG_KEY,
    OnnxSegmenter,
    TorchScriptSegmenter,
    load_onnx_model,
)
from seglab.export.exporting import FORMATS, export_model
from seglab.export.parity import (
    DYNAMIC_CHECK_SIZES,
    MIN_AGREEMENT,
    normalised,
    parity,
    parity_images,
)
from seglab.export.writers import EXPORTERS

__all__ = [
    "CONFIG_KEY",
    "DYNAMIC_CHECK_SIZES",
    "EXPORTERS",
    "FORMATS",
    "MIN_AGREEMENT",
    "OnnxSegmenter",
    "TorchScriptSegmenter",
    "export_model",
    "load_onnx_model",
    "normalised",
    "parity",
    "parity_images",
]
