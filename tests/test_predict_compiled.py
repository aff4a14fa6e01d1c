"""The compiled runtime: used when the workload pays for the compile and the masks agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import seglab.predict.compiled as compiled_module
from seglab.artifacts.pretrained import save_pretrained
from seglab.errors import ConfigError
from seglab.models import build_model
from seglab.predict import Predictor, predict_paths
from seglab.predict.compiled import CompiledModel


class TinySegmenter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return {"out": self.conv(x)}


class Wrong(nn.Module):
    """A 'compiled' model whose masks are all class 0: must never be used."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)["out"]
        return {"out": torch.zeros_like(out).index_fill_(1, torch.tensor([0]), 1.0)}


def _times(monkeypatch, eager_s: float, compiled_s: float) -> None:
    """Timings of the decision: the first measured call is eager, the second compiled."""
    answers = iter([eager_s, compiled_s])
    monkeypatch.setattr(compiled_module, "_fastest", lambda call: (call(), next(answers))[1])


def _no_compile(monkeypatch, wrap=lambda model: model) -> list[nn.Module]:
    """torch.compile replaced by ``wrap`` (instant); returns the models it was asked for."""
    asked: list[nn.Module] = []

    def fake(model, dynamic=None):
        asked.append(model)
        return wrap(model)

    monkeypatch.setattr(compiled_module.torch, "compile", fake)
    return asked


def test_without_a_workload_the_model_is_never_compiled(monkeypatch):
    asked = _no_compile(monkeypatch)
    model = CompiledModel(TinySegmenter().eval())
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x)["out"], model.eager(x)["out"])
    assert model.decision == "eager" and "Predictor.expect" in model.reason
    assert asked == []


def test_a_small_workload_is_not_worth_the_compile_nor_a_timing_pass(monkeypatch):
    asked = _no_compile(monkeypatch)
    calls = []
    monkeypatch.setattr(compiled_module, "_fastest", lambda call: calls.append(call) or 1.0)
    model = CompiledModel(TinySegmenter().eval(), workload=100)
    with torch.no_grad():
        model(torch.randn(2, 3, 16, 16))
    # even the first (slowest) pass, 20% saved over 50 batches, is far below the compile
    assert model.decision == "eager" and "not compiled: 100 images at" in model.reason
    assert "would save ~0 s" in model.reason
    assert asked == [] and calls == []


def test_a_large_workload_compiles_and_keeps_the_faster_agreeing_graph(monkeypatch):
    _no_compile(monkeypatch)
    _times(monkeypatch, eager_s=0.1, compiled_s=0.05)
    model = CompiledModel(TinySegmenter().eval(), workload=10**9)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        first = model(x)["out"]
        assert model.decision == "compiled", model.reason
        assert "50 ms a pass vs eager 100 ms, 100.00% agreement" in model.reason
        assert torch.equal(model(x)["out"], first)
        # another shape (a last, smaller batch) runs eagerly: no second compile
        assert model(x[:1])["out"].shape == (1, 4, 16, 16)


def test_a_disagreeing_compiled_graph_is_dropped(monkeypatch):
    _no_compile(monkeypatch, wrap=Wrong)
    _times(monkeypatch, eager_s=0.1, compiled_s=0.01)
    torch.manual_seed(0)
    model = CompiledModel(TinySegmenter().eval(), workload=10**9)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        answer = model(x)["out"]
        assert model.decision == "eager" and "disagrees" in model.reason
        assert torch.equal(answer, model.eager(x)["out"])
        assert torch.equal(model(x)["out"], model.eager(x)["out"])


def test_a_slower_compiled_graph_is_dropped(monkeypatch):
    _no_compile(monkeypatch)
    _times(monkeypatch, eager_s=0.1, compiled_s=0.2)
    model = CompiledModel(TinySegmenter().eval(), workload=10**9)
    with torch.no_grad():
        model(torch.randn(1, 3, 16, 16))
    assert model.decision == "eager" and "not faster" in model.reason


def test_a_real_compile_with_freezing_answers_like_the_eager_model():
    torch.manual_seed(0)
    model = CompiledModel(TinySegmenter().eval(), force=True)
    x = torch.randn(1, 3, 24, 40)
    with torch.no_grad():
        reference = model.eager(x)["out"]
        model(x)
        again = model(x)["out"]
    assert model.decision in ("compiled", "eager"), model.reason
    assert "agree" in model.reason or "not faster" in model.reason
    torch.testing.assert_close(again, reference, rtol=1e-4, atol=1e-4)


@pytest.fixture
def folder(tmp_path):
    torch.manual_seed(0)
    model = build_model("lraspp_mobilenet_v3_large", num_classes=3, weights=None,
                        backbone_weights=None).eval()
    return save_pretrained(model, tmp_path / "model")


def test_predict_paths_announces_its_workload_and_reports_the_compile(folder, tmp_path,
                                                                     monkeypatch):
    _no_compile(monkeypatch)
    _times(monkeypatch, eager_s=0.1, compiled_s=0.05)
    monkeypatch.setattr(compiled_module, "COMPILE_SETUP_S", 0.0)  # any workload pays
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for index in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(
            images / f"{index}.png")
    predictor = Predictor(folder, batch_size=1)
    assert predictor.backend == "torch"
    assert predictor.backend_reason == "no ONNX export beside the model"
    summary = predict_paths(predictor, [images], tmp_path / "out", save="mask")
    assert summary.ok and predictor.backend == "torch.compile"
    assert predictor.backend_reason.startswith("no ONNX export beside the model; compiled")


def test_backend_compile_is_forced_and_expect_checks_its_count(folder, monkeypatch):
    _no_compile(monkeypatch)
    _times(monkeypatch, eager_s=0.1, compiled_s=0.05)
    predictor = Predictor(folder, backend="compile")
    predictor.predict(np.zeros((32, 48, 3), np.uint8))
    assert predictor.backend_reason.startswith("asked for; ")
    with pytest.raises(ConfigError, match="must be >= 0, got -1"):
        predictor.expect(-1)
    assert not isinstance(predictor.model, CompiledModel)  # ``model`` is the torch model
    alone = Predictor(folder)
    alone.predict(np.zeros((32, 48, 3), np.uint8))
    assert alone.backend == "torch" and "no workload announced" in alone.backend_reason


@pytest.mark.parametrize(("wrap", "kept"), [(lambda model: model, True), (Wrong, False)])
def test_under_bf16_autocast_compile_must_be_as_faithful_to_fp32_as_eager(monkeypatch, wrap,
                                                                         kept):
    """bf16 itself moves some argmaxes; compile may not move (many) more than eager bf16 does."""
    _no_compile(monkeypatch, wrap=wrap)
    _times(monkeypatch, eager_s=0.1, compiled_s=0.05)
    torch.manual_seed(0)
    model = CompiledModel(TinySegmenter().eval(), workload=10**9)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(1, 3, 32, 32))
    assert (model.decision == "compiled") is kept, model.reason
    if not kept:
        assert "disagrees with the fp32 model" in model.reason and "needed" in model.reason
