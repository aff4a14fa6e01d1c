"""timm encoders as segmentation backbones: multi-scale features with a chosen output stride."""

from __future__ import annotations

import os
import socket

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


def _hf_repo(timm_model: str) -> str | None:
    """The Hugging Face repo holding timm's default pretrained weights of ``timm_model``."""
    import timm

    cfg = timm.models.get_pretrained_cfg(timm_model)
    return getattr(cfg, "hf_hub_id", None) if cfg is not None else None


def _cached_hf_file(repo: str) -> str | None:
    """A locally cached copy of ``repo``'s weights, if the Hugging Face cache has one."""
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(repo, filename)
        if isinstance(path, str) and os.path.isfile(path):
            return path
    return None


def _hub_reachable(host: str = "huggingface.co") -> bool:
    # One quick probe instead of huggingface_hub's retry loop (about a minute when offline).
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        return False
    return True


def _imagenet_overlay(timm_model: str) -> dict:
    """timm keyword arguments that load the ImageNet weights, or a clear ModelError."""
    repo = _hf_repo(timm_model)
    if repo is None:
        raise ModelError(f"timm has no pretrained weights for backbone {timm_model}")
    cached = _cached_hf_file(repo)
    if cached is not None:
        return {"pretrained": True, "pretrained_cfg_overlay": {"file": cached}}
    if not _hub_reachable():
        raise ModelError(
            f"cannot download the ImageNet weights of backbone {timm_model}: huggingface.co is "
            f"not reachable (offline?). Download "
            f"https://huggingface.co/{repo}/resolve/main/model.safetensors elsewhere and pass "
            "backbone_weights='/path/to/model.safetensors'."
        )
    return {"pretrained": True}


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
            kwargs.update(_imagenet_overlay(self.name))
        elif os.path.isfile(weights):
            kwargs["pretrained"] = False  # loaded below, through the no-pickle reader
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
                repo = _hf_repo(self.name)
                raise ModelError(
                    f"loading ImageNet weights for backbone {self.name} failed "
                    f"({type(exc).__name__}: {str(exc)[:200]}). Download "
                    f"https://huggingface.co/{repo}/resolve/main/model.safetensors elsewhere "
                    "and pass backbone_weights='/path/to/model.safetensors'."
                ) from exc
            if weights is not None:
                raise ModelError(
                    f"backbone_weights file {weights} does not fit {self.name}: {exc}"
                ) from exc
            raise ModelError(f"cannot build backbone {self.name} "
                             f"(output_stride={output_stride}): {exc}") from exc
        if weights is not None and os.path.isfile(weights):
            self._load_file(weights)
        info = self.encoder.feature_info
        self.channels: list[int] = list(info.channels())
        self.reductions: list[int] = list(info.reduction())
        self.output_stride = output_stride

    def _load_file(self, path: str) -> None:
        """Load a timm classification (or features) state dict; the classifier is ignored."""
        from seglab.models.weights import load_matching, read_state_dict

        state = read_state_dict(path)
        state = {k.removeprefix("module."): v for k, v in state.items()}
        own = self.encoder.state_dict()
        load_matching(self.encoder, {k: v for k, v in state.items() if k in own},
                      source=f"{path} (backbone {self.name})")

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
        # FeatureListNet flattens module paths ("stages.0" -> child "stages_0"); each unit ends
        # at the child that produces a feature map.
        boundaries = {f["module"].replace(".", "_") for f in enc.feature_info.info}
        units, current = [], []
        for child_name, child in enc.named_children():
            current.append(child)
            if child_name in boundaries:
                units.append(current)
                current = []
        if not units:  # unknown layout: every child is a unit
            return [[child] for child in enc.children()]
        if current:
            units[-1].extend(current)
        return units
