"""torchvision's segmentation models with their COCO-with-VOC-labels weights.

Fine-tuning set-up (as in the CamVid and Cityscapes studies): load the 21-class pretrained
model, then replace only the last convolution of the classifier (and of the aux classifier)
for the user's class count; every other pretrained tensor is kept as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights, ResNet101_Weights
from torchvision.models import segmentation as tvseg
from torchvision.models.segmentation.fcn import FCNHead

from seglab.errors import ModelError
from seglab.models.registry import register_model
from seglab.models.weights import load_matching, named_or_file

VOC_CLASSES = 21  # the pretrained weights' class count (background + 20 VOC classes)
TV_AUX_WEIGHT = 0.5  # torchvision's reference recipe weighs the aux loss by 0.5


@dataclass(frozen=True)
class _TvModel:
    factory: Callable[..., nn.Module]
    coco_voc: Any  # torchvision WeightsEnum member
    backbone_imagenet: Any
    family: str
    backbone: str
    has_aux: bool


_MODELS: dict[str, _TvModel] = {
    "fcn_resnet50": _TvModel(
        tvseg.fcn_resnet50, tvseg.FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1,
        ResNet50_Weights.IMAGENET1K_V1, "fcn", "resnet50", True,
    ),
    "fcn_resnet101": _TvModel(
        tvseg.fcn_resnet101, tvseg.FCN_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1,
        ResNet101_Weights.IMAGENET1K_V1, "fcn", "resnet101", True,
    ),
    "deeplabv3_resnet50": _TvModel(
        tvseg.deeplabv3_resnet50, tvseg.DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1,
        ResNet50_Weights.IMAGENET1K_V1, "deeplabv3", "resnet50", True,
    ),
    "deeplabv3_resnet101": _TvModel(
        tvseg.deeplabv3_resnet101, tvseg.DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1,
        ResNet101_Weights.IMAGENET1K_V1, "deeplabv3", "resnet101", True,
    ),
    "deeplabv3_mobilenet_v3_large": _TvModel(
        tvseg.deeplabv3_mobilenet_v3_large,
        tvseg.DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1,
        MobileNet_V3_Large_Weights.IMAGENET1K_V1, "deeplabv3", "mobilenet_v3_large", True,
    ),
    "lraspp_mobilenet_v3_large": _TvModel(
        tvseg.lraspp_mobilenet_v3_large,
        tvseg.LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1,
        MobileNet_V3_Large_Weights.IMAGENET1K_V1, "lraspp", "mobilenet_v3_large", False,
    ),
}


def final_convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    """The class-predicting convolutions of a torchvision segmenter, by attribute path."""
    if isinstance(model, tvseg.LRASPP):
        return {
            "classifier.low_classifier": model.classifier.low_classifier,
            "classifier.high_classifier": model.classifier.high_classifier,
        }
    convs = {f"classifier.{len(model.classifier) - 1}": model.classifier[-1]}
    if getattr(model, "aux_classifier", None) is not None:
        convs[f"aux_classifier.{len(model.aux_classifier) - 1}"] = model.aux_classifier[-1]
    return convs


def _replace_final_convs(model: nn.Module, num_classes: int) -> None:
    for path, conv in final_convs(model).items():
        if conv.out_channels == num_classes:
            continue
        parent_path, _, attr = path.rpartition(".")
        parent = model.get_submodule(parent_path)
        fresh = nn.Conv2d(conv.in_channels, num_classes, conv.kernel_size,
                          bias=conv.bias is not None)
        if attr.isdigit():
            parent[int(attr)] = fresh
        else:
            setattr(parent, attr, fresh)


def _state_classes(state: dict[str, torch.Tensor], model: nn.Module, source: str) -> int:
    """The class count a state dict was trained for (from its classifier's last conv)."""
    key = next(iter(final_convs(model))) + ".weight"
    if key not in state:
        raise ModelError(
            f"weights from {source} do not fit this model: they lack the classifier tensor "
            f"{key!r} of a {type(model).__name__}"
        )
    return int(state[key].shape[0])


def _backbone_state(state: dict[str, torch.Tensor], backbone: str) -> dict[str, torch.Tensor]:
    """Map an ImageNet classifier's state dict onto the segmenter's backbone keys."""
    if backbone.startswith("resnet"):
        return {k: v for k, v in state.items() if not k.startswith("fc.")}
    prefix = "features."  # MobileNetV3: the segmenter's backbone is `features`, renumbered as is
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _model_from_state(spec: _TvModel, state: dict[str, torch.Tensor], source: str, *,
                      aux: bool) -> nn.Module:
    """The architecture ``state`` was saved from, holding its tensors (aux head added if asked).

    Built on the meta device and given the loaded tensors, so no weight is initialised only
    to be overwritten.
    """
    with torch.device("meta"):
        probe = spec.factory(weights=None, weights_backbone=None, num_classes=VOC_CLASSES,
                             aux_loss=spec.has_aux)
    state_classes = _state_classes(state, probe, source)
    state_aux = any(k.startswith("aux_classifier.") for k in state)
    with torch.device("meta"):
        model = spec.factory(weights=None, weights_backbone=None, num_classes=state_classes,
                             aux_loss=state_aux or (aux and spec.has_aux))
    load_matching(model, state, source=source, assign=True,
                  allow_missing=() if state_aux else ("aux_classifier.",))
    if getattr(model, "aux_classifier", None) is not None and not state_aux:
        # The weights have no aux head: a freshly initialised one, as torchvision builds it.
        model.aux_classifier = FCNHead(probe.aux_classifier[0].in_channels, state_classes)
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        raise ModelError(f"weights from {source} left tensors uninitialised")  # a bug if seen
    return model


def _build(
    name: str,
    num_classes: int,
    *,
    weights: str | None,
    backbone_weights: str | None,
    aux: bool,
) -> nn.Module:
    spec = _MODELS[name]
    if aux and not spec.has_aux:
        raise ModelError(f"model {name!r} has no auxiliary head; build it with aux=False")
    if weights is not None and backbone_weights is not None:
        raise ModelError(
            f"{name}: pass either weights= (whole model) or backbone_weights=, not both"
        )
    if weights is None:
        model = spec.factory(weights=None, weights_backbone=None, num_classes=num_classes,
                             aux_loss=aux)
        if backbone_weights is not None:
            state, source = named_or_file(
                backbone_weights, "imagenet", spec.backbone_imagenet.url,
                what=f"ImageNet weights of {spec.backbone}", option="backbone_weights",
            )
            load_matching(model.backbone, _backbone_state(state, spec.backbone), source=source)
    else:
        state, source = named_or_file(
            weights, "coco_voc", spec.coco_voc.url,
            what=f"{name} COCO-with-VOC-labels weights", option="weights",
        )
        model = _model_from_state(spec, state, source, aux=aux)
        if not aux:
            if hasattr(model, "aux_classifier"):
                model.aux_classifier = None
            if hasattr(model.backbone, "return_layers"):
                model.backbone.return_layers = {
                    k: v for k, v in model.backbone.return_layers.items() if v != "aux"
                }
        _replace_final_convs(model, num_classes)
    model.aux_weight = TV_AUX_WEIGHT if aux else None
    return model


def _make_builder(name: str) -> Callable[..., nn.Module]:
    def builder(
        num_classes: int,
        *,
        weights: str | None = None,
        backbone_weights: str | None = None,
        aux: bool = False,
    ) -> nn.Module:
        return _build(name, num_classes, weights=weights, backbone_weights=backbone_weights,
                      aux=aux)

    def builder_without_aux(
        num_classes: int, *, weights: str | None = None, backbone_weights: str | None = None
    ) -> nn.Module:
        return _build(name, num_classes, weights=weights, backbone_weights=backbone_weights,
                      aux=False)

    if not _MODELS[name].has_aux:  # LR-ASPP: no aux head, so no `aux` option
        builder = builder_without_aux

    builder.__name__ = f"build_{name}"
    builder.__doc__ = (f"torchvision {name}; weights='coco_voc' | path, "
                       "backbone_weights='imagenet' | path.")
    return builder


_PAPERS = {
    "fcn": "Long et al., Fully Convolutional Networks, CVPR 2015",
    "deeplabv3": "Chen et al., Rethinking Atrous Convolution (DeepLabV3), 2017",
    "lraspp": "Howard et al., Searching for MobileNetV3 (LR-ASPP), ICCV 2019",
}

for _name, _spec in _MODELS.items():
    register_model(
        _name,
        _make_builder(_name),
        family=_spec.family,
        backbone=_spec.backbone,
        description=f"torchvision {_name} (output stride 8, or 16 for MobileNetV3)",
        weights=("coco_voc",),
        backbone_weights=("imagenet",),
        paper=_PAPERS[_spec.family],
    )


def published_meta(name: str) -> dict[str, Any]:
    """torchvision's published figures for ``name`` (num_params, GFLOPS, file size in MB)."""
    meta = _MODELS[name].coco_voc.meta
    return {"num_params": meta["num_params"], "gflops": meta["_ops"],
            "file_size_mb": meta["_file_size"]}
