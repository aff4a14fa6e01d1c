"""seglab.bench and ``seglab bench``: keys, sanity of every measure, clear errors, JSON CLI."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from seglab.bench import BACKENDS, bench_models, benchmark, count_gflops, load_for_bench
from seglab.cli.main import app
from seglab.errors import ConfigError, ModelError

SIZE = (16, 16)


class TinySegmenter(nn.Module):
    """Two 3x3 convolutions (about 40k parameters) returning registry-style {"out": logits}."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, padding=1)
        self.head = nn.Conv2d(64, 64, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.head(torch.relu(self.stem(x)))}


@pytest.fixture(scope="module")
def eager_result() -> dict:
    return benchmark(TinySegmenter(), SIZE, batch_sizes=(1, 2), backend="eager", warmup=1,
                     repeats=3)


def test_keys_and_timings_are_sane(eager_result: dict) -> None:
    for key in ("params", "trainable_params", "weight_mb", "gflops", "latency_ms",
                "latency_p90_ms", "throughput", "peak_mem_mb", "peak_mem_method", "method",
                "per_batch", "backend", "device", "input_size"):
        assert key in eager_result, key
    assert eager_result["latency_ms"] > 0
    assert eager_result["latency_p90_ms"] >= eager_result["latency_ms"]
    assert [row["batch"] for row in eager_result["per_batch"]] == [1, 2]
    for row in eager_result["per_batch"]:
        assert row["throughput_ips"] == pytest.approx(row["batch"] * 1000 / row["latency_ms"])
        assert eager_result["throughput"][str(row["batch"])] == row["throughput_ips"]
    assert eager_result["latency_ms"] == eager_result["per_batch"][0]["latency_ms"]
    assert "inference_mode" in eager_result["method"] and "warm-up" in eager_result["method"]


def test_params_weight_size_and_gflops(eager_result: dict) -> None:
    model = TinySegmenter()
    params = sum(p.numel() for p in model.parameters())
    assert eager_result["params"] == params == eager_result["trainable_params"]
    # fp32 weights: 4 bytes per parameter plus a small safetensors header.
    assert eager_result["weight_mb"] == pytest.approx(4 * params / 1e6, rel=0.01)
    assert eager_result["weight_mib"] == pytest.approx(4 * params / 2**20, rel=0.01)
    macs = (3 * 64 + 64 * 64) * 9 * SIZE[0] * SIZE[1]
    assert eager_result["gflops"] == pytest.approx(macs / 1e9, rel=1e-6)


def test_peak_memory_is_measured(eager_result: dict) -> None:
    assert eager_result["peak_mem_mb"] is not None and eager_result["peak_mem_mb"] >= 0
    assert "RSS" in eager_result["peak_mem_method"]


def test_trainable_params_follow_requires_grad() -> None:
    model = TinySegmenter()
    model.stem.requires_grad_(False)
    result = benchmark(model, SIZE, warmup=0, repeats=1)
    assert result["trainable_params"] == sum(p.numel() for p in model.head.parameters())
    assert result["params"] > result["trainable_params"]


@pytest.mark.parametrize("backend", ["bf16", "channels_last"])
def test_other_cpu_backends_run_and_restore_layout(backend: str) -> None:
    model = TinySegmenter()
    result = benchmark(model, SIZE, backend=backend, warmup=1, repeats=2)
    assert result["backend"] == backend and result["latency_ms"] > 0
    assert model.stem.weight.is_contiguous()  # the caller's model is left as it was


def test_gflops_none_for_models_that_cannot_run_on_meta() -> None:
    class NumpyInside(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"out": self.conv(x) * float(x.mean().item())}

    assert count_gflops(NumpyInside(), SIZE) is None


def test_bad_arguments_fail_clearly() -> None:
    with pytest.raises(ConfigError, match="unknown backend 'turbo'"):
        benchmark(TinySegmenter(), SIZE, backend="turbo")
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        benchmark(TinySegmenter(), SIZE, backend="fp16")
    with pytest.raises(ConfigError, match="batch sizes"):
        benchmark(TinySegmenter(), SIZE, batch_sizes=(0,))
    with pytest.raises(ConfigError, match="repeats"):
        benchmark(TinySegmenter(), SIZE, repeats=0)
    with pytest.raises(ConfigError, match="compile"):
        benchmark(TinySegmenter(), SIZE, backend="compile", warmup=0)
    with pytest.raises(ModelError, match="no_such_net"):
        bench_models(["no_such_net"], SIZE)
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        bench_models(["unet"], SIZE, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            benchmark(TinySegmenter(), SIZE, device="cuda")
    assert "onnxruntime" in BACKENDS and "compile" in BACKENDS


def test_auto_device_is_resolved() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    result = benchmark(TinySegmenter(), SIZE, device="auto", warmup=0, repeats=1)
    assert torch.device(result["device"]).type == expected


def test_cli_json_document(monkeypatch: pytest.MonkeyPatch) -> None:
    # bf16 hardware assumed: on a CPU without it, bf16 is skipped (see the test below).
    monkeypatch.setattr("seglab.artifacts.device.cpu_bf16_native", lambda: True)
    result = CliRunner().invoke(app, [
        "bench", "lraspp_mobilenet_v3_large", "--input", "32x32", "--batch", "1,2",
        "--backend", "eager,bf16", "--warmup", "0", "--repeats", "1", "--num-classes", "3",
        "--json",
    ])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["input_size"] == [32, 32] and doc["batch_sizes"] == [1, 2]
    assert [row["backend"] for row in doc["results"]] == ["eager", "bf16"]
    eager, bf16 = doc["results"]
    assert eager["model"] == "lraspp_mobilenet_v3_large" and eager["latency_ratio"] == 1.0
    assert bf16["latency_ratio"] == pytest.approx(bf16["latency_ms"] / eager["latency_ms"])
    assert bf16["speedup"] == pytest.approx(eager["latency_ms"] / bf16["latency_ms"])
    assert set(bf16["throughput"]) == {"1", "2"}
    assert "warm-up" in doc["method"]


def test_cli_rejects_unknown_model_and_backend() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "no_such_net", "--input", "32x32"])
    assert result.exit_code != 0 and "no_such_net" in result.output
    result = runner.invoke(app, ["bench", "lraspp_mobilenet_v3_large", "--backend", "turbo"])
    assert result.exit_code != 0 and "unknown backend" in result.output


def test_saved_model_folder_is_benchmarked_from_its_weights(tmp_path) -> None:
    from seglab.artifacts.pretrained import save_pretrained
    from seglab.bench import load_for_bench
    from seglab.models import build_model

    model = build_model("lraspp_mobilenet_v3_large", 3, weights=None, backbone_weights=None)
    folder = save_pretrained(model, tmp_path / "lraspp" / "model")
    label, loaded = load_for_bench(str(folder))
    assert label == "lraspp"
    assert sum(p.numel() for p in loaded.parameters()) == sum(
        p.numel() for p in model.parameters())
    saved = (folder / "model.safetensors").stat().st_size
    result = benchmark(loaded, SIZE, warmup=0, repeats=1)
    assert result["weight_bytes"] == pytest.approx(saved, rel=0.02)
    assert result["weight_mb"] == pytest.approx(saved / 1e6, rel=0.02)


def test_onnxruntime_backend_times_an_exported_copy() -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("seglab.export")
    from seglab.models import build_model

    model = build_model("lraspp_mobilenet_v3_large", 3, weights=None, backbone_weights=None)
    result = benchmark(model, (32, 32), batch_sizes=(1, 2), backend="onnxruntime", warmup=1,
                       repeats=2)
    assert result["backend"] == "onnxruntime" and result["latency_ms"] > 0
    assert set(result["throughput"]) == {"1", "2"}


def test_compile_backend_runs() -> None:
    result = benchmark(TinySegmenter(), SIZE, batch_sizes=(1, 2), backend="compile", warmup=1,
                       repeats=2)
    assert result["backend"] == "compile" and result["latency_ms"] > 0
    assert set(result["throughput"]) == {"1", "2"}


TORCHVISION_WEIGHTS = {
    "fcn_resnet50": "FCN_ResNet50_Weights",
    "fcn_resnet101": "FCN_ResNet101_Weights",
    "deeplabv3_resnet50": "DeepLabV3_ResNet50_Weights",
    "deeplabv3_resnet101": "DeepLabV3_ResNet101_Weights",
    "deeplabv3_mobilenet_v3_large": "DeepLabV3_MobileNet_V3_Large_Weights",
    "lraspp_mobilenet_v3_large": "LRASPP_MobileNet_V3_Large_Weights",
}


@pytest.mark.parametrize("name", sorted(TORCHVISION_WEIGHTS))
def test_aux_on_parameter_counts_match_torchvision(name):
    # The published counts (torchvision's weight metadata, 21 classes) include the aux head.
    import torchvision.models.segmentation as tvseg

    from seglab.bench.static import heads_counted

    published = getattr(tvseg, TORCHVISION_WEIGHTS[name]).COCO_WITH_VOC_LABELS_V1.meta[
        "num_params"]
    entry = name if name.startswith("lraspp") else f"{name}:aux=true"
    with torch.device("meta"):
        _, model = load_for_bench(entry, 21)
    assert sum(p.numel() for p in model.parameters()) == published
    if not name.startswith("lraspp"):
        assert heads_counted(model) == "out + aux"


def test_bench_entries_take_model_options_and_name_bad_ones():
    _, model = load_for_bench("pspnet_resnet18:aux=true", 5)
    assert model.seglab_spec["options"]["aux"] is True and model.aux_weight is not None
    with pytest.raises(ModelError, match="colour"):
        load_for_bench("pspnet_resnet18:colour=1", 5)


def test_emulated_bf16_is_skipped_with_a_note_unless_allowed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("seglab.artifacts.device.cpu_bf16_native", lambda: False)
    args = ["bench", "lraspp_mobilenet_v3_large", "--input", "32x32", "--backend", "eager,bf16",
            "--warmup", "0", "--repeats", "1", "--num-classes", "3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    # The finished row is printed before the table, the skipped one says why.
    assert "lraspp_mobilenet_v3_large / eager: p50" in result.output
    assert result.output.index("/ eager: p50") < result.output.index("speed-up vs eager")
    assert "skipped bf16: this CPU has no bf16 hardware" in result.output
    assert "--allow-emulated" in result.output
    doc = json.loads(CliRunner().invoke(app, [*args, "--json"]).stdout)
    eager, bf16 = doc["results"]
    assert "skipped" in bf16 and "latency_ms" not in bf16 and eager["speedup"] == 1.0
    assert doc["notes"] and "bf16" in doc["notes"][0]
    doc = json.loads(CliRunner().invoke(app, [*args, "--json", "--allow-emulated"]).stdout)
    assert [("skipped" in row, "latency_ms" in row) for row in doc["results"]] == [
        (False, True), (False, True)]
