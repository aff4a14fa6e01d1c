"""Export to ONNX / TorchScript: parity with eager PyTorch, embedded config, refusals."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from seglab.artifacts.pretrained import save_pretrained
from seglab.data.classes import ClassMap
from seglab.errors import ConfigError, ModelError
from seglab.export import (
    OnnxSegmenter,
    TorchScriptSegmenter,
    export_model,
    normalised,
    parity,
    parity_images,
)
from seglab.models import build_model
from seglab.predict import Predictor

SIZE = (64, 64)
NUM_CLASSES = 5
CLASSES = ClassMap.from_names([f"thing_{i}" for i in range(NUM_CLASSES)])
# A module seglab did not build must say how its input is normalised (issue 26).
NORM = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "scale": 1}
MODELS = [
    ("lraspp_mobilenet_v3_large", {}),
    ("pspnet_resnet18", {}),
    ("unet", {"base_channels": 8}),
    ("deeplabv3_resnet50", {}),
]


def _model(name: str, **options) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, num_classes=NUM_CLASSES, **options).eval()


def _independent_parity(model: nn.Module, segmenter, size=SIZE) -> dict[str, float]:
    """Parity measured here, not trusted from the export report."""
    images, _ = parity_images(size, 2)
    x = normalised(images, segmenter.mean, segmenter.std)
    with torch.no_grad():
        reference = model(x)["out"]
    return parity(reference, segmenter(x)["out"])


@pytest.mark.parametrize(("name", "options"), MODELS, ids=[m[0] for m in MODELS])
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_eager_model(tmp_path, name, options, fmt):
    model = _model(name, **options)
    out = tmp_path / f"model.{fmt}"
    report = export_model(model, fmt, out, input_size=SIZE)
    assert out.is_file() and report["bytes"] == out.stat().st_size
    assert report["parity"]["argmax_agreement"] >= 0.999
    assert report["parity"]["size"] == list(SIZE)
    segmenter = OnnxSegmenter(out) if fmt == "onnx" else TorchScriptSegmenter(out)
    check = _independent_parity(model, segmenter)
    assert check["argmax_agreement"] >= 0.999
    assert check["max_abs_diff"] < 1e-3


def test_dynamic_onnx_accepts_other_sizes_and_batches(tmp_path):
    model = _model("lraspp_mobilenet_v3_large")
    out = tmp_path / "dyn.onnx"
    report = export_model(model, "onnx", out, input_size=SIZE, dynamic=True)
    assert report["parity"]["other_size"]["size"] != list(SIZE)
    segmenter = OnnxSegmenter(out)
    x = torch.randn(3, 3, 72, 88)
    with torch.no_grad():
        reference = model(x)["out"]
    answer = segmenter(x)["out"]
    assert answer.shape == (3, NUM_CLASSES, 72, 88)
    assert parity(reference, answer)["argmax_agreement"] >= 0.999


def test_static_onnx_refuses_other_size_clearly(tmp_path):
    out = tmp_path / "static.onnx"
    export_model(_model("unet", base_channels=8), "onnx", out, input_size=SIZE)
    segmenter = OnnxSegmenter(out)
    assert segmenter(torch.randn(3, 3, *SIZE))["out"].shape == (3, NUM_CLASSES, *SIZE)
    with pytest.raises(ModelError, match="exported for 64x64"):
        segmenter(torch.randn(1, 3, 32, 48))


@pytest.mark.parametrize(("name", "options"), [("unet", {"base_channels": 8})])
def test_dynamic_export_refused_when_graph_freezes_shapes(tmp_path, name, options):
    # The U-Net's skip crops are computed from the traced size: checked at a second (odd)
    # size, refused with the reason, no file left behind. (PSPNet exports dynamically through
    # the dynamo exporter: tests/test_export_dynamo.py.)
    out = tmp_path / "frozen.onnx"
    with pytest.raises(ModelError, match=f"{name} with dynamic axes.*without --dynamic"):
        export_model(_model(name, **options), "onnx", out, input_size=SIZE, dynamic=True)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_config_round_trips_through_both_formats(tmp_path):
    model = _model("unet", base_channels=8)
    folder = save_pretrained(model, tmp_path / "model", classmap=CLASSES,
                             mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    export_model(folder, "onnx", tmp_path / "m.onnx", input_size=SIZE)
    export_model(folder, "torchscript", tmp_path / "m.pt", input_size=SIZE)
    proto = onnx.load(str(tmp_path / "m.onnx"))
    stored = json.loads({p.key: p.value for p in proto.metadata_props}["seglab_config"])
    assert stored["classes"]["names"] == list(CLASSES.names)
    assert stored["model"] == model.seglab_spec
    for segmenter in (OnnxSegmenter(tmp_path / "m.onnx"), TorchScriptSegmenter(tmp_path / "m.pt")):
        assert segmenter.mean == pytest.approx([0.5, 0.4, 0.3])
        assert segmenter.std == pytest.approx([0.2, 0.25, 0.3])
        assert segmenter.classes["names"] == list(CLASSES.names)
        assert segmenter.input_size == SIZE
        assert segmenter.config["inference"]["size"] == list(SIZE)


def test_predictor_on_onnx_gives_the_folder_mask(tmp_path):
    model = _model("lraspp_mobilenet_v3_large")
    folder = save_pretrained(model, tmp_path / "model", classmap=CLASSES)
    export_model(folder, "onnx", tmp_path / "m.onnx", input_size=SIZE)
    images, _ = parity_images((48, 80), 1)  # another size: Predictor resizes to 64x64 and back
    image = images[0].permute(1, 2, 0).numpy()
    from_folder = Predictor(folder, precision="fp32", size=SIZE)
    from_onnx = Predictor(tmp_path / "m.onnx", precision="fp32")
    assert from_onnx.class_names == CLASSES.names
    expected, mask = from_folder.predict(image), from_onnx.predict(image)
    assert mask.shape == image.shape[:2] and mask.dtype == np.int64
    assert (mask == expected).mean() >= 0.999
    batch = from_onnx.predict_batch(np.stack([image, image]))
    assert (batch[1] == expected).mean() >= 0.999


class _UnsupportedOp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, NUM_CLASSES, 1)

    def forward(self, x):
        gram = x[0, 0, :4, :4] @ x[0, 0, :4, :4].T
        return {"out": self.conv(x) + torch.linalg.eigh(gram)[0].sum()}


class _BranchesOnValues(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, NUM_CLASSES, 1)

    def forward(self, x):
        if x.abs().sum() == 0:  # true for the all-zero trace input, false for real images
            return {"out": self.conv(x)}
        return {"out": -self.conv(x)}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_data_dependent_control_flow_is_refused(tmp_path, fmt):
    out = tmp_path / f"m.{fmt}"
    with pytest.raises(ModelError, match="_BranchesOnValues.*data-dependent"):
        export_model(_BranchesOnValues().eval(), fmt, out, input_size=SIZE, **NORM)
    assert not out.exists()


def test_unsupported_op_is_refused_with_the_reason(tmp_path):
    with pytest.raises(ModelError, match=r"cannot export _UnsupportedOp: .*linalg_eigh"):
        export_model(_UnsupportedOp().eval(), "onnx", tmp_path / "m.onnx", input_size=SIZE,
                     **NORM)


def test_bad_arguments_are_refused(tmp_path):
    model = _model("unet", base_channels=8)
    with pytest.raises(ConfigError, match="unknown export format"):
        export_model(model, "tflite", tmp_path / "m")
    with pytest.raises(ConfigError, match="ONNX only"):
        export_model(model, "torchscript", tmp_path / "m.pt", dynamic=True)
    with pytest.raises(ModelError, match="no seglab_config"):
        plain = tmp_path / "plain.onnx"
        torch.onnx.export(nn.Conv2d(3, 2, 1), (torch.zeros(1, 3, 8, 8),), str(plain),
                          dynamo=False)
        OnnxSegmenter(plain)


def test_cli_export_prints_parity(tmp_path):
    from seglab.cli.main import app

    folder = save_pretrained(_model("unet", base_channels=8), tmp_path / "model",
                             classmap=CLASSES)
    runner = CliRunner()
    out = tmp_path / "m.onnx"
    result = runner.invoke(app, ["export", str(folder), "--out", str(out), "--input", "64x64",
                                 "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["parity"]["argmax_agreement"] >= 0.999 and out.is_file()
    result = runner.invoke(app, ["export", str(folder), "--format", "torchscript", "--out",
                                 str(tmp_path / "m.pt"), "--input", "64x64"])
    assert result.exit_code == 0, result.output
    assert "argmax agreement" in result.output
    result = runner.invoke(app, ["export", str(tmp_path / "missing"), "--out", str(out)])
    assert result.exit_code != 0 and "not found" in result.output
