"""Registry behaviour: names, options, presets, errors, ModelInfo; heads and backbones."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import seglab
from seglab.errors import ModelError
from seglab.models import build_model, list_models, model_info, model_names
from seglab.models.backbones import TimmBackbone
from seglab.models.fcn8s import FixedBilinearUp
from seglab.models.heads import ASPP, OCRHead, PyramidPooling
from seglab.models.heads.common import match_size

REQUIRED = {
    "fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101",
    "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large", "pspnet_resnet18",
    "pspnet_resnet50", "pspnet_resnet101", "pspnet_mobilenetv2", "pspnet_mobilenetv3",
    "deeplabv3_aspp_resnet18", "deeplabv3_aspp_resnet50", "deeplabv3plus_resnet50",
    "ocrnet_resnet18", "ocrnet_resnet50", "unet", "unet_resnet34", "unet_aspp",
    "resnet18_encdec", "resnet34_encdec", "fcn8s_vgg16",
}


def test_required_presets_are_registered_and_exported():
    assert REQUIRED <= set(model_names())
    assert seglab.build_model is build_model and seglab.list_models is list_models


@pytest.mark.parametrize(
    "first_import",
    [
        "from seglab.models.registry import model_names",
        "from seglab.models.unet import build_unet",
        "from seglab.models.profile import profile_model",
        "import seglab; seglab.list_models()",
    ],
)
def test_every_model_is_registered_whichever_module_comes_first(first_import):
    # A fresh interpreter, so no earlier test has already imported the model modules.
    code = (
        f"{first_import}\n"
        "from seglab.models.registry import model_names\n"
        "print(','.join(model_names()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.strip()
    assert set(out.split(",")) == set(model_names())


def test_the_registry_module_names_no_model_module():
    path = Path(__file__).resolve().parents[1] / "src" / "seglab" / "models" / "registry.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for a in node.names}
    assert not {name for name in imported if name and name.startswith("seglab.models")}
    assert "import_module" not in path.read_text(encoding="utf-8")


def test_model_info_describes_weights_and_options():
    info = model_info("deeplabv3_resnet50")
    assert (info.family, info.backbone, info.weights) == ("deeplabv3", "resnet50", ("coco_voc",))
    assert info.backbone_weights == ("imagenet",)
    assert set(info.options) == {"weights", "backbone_weights", "aux"}
    psp = model_info("pspnet_resnet18")
    assert psp.defaults["bins"] == (1, 2, 3, 6) and "backbone" not in psp.options
    json.dumps([i.to_dict() for i in list_models()])
    assert {i.family for i in list_models("unet")} == {"unet"}


def test_unknown_names_and_options_are_clear():
    with pytest.raises(ModelError, match="Did you mean pspnet_resnet18"):
        build_model("pspnet_resnet19", 3)
    with pytest.raises(ModelError, match="has no option 'bin'.*bins"):
        build_model("pspnet_resnet18", 3, bin=[1, 2])
    with pytest.raises(ModelError, match="preset with backbone='resnet18'.*'pspnet'"):
        build_model("pspnet_resnet18", 3, backbone="resnet50")
    with pytest.raises(ModelError, match="positive integer"):
        build_model("unet", 0)
    with pytest.raises(ModelError, match="JSON-safe"):
        build_model("unet", 2, base_channels=4, dropout=torch.tensor(0.1))
    with pytest.raises(ModelError, match="unknown backbone 'resnet_does_not_exist'"):
        build_model("pspnet", 3, backbone="resnet_does_not_exist")
    with pytest.raises(ModelError, match="output_stride must be 8, 16 or 32"):
        build_model("pspnet", 3, backbone="resnet18", output_stride=4)


def test_preset_accepts_its_own_backbone_and_generic_accepts_any():
    assert build_model("pspnet_resnet18", 3, backbone="resnet18", head_channels=16)
    m = build_model("pspnet", 3, backbone="resnet18", head_channels=16, aux=False)
    assert m.seglab_spec["options"] == {
        "backbone": "resnet18", "head_channels": 16, "aux": False, "output_stride": 8,
        "backbone_weights": None, "in_chans": 3, "bins": [1, 2, 3, 6], "dropout": 0.1,
    }
    assert "backbone" not in build_model("pspnet_resnet18", 3).seglab_spec["options"]
    assert m.aux_weight is None


def test_pspnet_and_torchvision_aux_weights():
    assert build_model("pspnet_resnet18", 3, head_channels=16).aux_weight == 0.4
    assert build_model("lraspp_mobilenet_v3_large", 3).aux_weight is None
    assert build_model("deeplabv3_mobilenet_v3_large", 3, aux=True).aux_weight == 0.5


@pytest.mark.parametrize(("stride", "size"), [(8, 13), (16, 7), (32, 4)])
def test_backbone_output_stride(stride, size):
    backbone = TimmBackbone("resnet18", output_stride=stride)
    features = backbone(torch.randn(1, 3, 97, 101))
    assert backbone.reductions[-1] == stride
    assert features[-1].shape[-2:] == (size, size)
    assert [f.shape[1] for f in features] == backbone.channels


def test_low_level_skips_are_the_first_map_at_their_stride():
    # Dilated (output stride 8) backbones repeat stride 8: the skip must be the shallow one.
    lraspp = build_model("lraspp", 3, backbone="mobilenetv3_small_100", output_stride=8)
    assert lraspp.head.low_index == 2 and lraspp.head.low_classifier.in_channels == 24
    plus = build_model("deeplabv3plus", 3, backbone="resnet18", output_stride=8, head_channels=8)
    assert plus.head.low_index == 1


def test_aspp_branches_follow_rates_and_image_pooling():
    aspp = ASPP(16, 8, (1, 2, 4, 8), image_pooling=True)
    assert len(aspp.branches) == 6  # 1x1 + four rates + pooling
    assert [b[0].dilation for b in aspp.branches[1:5]] == [(r, r) for r in (1, 2, 4, 8)]
    assert aspp.eval()(torch.randn(2, 16, 9, 11)).shape == (2, 8, 9, 11)
    assert len(ASPP(16, 8, (6, 12), image_pooling=False).branches) == 3


def test_pyramid_pooling_concatenates_each_bin():
    ppm = PyramidPooling(32, bins=(1, 2, 3, 6)).eval()
    y = ppm(torch.randn(2, 32, 13, 17))
    assert y.shape == (2, 32 + 4 * 8, 13, 17)
    # The bin-1 branch is constant over space: global context.
    bin1 = y[:, 32:40]
    assert torch.allclose(bin1, bin1[..., :1, :1].expand_as(bin1))


def test_ocr_relation_attends_over_class_regions():
    head = OCRHead(32, 16, num_classes=5, channels=24, key_channels=8, in_index=-1,
                   region_index=-2).eval()
    out = head([torch.randn(2, 16, 9, 11), torch.randn(2, 32, 9, 11)])
    assert out["out"].shape == (2, 5, 9, 11) and out["aux"].shape == (2, 5, 9, 11)


def test_match_size_crops_and_pads():
    x = torch.ones(1, 1, 8, 8)
    assert match_size(x, (7, 9)).shape[-2:] == (7, 9)
    assert match_size(x, (7, 9))[..., -1].sum() == 0  # padded column is zero


def test_fcn_final_upsampling_is_fixed_bilinear():
    up = FixedBilinearUp(2, 8)
    assert not list(up.parameters())
    y = up(torch.ones(1, 2, 4, 4))
    assert y.shape == (1, 2, 32, 32)
    assert torch.allclose(y[..., 4:28, 4:28], torch.ones(1))  # interpolates a constant exactly
    model = build_model("fcn8s_vgg16", 3, fc_channels=16)
    assert not any(n.startswith("up_final") for n, _ in model.named_parameters())


@pytest.mark.parametrize("size", [(13, 17), (6, 6), (5, 7), (2, 3)])
def test_export_friendly_adaptive_pool_matches_torch(size, monkeypatch):
    from seglab.models.heads import ppm

    x = torch.randn(2, 4, *size)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    for bins in (1, 2, 3, 6):
        expected = torch.nn.functional.adaptive_avg_pool2d(x, bins)
        assert torch.allclose(ppm.adaptive_avg_pool(x, bins), expected, atol=1e-6)


def test_pspnet_exports_to_onnx_at_an_odd_size(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = build_model("pspnet_mobilenetv2", 3, head_channels=16, aux=False).eval()
    x = torch.randn(1, 3, 65, 97)
    path = tmp_path / "psp.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["out"],
                      dynamo=False)
    (y,) = ort.InferenceSession(str(path)).run(None, {"x": x.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(y), model(x)["out"], atol=1e-4)
