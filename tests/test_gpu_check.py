"""Device independence: ``cpu``, ``cuda``, ``cuda:N``; the one AMP choice; the GPU check script.

The CUDA tests skip on a CPU machine (``benchmarks/gpu_check.sh`` runs them on a GPU); the
script's ``--dry-run`` (the same steps, on the CPU, tiny sizes) runs everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from seglab.artifacts import device
from seglab.artifacts.device import autocast_dtype, resolve_device
from seglab.data.synthetic import make_synthetic
from seglab.engine.trainer_setup import lightning_precision
from seglab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
TWO_GPUS = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")


def test_device_names_are_checked() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown device 'tpu:x'"):
        resolve_device("tpu:x")
    if not torch.cuda.is_available():
        for name in ("cuda", "cuda:1", "gpu"):
            with pytest.raises(ConfigError, match="CUDA is not available"):
                resolve_device(name)
        assert resolve_device("auto") == torch.device("cpu")


def test_one_amp_choice_for_training_and_inference(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(device, "cpu_bf16_native", lambda: True)
    assert autocast_dtype("auto", cpu) is torch.bfloat16
    assert autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", "cpu") is torch.bfloat16
    with pytest.raises(ConfigError, match="unknown precision 'half'"):
        autocast_dtype("half", cpu)
    assert lightning_precision("auto", "cpu") == "bf16-mixed"
    assert lightning_precision("fp32", "cpu") == "32-true"
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        lightning_precision("fp16", "cpu")


@CUDA
def test_cuda_device_names() -> None:
    count = torch.cuda.device_count()
    assert resolve_device("cuda").type == "cuda"
    assert resolve_device("gpu").type == "cuda"
    assert resolve_device(f"cuda:{count - 1}") == torch.device("cuda", count - 1)
    with pytest.raises(ConfigError, match=f"has {count} GPU"):
        resolve_device(f"cuda:{count}")


@CUDA
def test_cuda_amp_choice() -> None:
    cuda = torch.device("cuda")
    bf16 = torch.cuda.is_bf16_supported()
    assert autocast_dtype("auto", cuda) is (torch.bfloat16 if bf16 else torch.float16)
    assert lightning_precision("auto", "gpu") == ("bf16-mixed" if bf16 else "16-mixed")
    assert lightning_precision("fp16", "gpu") == "16-mixed"  # Lightning adds the grad scaler


@CUDA
def test_cuda_sync_batchnorm_keeps_frozen_statistics() -> None:
    from seglab.models.freeze import apply_freeze, convert_sync_batchnorm

    model = nn.Sequential()
    model.add_module("backbone", nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    model.add_module("head", nn.Sequential(nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2)))
    apply_freeze(model, "freeze:backbone.*")
    model = convert_sync_batchnorm(model).cuda().train()
    frozen, trainable = model.backbone[1], model.head[1]
    before_frozen, before_trainable = frozen.running_mean.clone(), trainable.running_mean.clone()
    model(torch.randn(2, 3, 16, 16, device="cuda") * 4 + 2)  # one process: no sync needed
    assert torch.equal(frozen.running_mean, before_frozen)
    assert not torch.equal(trainable.running_mean, before_trainable)


@pytest.fixture(scope="module")
def cuda_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from seglab.config import Recipe
    from seglab.engine import fit

    data = make_synthetic(tmp_path_factory.mktemp("data") / "syn", n_train=8, n_val=2,
                          n_test=5, size=(64, 64), num_classes=3)
    recipe = Recipe.from_dict({
        "data": {"spec": f"folder:{data}", "batch_size": 4, "num_workers": 0},
        "model": {"name": "unet", "options": {"base_channels": 8, "depth": 2}},
        "augment": {"crop_size": [64, 64]},
        "trainer": {"max_epochs": 1, "progress": False, "accelerator": "gpu", "devices": 1},
    })
    return fit(recipe, tmp_path_factory.mktemp("runs") / "gpu")


@CUDA
def test_cuda_train_eval_predict_on_named_devices(cuda_run: Path) -> None:
    from seglab.engine.evaluation import evaluate
    from seglab.predict import Predictor

    metrics = json.loads((cuda_run / "metrics.json").read_text())
    last = torch.cuda.device_count() - 1
    plain = evaluate(cuda_run, device="cuda", num_panels=0, precision="fp32", num_workers=0)
    named = evaluate(cuda_run, device=f"cuda:{last}", num_panels=0, precision="fp32",
                     num_workers=0)
    assert plain["miou"] == named["miou"] and plain["pixel_acc"] == named["pixel_acc"]
    assert metrics["num_images"] == 5
    predictor = Predictor(cuda_run, device=f"cuda:{last}")
    mask = predictor.predict(torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8))
    assert mask.shape == (64, 64) and mask.device == torch.device("cuda", last)


@TWO_GPUS
def test_cuda_two_gpu_evaluation_equals_one(cuda_run: Path) -> None:
    from seglab.engine.evaluation import evaluate

    one = evaluate(cuda_run, num_panels=0, precision="fp32", num_workers=0, device="cuda:0")
    two = evaluate(cuda_run, num_panels=0, precision="fp32", num_workers=0, devices=2,
                   accelerator="gpu")
    assert two["processes"] == 2
    assert one["miou"] == two["miou"] and one["per_class"] == two["per_class"]


def test_gpu_check_dry_run(tmp_path: Path) -> None:
    """The GPU check's every step on the CPU, tiny sizes (the script CI can run)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    cuda_log = (tmp_path / "cuda_tests.log").read_text()
    assert ("passed" if torch.cuda.is_available() else "skipped") in cuda_log
    step = json.loads((tmp_path / "train_step.json").read_text())
    rates = step["models"]["lraspp"]  # the dry run trains LR-ASPP (the GPU run DeepLabV3)
    assert rates["reference_img_s"] > 0 and rates["seglab_img_s"] > 0
    assert json.loads((tmp_path / "bench.json").read_text())
    assert "predict: 4 frames" in done.stdout
