"""Loading pretrained weights offline: torch hub cache, local files, clear download errors.

Weight files are written by the tests from freshly initialised models of the same
architecture, so the whole loading path runs without network access.
"""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torchvision.models import mobilenet_v3_large, resnet50

from seglab.errors import ModelError
from seglab.models import build_model
from seglab.models import torchvision_zoo as tvz
from seglab.models.profile import build_on_meta, count_gmacs
from seglab.models.weights import hub_checkpoint_path

# torchvision's published figures (weights docs): params (M), GFLOPS at 520x520.
PUBLISHED = {
    "fcn_resnet50": (35.3, 152.7),
    "fcn_resnet101": (54.3, 232.7),
    "deeplabv3_resnet50": (42.0, 178.7),
    "deeplabv3_resnet101": (61.0, 258.7),
    "deeplabv3_mobilenet_v3_large": (11.0, 10.5),
    "lraspp_mobilenet_v3_large": (3.2, 2.1),
}


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty TORCH_HOME; any download attempt fails as it would offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch"


def _reference(name: str, num_classes: int = tvz.VOC_CLASSES, aux: bool | None = None):
    spec = tvz._MODELS[name]
    torch.manual_seed(1)
    return spec.factory(weights=None, weights_backbone=None, num_classes=num_classes,
                        aux_loss=spec.has_aux if aux is None else aux)


def _assert_all_but_final_convs_identical(model, reference_state, num_classes):
    final = {f"{path}.{t}" for path in tvz.final_convs(model) for t in ("weight", "bias")}
    state = model.state_dict()
    assert final <= set(state)
    for key, value in state.items():
        if key in final:
            assert value.shape[0] == num_classes, key
        else:
            assert torch.equal(value, reference_state[key]), f"{key} changed"


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_params_and_gflops_match_torchvision_published(name):
    # Counted as torchvision does: 21 classes, aux head included where the weights have one,
    # one 520x520 image; GFLOPs = multiply-adds / 1e9 (FlopCounterMode's FLOPs / 2).
    has_aux = tvz._MODELS[name].has_aux
    options = {"aux": True} if has_aux else {}
    model = build_on_meta(name, 21, **options)
    params = sum(p.numel() for p in model.parameters())
    meta = tvz.published_meta(name)
    assert params == meta["num_params"]
    gmacs = count_gmacs(model, (520, 520))
    assert gmacs == pytest.approx(meta["gflops"], abs=1e-3)
    assert round(params / 1e6, 1) == PUBLISHED[name][0]
    assert round(gmacs, 1) == PUBLISHED[name][1]


@pytest.mark.parametrize(
    ("name", "aux"),
    [("lraspp_mobilenet_v3_large", False), ("deeplabv3_mobilenet_v3_large", True),
     ("fcn_resnet50", True), ("deeplabv3_resnet50", False)],
)
def test_coco_voc_from_hub_cache_replaces_only_final_convs(torch_home, name, aux):
    reference = _reference(name)
    target = hub_checkpoint_path(tvz._MODELS[name].coco_voc.url)
    assert str(target).startswith(str(torch_home))
    target.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), target)
    options = {"aux": aux} if tvz._MODELS[name].has_aux else {}
    model = build_model(name, 11, weights="coco_voc", **options)
    _assert_all_but_final_convs_identical(model, reference.state_dict(), 11)
    assert (getattr(model, "aux_classifier", None) is not None) == aux
    out = model.eval()(torch.randn(1, 3, 45, 61))
    assert out["out"].shape == (1, 11, 45, 61) and ("aux" in out) == aux


def test_coco_voc_with_21_classes_keeps_every_tensor(torch_home):
    reference = _reference("lraspp_mobilenet_v3_large")
    target = hub_checkpoint_path(tvz._MODELS["lraspp_mobilenet_v3_large"].coco_voc.url)
    target.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), target)
    state = build_model("lraspp_mobilenet_v3_large", 21, weights="coco_voc").state_dict()
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in state.items())


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_from_local_file(torch_home, tmp_path, suffix):
    reference = _reference("deeplabv3_mobilenet_v3_large")
    path = tmp_path / f"coco{suffix}"
    if suffix == ".pth":
        torch.save(reference.state_dict(), path)
    else:
        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    model = build_model("deeplabv3_mobilenet_v3_large", 4, weights=str(path), aux=True)
    _assert_all_but_final_convs_identical(model, reference.state_dict(), 4)


def test_weights_file_of_a_fine_tuned_model_with_other_class_count(tmp_path):
    # A user's own 7-class fine-tune, without aux, reused for 3 classes with a fresh aux head.
    reference = _reference("fcn_resnet50", num_classes=7, aux=False)
    path = tmp_path / "mine.pth"
    torch.save(reference.state_dict(), path)
    model = build_model("fcn_resnet50", 3, weights=str(path), aux=True)
    state = model.state_dict()
    assert state["classifier.4.weight"].shape[0] == 3
    assert state["aux_classifier.4.weight"].shape[0] == 3
    assert torch.equal(state["backbone.layer4.2.conv3.weight"],
                       reference.state_dict()["backbone.layer4.2.conv3.weight"])
    out = model.eval()(torch.randn(1, 3, 35, 41))
    assert out["out"].shape == out["aux"].shape == (1, 3, 35, 41)


def test_download_failure_says_which_file_goes_where(torch_home):
    with pytest.raises(ModelError) as info:
        build_model("deeplabv3_resnet50", 5, weights="coco_voc")
    message = str(info.value)
    assert "downloading" in message and "failed" in message
    assert "deeplabv3_resnet50_coco-cd0a2569.pth" in message
    assert str(torch_home / "hub" / "checkpoints") in message
    assert "weights=" in message


def test_backbone_imagenet_from_hub_cache(torch_home):
    torch.manual_seed(2)
    imagenet = mobilenet_v3_large(weights=None).state_dict()
    target = hub_checkpoint_path(tvz._MODELS["lraspp_mobilenet_v3_large"].backbone_imagenet.url)
    target.parent.mkdir(parents=True)
    torch.save(imagenet, target)
    model = build_model("lraspp_mobilenet_v3_large", 6, backbone_weights="imagenet")
    backbone = model.backbone.state_dict()
    assert len(backbone) > 100
    assert all(torch.equal(v, imagenet[f"features.{k}"]) for k, v in backbone.items())


def test_backbone_imagenet_resnet_from_local_file(tmp_path):
    torch.manual_seed(3)
    imagenet = resnet50(weights=None).state_dict()
    path = tmp_path / "r50.pth"
    torch.save(imagenet, path)
    model = build_model("deeplabv3_resnet50", 6, backbone_weights=str(path))
    assert all(torch.equal(v, imagenet[k]) for k, v in model.backbone.state_dict().items())


def test_bad_weight_arguments_are_clear(tmp_path):
    with pytest.raises(ModelError, match="either weights"):
        build_model("lraspp_mobilenet_v3_large", 3, weights="coco_voc",
                    backbone_weights="imagenet")
    with pytest.raises(ModelError, match="expected 'coco_voc' or a path"):
        build_model("lraspp_mobilenet_v3_large", 3, weights="/no/such/file.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save(_reference("deeplabv3_mobilenet_v3_large").state_dict(), wrong)
    with pytest.raises(ModelError, match="do not fit"):
        build_model("lraspp_mobilenet_v3_large", 3, weights=str(wrong))
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": object()}, pickled)
    with pytest.raises(ModelError, match="cannot read weight file"):
        build_model("lraspp_mobilenet_v3_large", 3, weights=str(pickled))


@pytest.mark.parametrize(
    ("backbone", "preset"),
    [("resnet18", "pspnet_resnet18"), ("mobilenetv3_large_100", "lraspp_mobilenetv3")],
)
def test_timm_backbone_weights_from_local_file(tmp_path, backbone, preset):
    torch.manual_seed(4)
    full = timm.create_model(backbone).state_dict()  # a classification checkpoint, head included
    path = tmp_path / f"{backbone}.safetensors"
    save_file({k: v.contiguous() for k, v in full.items()}, str(path))
    model = build_model(preset, 3, backbone_weights=str(path))
    encoder = model.backbone.encoder.state_dict()
    assert all(torch.equal(v, full[k]) for k, v in encoder.items())


def test_timm_backbone_weights_of_another_architecture_are_rejected(tmp_path):
    path = tmp_path / "mnv3.pth"
    torch.save(timm.create_model("mobilenetv3_small_100").state_dict(), path)
    with pytest.raises(ModelError, match="do not fit"):
        build_model("pspnet_resnet18", 3, backbone_weights=str(path))


def test_timm_imagenet_offline_says_what_to_download(tmp_path, monkeypatch):
    from seglab.models import backbones

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(backbones, "_cached_hf_file", lambda repo: None)
    with pytest.raises(ModelError) as info:
        build_model("pspnet_resnet18", 3, backbone_weights="imagenet")
    message = str(info.value)
    assert "offline mode (HF_HUB_OFFLINE) is on" in message  # said, not a failed probe
    assert "https://huggingface.co/timm/resnet18" in message
    assert "backbone_weights='/path/to/model.safetensors'" in message


def test_timm_imagenet_uses_the_hugging_face_cache(tmp_path, monkeypatch):
    from seglab.models import backbones

    torch.manual_seed(5)
    full = timm.create_model("resnet18").state_dict()
    cached = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in full.items()}, str(cached))
    monkeypatch.setattr(backbones, "_cached_hf_file", lambda repo: str(cached))
    monkeypatch.setattr(backbones, "_hub_reachable", lambda: pytest.fail("no network probe"))
    model = build_model("fcn_resnet18", 3, backbone_weights="imagenet")
    assert all(torch.equal(v, full[k]) for k, v in model.backbone.encoder.state_dict().items())


def test_vgg16_backbone_weights_from_local_file(tmp_path):
    from torchvision.models import vgg16

    torch.manual_seed(6)
    features = {f"features.{k}": v for k, v in vgg16(weights=None).features.state_dict().items()}
    path = tmp_path / "vgg16.pth"
    torch.save(features, path)
    model = build_model("fcn8s_vgg16", 3, backbone_weights=str(path), fc_channels=32)
    state = model.backbone.state_dict()
    assert all(torch.equal(v, features[f"features.{k}"]) for k, v in state.items())
