"""timm encoders as segmentation backbones: multi-scale features with a chosen output stride.

Transformer encoders (ViT, DeiT, Swin, ...) are built with timm's ``dynamic_img_size`` where
the model has it, the input is zero-padded to a multiple of the deepest stride and every
feature map cropped back to ``ceil(size / stride)``, so they run at any input size and the
heads see what a CNN would give them. An encoder timm can only run at its training size gets
a ModelError naming that size. ``in_chans`` other than 3 (multi-band imagery) is timm's own:
the stem is built for that many channels (ImageNet weights are adapted by timm).
"""

from __future__ import annotations

import math
import os
from typing import Any
from urllib.parse import urlsplit

import torch
from huggingface_hub import constants, get_session, try_to_load_from_cache
from torch import nn

from seglab.errors import ModelError
from seglab.models.heads.common import pad_to_multiple
from seglab.models.weights import load_matching, read_state_dict

# Short names users type -> timm model names.
ALIASES = {
    "mobilenetv2": "mobilenetv2_100",
    "mobilenetv3": "mobilenetv3_large_100",
    "mobilenetv3_large": "mobilenetv3_large_100",
    "mobilenetv3_small": "mobilenetv3_small_100",
}


def timm_module() -> Any:
    """The ``timm`` package, imported on first use."""
    # lazy: timm adds 0.7-0.9 s (this loaded 2-core machine) to `import seglab.models`, which
    # the torchvision models and loading their saved folders never need.
    import timm

    return timm


def timm_name(name: str) -> str:
    """The timm model name for a backbone name or alias."""
    return ALIASES.get(name, name)


def _hf_repo(timm_model: str) -> str | None:
    """The Hugging Face repo holding timm's default pretrained weights of ``timm_model``."""
    cfg = timm_module().models.get_pretrained_cfg(timm_model)
    return getattr(cfg, "hf_hub_id", None) if cfg is not None else None


def _cached_hf_file(repo: str) -> str | None:
    """A locally cached copy of ``repo``'s weights, if the Hugging Face cache has one."""
    for filename in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(repo, filename)
        if isinstance(path, str) and os.path.isfile(path):
            return path
    return None


def _hub_reachable() -> bool:
    """True when the Hugging Face Hub answers now; else False, the reason in ``_PROBE``.

    One quick request through huggingface_hub's own HTTP session, so its proxy settings
    (``HTTPS_PROXY``, ...), endpoint (``HF_ENDPOINT``) and offline mode apply, instead of its
    download retry loop (about half a minute when the network is down).
    """
    _PROBE.pop("problem", None)
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    if constants.HF_HUB_OFFLINE or flag in ("1", "ON", "YES", "TRUE"):
        _PROBE["problem"] = "offline mode (HF_HUB_OFFLINE) is on"
        return False
    try:
        get_session().head(constants.ENDPOINT, timeout=5)
    except Exception as exc:  # noqa: BLE001 - any transport error (httpx, requests, offline)
        proxy = next((os.environ[k] for k in _PROXY_VARIABLES if os.environ.get(k)), None)
        via = f" through the proxy {_without_password(proxy)}" if proxy else ""
        _PROBE["problem"] = (f"{constants.ENDPOINT} is not reachable{via} "
                             f"({type(exc).__name__}: {exc})")
        return False
    return True


def _without_password(url: str) -> str:
    """A proxy URL fit for an error message (``user:password@`` dropped)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    return parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")).geturl()


_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
_PROBE: dict[str, str] = {}  # why the last probe failed, for the error message


def _imagenet_overlay(timm_model: str) -> dict:
    """timm keyword arguments that load the ImageNet weights, or a clear ModelError."""
    repo = _hf_repo(timm_model)
    if repo is None:
        raise ModelError(f"timm has no pretrained weights for backbone {timm_model}")
    cached = _cached_hf_file(repo)
    if cached is not None:
        return {"pretrained": True, "pretrained_cfg_overlay": {"file": cached}}
    if not _hub_reachable():
        problem = _PROBE.get("problem", "the Hugging Face Hub is not reachable")
        raise ModelError(
            f"cannot download the ImageNet weights of backbone {timm_model}: {problem}. "
            f"Download https://huggingface.co/{repo}/resolve/main/model.safetensors elsewhere "
            "and pass backbone_weights='/path/to/model.safetensors', or set "
            "model.options.backbone_weights=null to start from scratch."
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
        timm = timm_module()
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
        if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
            raise ModelError(f"in_chans must be a positive integer, got {in_chans!r}")
        try:
            self.encoder = _create(self.name, kwargs)
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
        self.in_chans = in_chans
        # Swin-style encoders hand back channels-last maps.
        self.channels_last = str(getattr(self.encoder, "output_fmt", "NCHW")).endswith("NHWC")
        patch_embed = next((m for n, m in self.encoder.named_modules()
                            if n.endswith("patch_embed")), None)
        # Patch embeddings need sizes divisible by the patch (and by 2 per patch merge).
        self.pad_multiple = max(self.reductions) if patch_embed is not None else 1
        fixed = patch_embed is not None and getattr(patch_embed, "strict_img_size", False)
        self.fixed_size = tuple(patch_embed.img_size) if fixed else None

    def _load_file(self, path: str) -> None:
        """Load a timm classification (or features) state dict; the classifier is ignored."""
        state = read_state_dict(path)
        state = {k.removeprefix("module."): v for k, v in state.items()}
        own = self.encoder.state_dict()
        load_matching(self.encoder, {k: v for k, v in state.items() if k in own},
                      source=f"{path} (backbone {self.name})")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[-2:]
        if x.shape[-3] != self.in_chans:
            raise ModelError(f"backbone {self.name} was built for {self.in_chans}-band input "
                             f"(in_chans), got {x.shape[-3]} channels")
        if self.fixed_size is not None and (h, w) != self.fixed_size:
            raise ModelError(
                f"backbone {self.name} only runs at {self.fixed_size[0]}x{self.fixed_size[1]} "
                f"(timm has no dynamic image size for it), got {h}x{w}: resize or crop to "
                "that size, or choose an encoder that takes any size (convnets, ViT, Swin)"
            )
        x = pad_to_multiple(x, self.pad_multiple)
        try:
            features = list(self.encoder(x))
        except torch.OutOfMemoryError:
            raise
        except (AssertionError, RuntimeError) as exc:
            cfg = getattr(self.encoder, "pretrained_cfg", {})
            trained = tuple(cfg.get("input_size", ())[1:])
            if not cfg.get("fixed_input_size") or trained in ((), (x.shape[-2], x.shape[-1])):
                raise
            # Fixed-size and window-attention encoders fail deep inside with shape errors.
            raise ModelError(
                f"backbone {self.name} cannot run at {h}x{w} ({type(exc).__name__}: "
                f"{str(exc)[:160]}); timm runs it at {trained[0]}x{trained[1]}: resize or "
                "crop to that size, or choose an encoder that takes any size"
            ) from exc
        if self.channels_last:
            features = [f.permute(0, 3, 1, 2) for f in features]
        if tuple(x.shape[-2:]) != (h, w):  # drop what only saw padding
            features = [f[..., : math.ceil(h / r), : math.ceil(w / r)]
                        for f, r in zip(features, self.reductions, strict=True)]
        return features

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
        if not units:  # features from a wrapped model (ViT): one unit per block
            return split_by_blocks(enc)
        if current:
            units[-1].extend(current)
        return units


def _create(name: str, kwargs: dict) -> nn.Module:
    """``timm.create_model`` with ``dynamic_img_size`` where the model has that option."""
    timm = timm_module()
    try:
        return timm.create_model(name, dynamic_img_size=True, **kwargs)
    except TypeError as exc:
        if "dynamic_img_size" not in str(exc):
            raise
    return timm.create_model(name, **kwargs)


def split_by_blocks(module: nn.Module) -> list[list[nn.Module]]:
    """Units covering all of ``module``'s parameters, one per block of its block list.

    The block list is the ``ModuleList``/``Sequential`` of several entries holding the most
    parameters (ViT blocks, Swin/ConvNeXt stages): one unit per block; what comes before it
    (embeddings, stem) joins the first unit, what comes after (final norms) the last. A
    module with no block list is one unit.
    """
    lists = [(sum(p.numel() for p in m.parameters()), n) for n, m in module.named_modules()
             if isinstance(m, (nn.ModuleList, nn.Sequential)) and len(m) > 1]
    if not lists:
        return [[module]]
    path = max(lists, key=lambda t: t[0])[1]  # max keeps the first of equal sizes
    before: list[nn.Module] = []
    after: list[nn.Module] = []
    direct: list[nn.Parameter] = []  # held by the block list's ancestors (ViT's pos_embed)
    seen = False

    def visit(parent: nn.Module, prefix: str) -> None:
        # Registration order: the subtrees met after the block list go to `after`.
        nonlocal seen
        direct.extend(parent.parameters(recurse=False))
        for name, child in parent.named_children():
            full = f"{prefix}{name}"
            if full == path:
                seen = True
            elif path.startswith(full + "."):
                visit(child, full + ".")
            elif any(True for _ in child.parameters()):
                (after if seen else before).append(child)

    visit(module, "")
    if direct:
        before.insert(0, _ParameterView(direct))
    units = [[block] for block in module.get_submodule(path)]
    units[0] = before + units[0]
    units[-1] = units[-1] + after
    return units


class _ParameterView(nn.Module):
    """Parameters that belong to no child module (a ViT's position embedding), as a unit.

    Built on demand by ``split_by_blocks`` and never attached to the model, so the
    parameters stay registered (and saved) only where they live.
    """

    def __init__(self, params: list[nn.Parameter]) -> None:
        super().__init__()
        self.params = nn.ParameterList(params)
