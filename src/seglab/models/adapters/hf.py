"""Hugging Face transformers semantic-segmentation models in the registry: ``hf:<model type>``.

``build_model("hf:segformer", 11)`` builds ``SegformerForSemanticSegmentation`` from the model
type's default configuration (random weights, no download); ``config={...}`` overrides
configuration fields (tiny test models, other widths). ``checkpoint=`` names a local folder
or a model id already in the Hugging Face cache (never downloaded here): its configuration
and weights are loaded, with a fresh classifier when the class count differs. The model's
configuration is then recorded in ``model.seglab_spec``, so a saved model rebuilds without the
checkpoint. Logits (1/4 resolution for SegFormer) are upsampled to the input size; ViT-style
models (DPT, BEiT) get their input zero-padded to a multiple of the patch size and cropped back
(DPT on its own ViT reads the patch grid as a square, so it is padded to a square).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from seglab.errors import ModelError
from seglab.models.adapters.optional import require
from seglab.models.backbones import split_by_blocks
from seglab.models.heads.common import pad_to_multiple, resize_to

INSTALL_HINT = "Hugging Face transformers is not installed: pip install seglab[hf]"

# Model types whose head class transformers registers for semantic segmentation.
MODEL_TYPES = {
    "segformer": "SegformerForSemanticSegmentation",
    "upernet": "UperNetForSemanticSegmentation",
    "dpt": "DPTForSemanticSegmentation",
    "beit": "BeitForSemanticSegmentation",
    "data2vec-vision": "Data2VecVisionForSemanticSegmentation",
    "mobilevit": "MobileViTForSemanticSegmentation",
    "mobilevitv2": "MobileViTV2ForSemanticSegmentation",
    "mobilenet_v2": "MobileNetV2ForSemanticSegmentation",
}
# Patch-embedding models: input padded to a multiple of (patch size x this factor); DPT's
# fusion stage halves the patch grid once more.
_PATCH_FACTOR = {"dpt": 2, "beit": 1, "data2vec-vision": 1}
# Configuration fields whose value comes from seglab's own options, never from `config`.
_RESERVED = {"num_labels", "id2label", "label2id", "num_channels", "model_type",
             "transformers_version", "architectures", "_name_or_path", "torch_dtype", "dtype"}

EXAMPLES = ("hf:segformer", "hf:upernet", "hf:dpt", "hf:mobilevit", "hf:mobilevitv2")


def _transformers() -> Any:
    return require("transformers", INSTALL_HINT)  # the optional hf extra, on first use


class HFSegmentor(nn.Module):
    """A transformers segmentation model seen the seglab way: ``backbone`` + the rest.

    The transformers model's children are registered here, its encoder (``base_model_prefix``
    or ``backbone``) as ``backbone``; its own ``forward`` still runs them.
    """

    def __init__(self, net: nn.Module, model_type: str) -> None:
        super().__init__()
        for name, child in net.named_children():
            if name in (net.base_model_prefix, "backbone") and not hasattr(self, "backbone"):
                name = "backbone"
            self.add_module(name, child)
        if not hasattr(self, "backbone"):
            raise ModelError(f"hf:{model_type}: cannot tell its encoder from its head")
        self._net = (net,)  # outside the module tree: its children are registered above
        self.model_type = model_type
        patch = getattr(net.config, "patch_size", 1)
        patch = patch if isinstance(patch, int) else 1
        self.pad_multiple = patch * _PATCH_FACTOR[model_type] if model_type in _PATCH_FACTOR else 1
        # DPT on its own ViT reads the token grid as a square: pad the input to one.
        self.square = model_type == "dpt" and getattr(net.config, "backbone_config", 1) is None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.pad_multiple, (max(h, w),) * 2 if self.square else (h, w))
        out = self._net[0](pixel_values=x)
        logits = resize_to(out.logits, x.shape[-2:])
        return {"out": logits[..., :h, :w]}

    def stages(self) -> list[list[nn.Module]]:
        """Encoder units, input to output (the units of ``last:N`` freezing)."""
        return encoder_stages(self.backbone)


def encoder_stages(encoder: nn.Module) -> list[list[nn.Module]]:
    """A transformers encoder's units: one per block of its main block list.

    SegFormer's and ConvNeXt's four stages, ViT/BEiT layers, MobileViT layers; embeddings
    join the first unit and final norms the last (``backbones.split_by_blocks``).
    """
    return split_by_blocks(encoder)


def _config(model_type: str, overrides: dict[str, Any], checkpoint: str | None,
            num_classes: int, in_chans: int):
    transformers = _transformers()
    bad = sorted(set(overrides) & _RESERVED)
    if bad:
        raise ModelError(f"hf:{model_type}: config may not set {', '.join(bad)} (use "
                         "num_classes and in_chans)")
    try:
        if checkpoint is None:
            config = transformers.AutoConfig.for_model(model_type, **overrides)
        else:
            config = transformers.AutoConfig.from_pretrained(checkpoint, local_files_only=True,
                                                             **overrides)
    except (OSError, ValueError, TypeError) as exc:
        where = f"checkpoint {checkpoint!r}" if checkpoint else "its configuration"
        raise ModelError(f"hf:{model_type}: cannot read {where} ({str(exc)[:300]}). A "
                         "checkpoint is a local folder or a model id already in the Hugging "
                         "Face cache; nothing is downloaded.") from exc
    if config.model_type != model_type:
        raise ModelError(f"checkpoint {checkpoint} is a {config.model_type!r} model, not "
                         f"{model_type!r}: build hf:{config.model_type} instead")
    config.num_labels = num_classes
    if "use_auxiliary_head" not in overrides and hasattr(config, "use_auxiliary_head"):
        config.use_auxiliary_head = False  # its logits are only used by transformers' loss
    target = getattr(config, "backbone_config", None) or config
    target.num_channels = in_chans
    return config


def _build(model_type: str, num_classes: int, *, config: dict[str, Any] | None,
           checkpoint: str | None, in_chans: int) -> nn.Module:
    transformers = _transformers()
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        raise ModelError(f"in_chans must be a positive integer, got {in_chans!r}")
    if config is not None and not isinstance(config, dict):
        raise ModelError(f"hf:{model_type}: config must be a dict of fields, got {config!r}")
    cfg = _config(model_type, dict(config or {}), checkpoint, num_classes, in_chans)
    cls = getattr(transformers, MODEL_TYPES[model_type])
    try:
        if checkpoint is None:
            net = cls(cfg)
        else:
            net = cls.from_pretrained(checkpoint, config=cfg, local_files_only=True,
                                      ignore_mismatched_sizes=True)
    except Exception as exc:
        raise ModelError(f"hf:{model_type}: transformers could not build it "
                         f"({type(exc).__name__}: {str(exc)[:300]})") from exc
    model = HFSegmentor(net, model_type)
    if checkpoint is not None:
        diff = {k: v for k, v in cfg.to_diff_dict().items() if k not in _RESERVED}
        model.seglab_resolved_options = {"config": diff}
    return model


def resolve(name: str) -> tuple[Any, dict[str, Any]]:
    """``(builder, registry metadata)`` for ``hf:<model type>`` (the family resolver)."""
    model_type = name.removeprefix("hf:")
    if model_type not in MODEL_TYPES:
        raise ModelError(f"unknown Hugging Face model type {model_type!r} in {name!r}; "
                         f"seglab adapts: {', '.join('hf:' + t for t in MODEL_TYPES)}")
    _transformers()

    def builder(num_classes: int, *, config: dict[str, Any] | None = None,
                checkpoint: str | None = None, in_chans: int = 3) -> nn.Module:
        return _build(model_type, num_classes, config=config, checkpoint=checkpoint,
                      in_chans=in_chans)

    meta = {
        "family": "hf",
        "backbone": "per config",
        "description": f"transformers {MODEL_TYPES[model_type]} (config= fields, "
                       "checkpoint= local folder)",
        "paper": "Hugging Face transformers",
    }
    return builder, meta
