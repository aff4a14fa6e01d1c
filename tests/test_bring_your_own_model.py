"""Models from elsewhere (issue 26): ONNX, TorchScript, state dicts and modules with their own
preprocessing, scored, predicted, benchmarked, compared, imported and exported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from seglab.artifacts.importing import import_model
from seglab.artifacts.loader import load_inference_model
from seglab.artifacts.settings import ModelSettings
from seglab.cli.main import app
from seglab.data.classes import read_class_table
from seglab.engine import evaluate
from seglab.errors import ConfigError, ModelError
from seglab.predict import Predictor

NUM_CLASSES = 4
BGR_MEAN = (104.0, 117.0, 123.0)  # Caffe-style: B, G, R on the 0..255 scale, no std
BGR_OPTIONS = ["--mean", "104,117,123", "--std", "1,1,1", "--scale", "255", "--channels", "bgr"]
BGR_SETTINGS = ModelSettings(mean=BGR_MEAN, std=(1, 1, 1), scale=255, channels="bgr")


class NearestColour(nn.Module):
    """A per-pixel classifier written the way older repositories do: it reads BGR pixels in
    0..255 minus a per-channel mean (no std) and picks the nearest class colour."""

    def __init__(self, rgb_colours: np.ndarray) -> None:
        super().__init__()
        centres = torch.tensor(rgb_colours[:, ::-1].copy(), dtype=torch.float32)  # BGR
        centres = centres - torch.tensor(BGR_MEAN)
        self.conv = nn.Conv2d(3, len(centres), 1)
        with torch.no_grad():  # argmax of 2 c.x - |c|^2 = the nearest centre c
            self.conv.weight.copy_(2 * centres[:, :, None, None] / 255)
            self.conv.bias.copy_(-(centres**2).sum(1) / 255)

    def forward(self, x):
        return self.conv(x)  # a bare tensor, as most repositories' models answer


def _python_confusion(model: nn.Module, root: Path) -> np.ndarray:
    """The user's own scoring: BGR, minus the mean, the model, argmax, a confusion matrix."""
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for image_path in sorted((root / "images" / "test").glob("*.png")):
        rgb = np.asarray(Image.open(image_path).convert("RGB"), np.float32)
        bgr = rgb[..., ::-1] - np.asarray(BGR_MEAN, np.float32)
        x = torch.from_numpy(bgr.copy()).permute(2, 0, 1)[None]
        with torch.no_grad():
            pred = model(x).argmax(1)[0].numpy()
        truth = np.asarray(Image.open(root / "masks" / "test" / image_path.name), np.int64)
        confusion += np.bincount(NUM_CLASSES * truth.ravel() + pred.ravel(),
                                 minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)
    return confusion


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A synthetic dataset, the hand-written model and its ONNX export made with torch only."""
    from seglab.data.synthetic import make_synthetic

    folder = tmp_path_factory.mktemp("byom")
    root = make_synthetic(folder / "data", n_train=4, n_val=2, n_test=4, size=(40, 56),
                          num_classes=NUM_CLASSES)
    colours = np.asarray([row.color for row in read_class_table(root / "classes.csv")])
    model = NearestColour(colours).eval()
    onnx_path = folder / "colour.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 40, 56),), str(onnx_path), dynamo=False,
                      input_names=["images"], output_names=["logits"],
                      dynamic_axes={"images": {0: "n", 2: "h", 3: "w"},
                                    "logits": {0: "n", 2: "h", 3: "w"}})
    return folder, root, model, onnx_path


def test_hand_exported_bgr_onnx_scored_by_seglab_eval_equals_python(scene):
    folder, root, model, onnx_path = scene
    expected = _python_confusion(model, root)
    out = folder / "eval"
    result = CliRunner().invoke(app, ["eval", str(onnx_path), "--data", f"folder:{root}",
                                      *BGR_OPTIONS, "--device", "cpu", "--fp32", "--out",
                                      str(out), "--json"])
    assert result.exit_code == 0, result.output
    confusion = np.load(out / "confusion.npy")
    assert confusion.tolist() == expected.tolist()
    doc = json.loads((out / "metrics.json").read_text())
    iou = np.diag(expected) / (expected.sum(0) + expected.sum(1) - np.diag(expected))
    assert doc["miou"] == pytest.approx(iou.mean(), abs=1e-12)
    assert doc["miou"] > 0.9  # the preprocessing is right: the nearest colour is the class
    assert any("the dataset's" in note for note in doc["notes"])  # the names it used, said

    # The same file read as RGB is a different model: the options decide the score.
    wrong = evaluate(onnx_path, f"folder:{root}", device="cpu", precision="fp32",
                     mean=BGR_MEAN[::-1], std=(1, 1, 1), scale=255, channels="rgb")
    assert wrong["miou"] < doc["miou"] - 0.1


def test_missing_normalisation_is_one_clear_error(scene):
    folder, root, _, onnx_path = scene
    runner = CliRunner()
    result = runner.invoke(app, ["eval", str(onnx_path), "--data", f"folder:{root}",
                                 "--device", "cpu"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[0].startswith("error: ") and str(onnx_path) in lines[0]
    assert "--mean" in result.output and "--std" in result.output and "--scale" in result.output
    assert "Traceback" not in result.output
    # Numbers without their scale are refused: std 1 means opposite things on the two scales.
    result = runner.invoke(app, ["eval", str(onnx_path), "--data", f"folder:{root}",
                                 "--mean", "104,117,123", "--std", "1,1,1"])
    assert result.exit_code == 1 and "--scale 255" in result.output
    # A default that is used is said, never silent.
    assumed = load_inference_model(onnx_path, settings=ModelSettings(mean=(0, 0, 0),
                                                                     std=(1, 1, 1), scale=255))
    assert assumed.notes[0].startswith("channels: rgb (assumed")
    with pytest.raises(ConfigError, match="--mean has 3 values but --std has 2"):
        ModelSettings(mean=(1, 2, 3), std=(1, 1), scale=255)
    with pytest.raises(ConfigError, match="--channels must be rgb or bgr"):
        ModelSettings(channels="rgba")


def _python_mask(model: nn.Module, image: np.ndarray) -> np.ndarray:
    bgr = torch.from_numpy(image[..., ::-1] - np.asarray(BGR_MEAN, np.float32))
    with torch.no_grad():
        out = model(bgr.permute(2, 0, 1)[None])
    return (out["out"] if isinstance(out, dict) else out).argmax(1)[0].numpy()


def test_module_torchscript_and_state_dict_give_the_python_masks(scene):
    from seglab.models import build_model

    folder, root, model, _ = scene
    image = np.asarray(Image.open(sorted((root / "images" / "test").glob("*.png"))[0]))
    traced = folder / "colour.pt"
    torch.jit.trace(model, torch.zeros(1, 3, 8, 8)).save(str(traced))  # no seglab config
    torch.manual_seed(0)
    unet = build_model("unet", NUM_CLASSES, base_channels=4, depth=2).eval()
    weights = folder / "unet.pth"
    torch.save({"state_dict": unet.state_dict(), "epoch": 3}, weights)  # a paper's layout
    unet_settings = ModelSettings(mean=BGR_MEAN, std=(1, 1, 1), scale=255, channels="bgr",
                                  model="unet:base_channels=4,depth=2",
                                  num_classes=NUM_CLASSES)
    sources = {
        "module": (model, BGR_SETTINGS, model),
        "torchscript": (traced, BGR_SETTINGS, model),
        "state dict": (weights, unet_settings, unet),
    }
    for what, (source, settings, reference) in sources.items():
        predictor = Predictor(source, backend="torch" if what != "torchscript" else "auto",
                              precision="fp32", settings=settings)
        assert predictor.classmap.num_classes == NUM_CLASSES, what
        np.testing.assert_array_equal(predictor.predict(image), _python_mask(reference, image),
                                      err_msg=what)

    with pytest.raises(ConfigError, match="--model NAME"):
        load_inference_model(weights, settings=BGR_SETTINGS)
    whole = folder / "whole.pt"
    torch.save(model, whole)
    with pytest.raises(ModelError, match="pickles Python objects.*state_dict"):
        load_inference_model(whole, settings=unet_settings)


def test_import_writes_a_folder_every_verb_reads_without_options(scene):
    folder, root, model, onnx_path = scene
    classes = folder / "names.txt"
    classes.write_text("sky\nroad\ncar\ntree\n")
    result = CliRunner().invoke(app, ["import", str(onnx_path), "--out", str(folder / "imp"),
                                      *BGR_OPTIONS, "--classes", str(classes)])
    assert result.exit_code == 0, result.output
    config = json.loads((folder / "imp" / "config.json").read_text())
    assert config["runtime"] == {"format": "onnx", "file": "model.onnx"}
    assert config["normalization"]["channels"] == "bgr"
    assert config["normalization"]["mean"] == pytest.approx([v / 255 for v in BGR_MEAN])
    assert "B, G, R order" in (folder / "imp" / "README.md").read_text()

    loaded = load_inference_model(folder / "imp")
    assert loaded.classmap.names == ("sky", "road", "car", "tree") and loaded.channels == "bgr"
    direct = evaluate(onnx_path, f"folder:{root}", device="cpu", precision="fp32",
                      settings=BGR_SETTINGS)
    imported = evaluate(folder / "imp", f"folder:{root}", device="cpu", precision="fp32")
    assert imported["miou"] == direct["miou"]

    # A plain module is traced to TorchScript at the size it will run at (asked for).
    with pytest.raises(ConfigError, match="--size"):
        import_model(model, folder / "mod", BGR_SETTINGS)
    import_model(model, folder / "mod", ModelSettings(mean=BGR_MEAN, std=(1, 1, 1), scale=255,
                                                      channels="bgr", size=(40, 56)))
    traced = evaluate(folder / "mod", f"folder:{root}", device="cpu", precision="fp32")
    assert traced["miou"] == direct["miou"]

    bench = CliRunner().invoke(app, ["bench", str(folder / "imp"), "--input", "40x56",
                                     "--repeats", "2", "--warmup", "1", "--json"])
    assert bench.exit_code == 0, bench.output
    row = json.loads(bench.stdout)["results"][0]
    assert row["backend"] == "onnxruntime (file)" and row["params"] == 4 * 3 + 4
    assert row["latency_ms"] > 0


def test_export_model_embeds_given_settings_and_wraps_a_tensor_output(scene, tmp_path):
    from seglab.artifacts.runtimes import TorchScriptSegmenter
    from seglab.export import export_model

    folder, root, model, _ = scene
    names = ["sky", "road", "car", "tree"]
    with pytest.raises(ModelError, match="does not say how its input is normalised"):
        export_model(model, "torchscript", tmp_path / "x.pt", input_size=(40, 56))
    report = export_model(model, "torchscript", tmp_path / "m.pt", input_size=(40, 56),
                          mean=BGR_MEAN, std=(1, 1, 1), scale=255, channels="bgr",
                          classes=names)
    assert report["parity"]["argmax_agreement"] == 1.0
    segmenter = TorchScriptSegmenter(tmp_path / "m.pt")
    assert segmenter.spec["num_classes"] == NUM_CLASSES  # read back alone
    assert segmenter.classes["names"] == names
    exported = evaluate(tmp_path / "m.pt", f"folder:{root}", device="cpu", precision="fp32")
    direct = evaluate(model, f"folder:{root}", device="cpu", precision="fp32",
                      settings=BGR_SETTINGS)
    assert exported["miou"] == direct["miou"] > 0.9

    class Strange(nn.Module):
        def forward(self, x):
            return {"logits": x}

    with pytest.raises(ModelError, match=r'return a \[N, C, H, W\] tensor or \{"out": logits\}'):
        export_model(Strange(), "onnx", tmp_path / "s.onnx", input_size=(8, 8),
                     mean=(0, 0, 0), std=(1, 1, 1), scale=1)


def test_compare_lists_a_seglab_run_and_an_external_onnx(scene, tmp_path):
    from seglab.compare import compare

    folder, root, _, onnx_path = scene
    outcome = compare(
        ["unet:base_channels=4,depth=2", str(onnx_path)], f"folder:{root}",
        overrides=["data.batch_size=2", "data.num_workers=0", "augment.crop_size=null",
                   "augment.scale_range=null", "trainer.progress=false",
                   "trainer.early_stop_patience=null", "eval.num_panels=0"],
        name="byom", epochs=1, runs_root=tmp_path, gallery_size=1,
        progress=lambda message: None, settings=BGR_SETTINGS,
    )
    statuses = {r.label: r.status for r in outcome.results}
    assert statuses == {"unet-base_channels4-depth2": "trained", "colour": "evaluated"}
    onnx_row = next(r for r in outcome.results if r.label == "colour")
    assert onnx_row.metrics["miou"] > 0.9 and onnx_row.bench["latency_ms"] > 0
    table = outcome.report.markdown.read_text()
    assert "colour" in table and "unet-base_channels4-depth2" in table
