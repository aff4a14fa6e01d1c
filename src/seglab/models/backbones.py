"""timm encoders as segmentation backbones: multi-scale features with a chosen output stride."""

from __future__ import annotations

import os

import torch
from torch import nn

from seglab.errors import ModelError

# Short names users type -> timm model names.
ALIASES = {
    "mobilenetv2": "mobilenetv2_100",
    "mobilenetv3": "mobilenetv3_large_100",
    "mobilenetv3_large": "mobilenetv3_large_100",
    "mobilenetv3_small": "mobilenetv3_small_100",
}


def timm_name(name: str) -> str:
    """The timm model name for a backbone name or alias."""
    return ALIASES.get(name, name)


def _pretrained_source(timm_model: str) -> str:
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(timm_model)
    except Exception:  # pragma: no cover - old timm without the helper
        cfg = None
    if cfg is None:
        return f"the timm weights of {timm_model}"
    hub = getattr(cfg, "hf_hub_id", None)
    if hub:
        return f"https://huggingface.co/{hub} (file model.safetensors)"
    return getattr(cfg, "url", None) or f"the timm weights of {timm_model}"


class TimmBackbone(nn.Module):
    """A timm ``features_only`` encoder returning every stage's feature map, shallow to deep.

    ``weights``: ``None`` (random init), ``"imagenet"`` (timm's default pretrained weights,
    needs the internet or the Hugging Face cache) or a path to a local timm state dict file
    (``.safetensors``/``.pth``) of the same architecture.
    """

    def __init__(self, name: str, *, output_stride: int = 32, weights: str | None = None,
                 in_chans: int = 3) -> None:
        super().__init__()
        import timm

        if output_stride not in (8, 16, 32):
            raise ModelError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
        self.name = timm_name(name)
        if not timm.is_model(self.name):
            raise ModelError(
                f"unknown backbone {name!r}: not a timm model name (try resnet18, resnet50, "
                "mobilenetv2_100, mobilenetv3_large_100, or see timm.list_models())"
            )
        kwargs: dict = {"features_only": True, "in_chans": in_chans}
        if output_stride != 32:
            kwargs["output_stride"] = output_stride
        if weights is None:
            kwargs["pretrained"] = False
        elif weights == "imagenet":
            kwargs["pretrained"] = True
        elif os.path.isfile(weights):
            kwargs["pretrained"] = True
            kwargs["pretrained_cfg_overlay"] = {"file": os.fspath(weights)}
        else:
            raise ModelError(
                f"backbone_weights={weights!r}: expected 'imagenet' or a path to an existing "
                f"timm state dict file for {self.name}"
            )
        try:
            self.encoder = timm.create_model(self.name, **kwargs)
        except ModelError:
            raise
        except Exception as exc:
            if weights == "imagenet":
                raise ModelError(
                    f"loading ImageNet weights for backbone {self.name} failed "
                    f"({type(exc).__name__}: {str(exc)[:200]}). Without internet, download "
                    f"{_pretrained_source(self.name)} elsewhere and pass "
                    "backbone_weights='/path/to/model.safetensors'."
                ) from exc
            if weights is not None:
                raise ModelError(
                    f"backbone_weights file {weights} does not fit {self.name}: {exc}"
                ) from exc
            raise ModelError(f"cannot build backbone {self.name} "
                             f"(output_stride={output_stride}): {exc}") from exc
        info = self.encoder.feature_info
        self.channels: list[int] = list(info.channels())
        self.reductions: list[int] = list(info.reduction())
        self.output_stride = output_stride

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.encoder(x))

    def stages(self) -> list[list[nn.Module]]:
        """Module groups from input to output, the units ``last:N`` freezing counts.

        MobileNet/EfficientNet-style encoders: the stem, then every block (MobileNetV3-Large:
        stem + 15 inverted residuals + last 1x1 conv = 17 units, numbered 0..16 like
        torchvision's ``features``). Other encoders: one unit per feature stage.
        """
        enc = self.encoder
        if hasattr(enc, "blocks") and hasattr(enc, "conv_stem"):
            units: list[list[nn.Module]] = [[enc.conv_stem, enc.bn1]]
            for stage in enc.blocks:
                units.extend([block] for block in stage)
            return units
        boundaries = [f["module"] for f in enc.feature_info.info]
        units, current = [], []
        for child_name, child in enc.named_children():
            current.append(child)
            if child_name in boundaries or any(b.startswith(child_name + ".")
                                                for b in boundaries):
                units.append(current)
                current = []
        if current:
            units[-1].extend(current)
        return units
