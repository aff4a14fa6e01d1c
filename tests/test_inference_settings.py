"""One behaviour per model (issue 28): the inference settings saved with a model (size, mode,
crop, stride, scales, flip; normalisation) are read in one place and used alike by
``evaluate``, ``Predictor``, ``seglab predict`` and the files ``export_model`` writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from seglab.artifacts.loader import load_inference_model
from seglab.artifacts.model import InferenceSettings
from seglab.artifacts.pretrained import save_pretrained
from seglab.artifacts.settings import ModelSettings
from seglab.cli.main import app
from seglab.data.classes import ClassMap
from seglab.data.synthetic import make_synthetic
from seglab.engine.evaluation import EvalOptions, evaluate
from seglab.errors import ConfigError
from seglab.export import export_model
from seglab.export.quantize import _Reader
from seglab.models import build_model
from seglab.predict import Predictor

NUM_CLASSES = 4
SIZE = (96, 128)
SAVED = {"scales": [0.75, 1.0], "flip": True}  # what training writes from eval.scales/flip
FP32 = {"precision": "fp32", "backend": "torch"}  # exact torch path: no bf16, no compile


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(model folder saved with flip + scales, a dataset, one of its test images)."""
    folder = tmp_path_factory.mktemp("settings")
    root = make_synthetic(folder / "data", n_train=2, n_val=1, n_test=2, size=SIZE,
                          num_classes=NUM_CLASSES)
    torch.manual_seed(0)
    # timm's small LR-ASPP exports with dynamic axes through the fast legacy exporter; larger
    # random weights make its untrained answer vary over the image.
    model = build_model("lraspp_mobilenetv3_small", num_classes=NUM_CLASSES)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            centre = 1.0 if parameter.ndim == 1 and name.endswith("weight") else 0.0
            parameter.normal_(centre, 0.3)
    classmap = ClassMap.from_names([f"class{i}" for i in range(NUM_CLASSES)])
    save_pretrained(model, folder / "model", classmap=classmap,
                    mean=(0.4, 0.45, 0.5), std=(0.25, 0.25, 0.25),
                    extra={"inference": dict(SAVED)})
    image = sorted((root / "images" / "test").glob("*.png"))[0]
    return folder / "model", root, image


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_loader_reads_every_saved_setting_once_and_callers_override_it(saved):
    model_dir, _, _ = saved
    loaded = load_inference_model(model_dir)
    assert isinstance(loaded.inference, InferenceSettings)
    assert loaded.inference.scales == (0.75, 1.0) and loaded.inference.flip is True
    assert loaded.settings == SAVED
    options = loaded.inference.predict_options()
    assert options["flip"] is True and options["scales"] == [0.75, 1.0]
    assert options["mean"] == pytest.approx((0.4, 0.45, 0.5))
    mine = load_inference_model(model_dir, settings=ModelSettings(flip=False, scales=(1.0,)))
    assert (mine.inference.flip, mine.inference.scales) == (False, (1.0,))
    with pytest.raises(ConfigError, match="scales must be positive"):
        ModelSettings(scales=(0.0,))
    with pytest.raises(ConfigError, match="unknown inference mode 'tiles'"):
        ModelSettings(mode="tiles")


@pytest.fixture(scope="module")
def answer(saved) -> tuple[np.ndarray, np.ndarray]:
    """The Predictor's (probabilities, labels) for the test image, with the saved settings."""
    model_dir, _, image = saved
    predictor = Predictor(model_dir, **FP32)
    assert (predictor.flip, predictor.scales) == (True, (0.75, 1.0))  # saved, not (1.0,)/False
    labels = predictor.predict(_pixels(image))
    assert len(np.unique(labels)) > 1  # an answer that can disagree
    plain = Predictor(model_dir, flip=False, scales=(1.0,), **FP32).predict(_pixels(image))
    assert (plain != labels).any()  # the saved settings change this model's answer
    return predictor.predict_proba(_pixels(image)), labels


def test_evaluate_and_seglab_predict_answer_as_the_predictor(saved, answer, tmp_path):
    model_dir, root, image = saved
    _, labels = answer
    # evaluate, scored against the Predictor's labels: every pixel agrees with them.
    Image.fromarray(labels.astype(np.uint8)).save(root / "masks" / "test" / image.name)
    doc = evaluate(model_dir, f"folder:{root}", device="cpu", precision="fp32", num_workers=0,
                   boundary=False, out_dir=tmp_path / "eval")
    assert doc["inference"]["flip"] is True and doc["inference"]["scales"] == [0.75, 1.0]
    table = (tmp_path / "eval" / "per_image.csv").read_text().splitlines()
    assert table[0].split(",")[:3] == ["image", "pixels", "pixel_acc"]
    row = next(line for line in table if line.startswith(image.stem + ","))
    assert float(row.split(",")[2]) == 1.0  # this image's pixel accuracy against Predictor
    unflipped = evaluate(model_dir, f"folder:{root}", device="cpu", precision="fp32",
                         num_workers=0, boundary=False, flip=False, scales=(1.0,))
    assert unflipped["pixel_acc"] < doc["pixel_acc"]

    out = tmp_path / "predicted"
    result = CliRunner().invoke(app, ["predict", str(model_dir), str(image), "--out", str(out),
                                      "--save", "mask", "--device", "cpu", "--precision",
                                      "fp32", "--backend", "torch"])
    assert result.exit_code == 0, result.output
    written = np.asarray(Image.open(next((out / "mask").glob("*.png"))))
    np.testing.assert_array_equal(written, labels)


def test_a_dynamic_onnx_export_carries_flip_and_scales(saved, answer, tmp_path):
    model_dir, _, image = saved
    probs, labels = answer
    onnx_path = tmp_path / "m.onnx"
    report = export_model(model_dir, "onnx", onnx_path, dynamic=True, exporter="legacy",
                          input_size=SIZE)
    assert report["notes"] == []
    onnx = Predictor(onnx_path)
    assert (onnx.flip, onnx.scales) == (True, (0.75, 1.0))
    np.testing.assert_allclose(onnx.predict_proba(_pixels(image)), probs, atol=1e-5)
    np.testing.assert_array_equal(onnx.predict(_pixels(image)), labels)


def test_a_fixed_size_export_keeps_flip_and_says_it_drops_scales(saved, tmp_path):
    # One input size cannot take other scales; the file answers as the model does at scale 1
    # with flip.
    model_dir, _, image = saved
    traced = tmp_path / "m.pt"
    report = export_model(model_dir, "torchscript", traced, input_size=SIZE)
    assert any("scales 0.75, 1" in note and "--dynamic" in note for note in report["notes"])
    script = Predictor(traced)
    assert (script.flip, script.scales) == (True, (1.0,))
    one_scale = Predictor(model_dir, scales=(1.0,), **FP32)
    np.testing.assert_array_equal(script.predict(_pixels(image)),
                                  one_scale.predict(_pixels(image)))


def test_evaluate_takes_grouped_values_or_the_old_keywords(saved, tmp_path):
    model_dir, root, _ = saved
    spec = f"folder:{root}"
    by_keywords = evaluate(model_dir, spec, flip=False, scales=(1.0,), device="cpu",
                           precision="fp32", num_workers=0, batch_size=1, boundary=False)
    grouped = evaluate(model_dir, spec, settings=ModelSettings(flip=False, scales=(1.0,)),
                       options=EvalOptions(device="cpu", precision="fp32", num_workers=0,
                                           batch_size=1, boundary=False))
    assert grouped["miou"] == by_keywords["miou"]
    assert grouped["inference"] == by_keywords["inference"]
    assert grouped["inference"]["flip"] is False
    with pytest.raises(TypeError, match="unexpected keyword argument 'flips'"):
        evaluate(model_dir, spec, flips=True)


def test_int8_calibration_reader_rewinds_to_the_first_image():
    batch = torch.arange(3 * 2 * 2 * 2, dtype=torch.float32).view(3, 2, 2, 2)
    reader = _Reader(batch, "input")
    first = [reader.get_next()["input"] for _ in range(3)]
    assert reader.get_next() is None
    reader.rewind()
    again = reader.get_next()["input"]
    np.testing.assert_array_equal(again, first[0])
    assert again.shape == (1, 2, 2, 2)
