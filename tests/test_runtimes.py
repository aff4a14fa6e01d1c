"""ONNX Runtime providers, embedded-config errors, unwritable export folders, Predictor backends."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from seglab.artifacts.pretrained import save_pretrained
from seglab.artifacts.runtimes import (
    CPU_PROVIDER,
    OnnxSegmenter,
    TorchScriptSegmenter,
    available_providers,
    resolve_provider,
)
from seglab.errors import ConfigError, ModelError
from seglab.export import export_model
from seglab.models import build_model
from seglab.predict import Predictor

SIZE = (64, 64)
GOOD_CONFIG = {
    "model": {"name": "conv", "num_classes": 2},
    "classes": None,
    "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    "inference": {},
    "export": {"format": "onnx", "input_size": [8, 8], "dynamic": False},
}


def _onnx_with_metadata(path, value: str | None):
    """A 1x1-conv ONNX file whose seglab_config metadata is ``value`` (None: no entry)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(nn.Conv2d(3, 2, 1), (torch.zeros(1, 3, 8, 8),), str(path),
                          input_names=["input"], output_names=["out"], dynamo=False)
    if value is not None:
        proto = onnx.load(str(path))
        entry = proto.metadata_props.add()
        entry.key, entry.value = "seglab_config", value
        onnx.save(proto, str(path))
    return path


def _torchscript_with_config(path, value: str):
    traced = torch.jit.trace(nn.Conv2d(3, 2, 1), torch.zeros(1, 3, 8, 8))
    torch.jit.save(traced, str(path), _extra_files={"seglab_config.json": value})
    return path


# --- providers -------------------------------------------------------------------------------


def test_cpu_provider_resolves_by_short_and_full_name():
    assert CPU_PROVIDER in available_providers()
    assert resolve_provider(None) == [CPU_PROVIDER]
    assert resolve_provider("cpu") == [CPU_PROVIDER]
    assert resolve_provider("CPU") == [CPU_PROVIDER]
    assert resolve_provider("cpuexecutionprovider") == [CPU_PROVIDER]


@pytest.mark.parametrize(("name", "full"), [("cuda", "CUDAExecutionProvider"),
                                            ("tensorrt", "TensorrtExecutionProvider"),
                                            ("openvino", "OpenVINOExecutionProvider")])
def test_missing_provider_names_itself_and_what_is_available(name, full):
    if full in available_providers():
        pytest.skip(f"{full} is installed here")
    with pytest.raises(ConfigError, match=rf"'{full}' \(from '{name}'\) is not available "
                                          rf"here.*available: .*{CPU_PROVIDER}"):
        resolve_provider(name)


def test_unknown_provider_lists_the_short_names():
    with pytest.raises(ConfigError, match="'npu'.*short names: cpu, cuda, tensorrt"):
        resolve_provider("npu")


def test_segmenter_runs_on_the_chosen_provider(tmp_path):
    path = _onnx_with_metadata(tmp_path / "m.onnx", json.dumps(GOOD_CONFIG))
    segmenter = OnnxSegmenter(path, provider="cpu")
    assert segmenter.providers == [CPU_PROVIDER]
    assert segmenter(torch.zeros(2, 3, 8, 8))["out"].shape == (2, 2, 8, 8)


def test_cli_lists_providers_for_predict_and_bench():
    from seglab.cli.main import app

    runner = CliRunner()
    for verb in ("predict", "bench"):
        result = runner.invoke(app, [verb, "--provider", "list"])
        assert result.exit_code == 0, result.output
        assert CPU_PROVIDER in result.output.split()


def test_bench_refuses_an_unavailable_provider_before_timing():
    from seglab.bench import bench_models

    if "CUDAExecutionProvider" in available_providers():
        pytest.skip("CUDA provider installed")
    with pytest.raises(ConfigError, match="CUDAExecutionProvider.*not available"):
        bench_models(["unet:base_channels=8"], SIZE, backends=["onnxruntime"],
                     provider="cuda")


# --- embedded configs ------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "message"), [
    (None, "has no seglab_config metadata"),
    ("{model: unet", "seglab_config metadata is not valid JSON"),
    ("[1, 2]", "must be a JSON object, got list"),
    (json.dumps({**GOOD_CONFIG, "normalization": None}), "lacks the input normalisation"),
    (json.dumps({**GOOD_CONFIG, "normalization": {"mean": [0.5, 0.5]}}),
     "lacks the input normalisation"),
    (json.dumps({**GOOD_CONFIG, "normalization": {"mean": [0, 0, 0], "std": [1, 0, 1]}}),
     "non-positive std"),
    (json.dumps({k: v for k, v in GOOD_CONFIG.items() if k != "export"}),
     "lacks export.input_size"),
])
def test_bad_embedded_onnx_config_is_a_clear_error(tmp_path, value, message):
    path = _onnx_with_metadata(tmp_path / "bad.onnx", value)
    with pytest.raises(ModelError, match=message) as info:
        OnnxSegmenter(path)
    assert str(path) in str(info.value)
    with pytest.raises(ModelError, match=message):
        Predictor(path)


def test_bad_embedded_torchscript_config_is_a_clear_error(tmp_path):
    path = _torchscript_with_config(tmp_path / "bad.pt", "not json")
    with pytest.raises(ModelError, match=r"bad\.pt: its seglab_config\.json is not valid JSON"):
        TorchScriptSegmenter(path)
    path = _torchscript_with_config(tmp_path / "nonorm.pt", json.dumps(
        {**GOOD_CONFIG, "normalization": {}}))
    with pytest.raises(ModelError, match="lacks the input normalisation"):
        TorchScriptSegmenter(path)


# --- unwritable output folders ---------------------------------------------------------------


def _tiny():
    torch.manual_seed(0)
    return build_model("unet", num_classes=3, base_channels=4).eval()


def test_export_into_a_read_only_folder_names_it_and_writes_nothing(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "old.onnx").write_bytes(b"keep me")
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):  # root ignores the mode: refuse the write the OS way
            import tempfile

            def refuse(*args, **kwargs):
                raise PermissionError(13, "Permission denied")

            monkeypatch.setattr(tempfile, "mkstemp", refuse)
        with pytest.raises(ConfigError, match=rf"into {folder}: Permission denied"):
            export_model(_tiny(), "onnx", folder / "m.onnx", input_size=SIZE)
        monkeypatch.undo()
        assert sorted(p.name for p in folder.iterdir()) == ["old.onnx"]
        assert (folder / "old.onnx").read_bytes() == b"keep me"
    finally:
        folder.chmod(0o755)


def test_export_under_a_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot write the export m.onnx into"):
        export_model(_tiny(), "onnx", blocker / "m.onnx", input_size=SIZE)


def test_cli_export_names_the_unwritable_folder(tmp_path):
    from seglab.cli.main import app

    folder = save_pretrained(_tiny(), tmp_path / "model")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(app, ["export", str(folder), "--out",
                                      str(blocker / "m.onnx"), "--input", "64x64"])
    assert result.exit_code != 0
    assert "cannot write the export m.onnx" in result.output


# --- Predictor backends ----------------------------------------------------------------------


def test_predictor_backend_choice_with_and_without_an_export(tmp_path):
    torch.manual_seed(0)
    model = build_model("lraspp_mobilenet_v3_large", num_classes=3, weights=None,
                        backbone_weights=None).eval()
    folder = save_pretrained(model, tmp_path / "model")
    plain = Predictor(folder)
    assert plain.backend == "torch" and "no ONNX export" in plain.backend_reason
    with pytest.raises(ConfigError, match="backend onnxruntime needs an ONNX export"):
        Predictor(folder, backend="onnxruntime")
    with pytest.raises(ConfigError, match="unknown backend 'tensorflow'"):
        Predictor(folder, backend="tensorflow")
    export_model(folder, "onnx", folder / "model.onnx", dynamic=True, exporter="legacy",
                 input_size=SIZE)
    forced = Predictor(folder, backend="onnxruntime", provider="cpu")
    assert forced.backend == "onnxruntime" and forced.provider == CPU_PROVIDER
    auto = Predictor(folder)
    assert auto.backend in ("onnxruntime", "torch")
    assert " ms" in auto.backend_reason and "agree" in auto.backend_reason or (
        auto.backend == "torch" and "ms" in auto.backend_reason)
    image = np.random.default_rng(0).integers(0, 256, (71, 93, 3), dtype=np.uint8)
    reference = Predictor(folder, backend="torch", precision="fp32").predict(image)
    assert (forced.predict(image) == reference).mean() >= 0.999
    # Weights saved after the export: the export is stale and no longer used.
    save_pretrained(model, folder)
    assert Predictor(folder).backend == "torch"
    with pytest.raises(ConfigError, match="provider applies to ONNX Runtime"):
        Predictor(folder, backend="torch", provider="cpu")
