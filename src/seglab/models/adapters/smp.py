"""segmentation_models.pytorch (smp) models in the seglab registry: ``smp:<arch>/<encoder>``.

``build_model("smp:unetplusplus/resnet34", num_classes=11)`` builds smp's ``UnetPlusPlus`` on
its ``resnet34`` encoder (any smp encoder, ``tu-<timm name>`` included). The options are the
architecture's own keyword arguments (``decoder_channels``, ``encoder_depth``, ...) plus
``encoder_weights`` (``None`` by default: no download), ``in_chans`` and ``encoder_options``
(extra keyword arguments for the encoder, e.g. timm's ``dynamic_img_size``).

Any input size: most smp architectures need H and W divisible by the encoder's output stride
(32 for a 5-stage encoder). The adapter zero-pads the (normalised) input at the bottom and
right to the next multiple (PAN: also to at least 128x128) and crops the logits back, so the
model returns ``{"out"}`` at the input size like every seglab model. Zero is the dataset mean
after normalisation.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from huggingface_hub import try_to_load_from_cache
from torch import nn

from seglab.errors import ModelError
from seglab.models.adapters.optional import require
from seglab.models.backbones import _hub_reachable, _imagenet_overlay, timm_module
from seglab.models.heads.common import pad_to_multiple

INSTALL_HINT = "segmentation_models.pytorch is not installed: pip install seglab[smp]"

# smp's own arguments the adapter sets itself (the rest of an architecture's are options).
_SET_BY_ADAPTER = {"self", "encoder_name", "encoder_weights", "in_channels", "classes",
                   "activation", "aux_params"}
# Architectures whose decoder halves the deepest features once more than the encoder does.
_PAD_AT_LEAST = {"pan": 32, "dpt": 32}
# PAN's feature pyramid attention pools its stride-16 map three more times.
_MIN_SIZE = {"pan": 128}
# Patch-embedding (ViT) encoders need timm's dynamic image size to accept other sizes.
_DEFAULT_ENCODER_OPTIONS = {"dpt": {"dynamic_img_size": True}}

EXAMPLES = (
    "smp:unet/resnet34", "smp:unetplusplus/resnet34", "smp:fpn/efficientnet-b0",
    "smp:deeplabv3plus/resnet50", "smp:pspnet/resnet34", "smp:upernet/resnet50",
    "smp:segformer/resnet34", "smp:manet/resnet18", "smp:dpt/tu-vit_small_patch16_224",
)


def _smp() -> Any:
    return require("segmentation_models_pytorch", INSTALL_HINT)  # the optional smp extra


class SMPSegmentor(nn.Module):
    """An smp model seen the seglab way: ``backbone`` (smp's encoder), ``decoder``, ``head``.

    The smp model's children are registered here under seglab's names (so freeze policies and
    parameter globs read ``backbone.*``); its own ``forward`` still runs them.
    """

    def __init__(self, net: nn.Module, arch: str) -> None:
        super().__init__()
        self.backbone = net.encoder
        self.decoder = net.decoder
        self.head = net.segmentation_head
        # Held outside the module tree: its children are the modules registered above.
        self._net = (net,)
        divisible = getattr(net, "requires_divisible_input_shape", True)
        stride = int(getattr(net.encoder, "output_stride", 32))
        self.pad_multiple = max(stride, _PAD_AT_LEAST.get(arch, 1)) if divisible else 1
        self.min_size = _MIN_SIZE.get(arch, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = x.shape[-2:]
        out = self._net[0](pad_to_multiple(x, self.pad_multiple, (self.min_size,) * 2))
        return {"out": out[..., :h, :w]}

    def stages(self) -> list[list[nn.Module]]:
        """The encoder's top-level children, input to output (the units of ``last:N``)."""
        return _encoder_stages(self.backbone)


def _encoder_stages(encoder: nn.Module) -> list[list[nn.Module]]:
    # smp wraps timm encoders ("tu-") in `.model`; its own ResNets etc. are the network itself.
    inner = getattr(encoder, "model", None)
    root = inner if isinstance(inner, nn.Module) else encoder
    units = [[child] for child in root.children() if any(True for _ in child.parameters())]
    if not units:
        raise ModelError(f"smp encoder {type(encoder).__name__} has no parameters to freeze")
    # A stem made of several children (conv1, bn1) is one unit, like seglab's ResNets.
    names = [n for n, c in root.named_children() if any(True for _ in c.parameters())]
    if "layer1" in names:
        first = names.index("layer1")
        units = [[u[0] for u in units[:first]], *units[first:]]
    return units


def _arch_class(arch: str):
    smp = _smp()
    mapping = smp.MODEL_ARCHITECTURES_MAPPING
    if arch not in mapping:
        raise ModelError(f"unknown smp architecture {arch!r}; smp has: {', '.join(mapping)}")
    return mapping[arch]


def _check_encoder(encoder: str) -> None:
    smp = _smp()
    if encoder.startswith("tu-"):
        if not timm_module().is_model(encoder[3:]):
            raise ModelError(f"smp encoder {encoder!r}: {encoder[3:]!r} is not a timm model")
        return
    if encoder not in smp.encoders.get_encoder_names():
        raise ModelError(
            f"unknown smp encoder {encoder!r}: use one of smp.encoders.get_encoder_names() "
            "(resnet34, efficientnet-b0, mit_b0, ...) or tu-<any timm model>"
        )


def _json_default(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _weights_kwargs(encoder: str, weights: str | None) -> dict[str, Any]:
    """smp arguments that load ``weights`` into ``encoder``, or a clear ModelError offline."""
    if weights is None:
        return {"encoder_weights": None}
    if encoder.startswith("tu-"):
        if weights != "imagenet":
            raise ModelError(f"smp encoder {encoder}: encoder_weights must be None or "
                             f"'imagenet' (timm's default weights), got {weights!r}")
        overlay = _imagenet_overlay(encoder[3:])
        overlay.pop("pretrained")
        return {"encoder_weights": True, **overlay}
    settings = _smp().encoders.encoders[encoder]["pretrained_settings"]
    if weights not in settings:
        raise ModelError(f"smp encoder {encoder} has no weights {weights!r}; it has: "
                         f"{', '.join(settings) or 'none'} (or encoder_weights=None)")
    repo, revision = settings[weights]["repo_id"], settings[weights]["revision"]
    if not _hub_reachable():
        cached = try_to_load_from_cache(repo, "model.safetensors", revision=revision)
        if not isinstance(cached, str):
            raise ModelError(
                f"cannot download the {weights!r} weights of smp encoder {encoder}: "
                f"huggingface.co is not reachable (offline?). Run the same build once where "
                f"it is reachable (it fills the Hugging Face cache from {repo}), or build with "
                "encoder_weights=None."
            )
    return {"encoder_weights": weights}


def _build(arch: str, encoder: str, num_classes: int, options: dict[str, Any]) -> nn.Module:
    weights = options.pop("encoder_weights")
    in_chans = options.pop("in_chans")
    encoder_options = dict(_DEFAULT_ENCODER_OPTIONS.get(arch, {}))
    encoder_options.update(options.pop("encoder_options") or {})
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        raise ModelError(f"in_chans must be a positive integer, got {in_chans!r}")
    cls = _arch_class(arch)
    kwargs = {**options, **encoder_options, **_weights_kwargs(encoder, weights)}
    try:
        net = cls(encoder_name=encoder, in_channels=in_chans, classes=num_classes, **kwargs)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"smp:{arch}/{encoder}: smp could not build it "
                         f"({type(exc).__name__}: {str(exc)[:300]})") from exc
    return SMPSegmentor(net, arch)


def resolve(name: str) -> tuple[Any, dict[str, Any]]:
    """``(builder, registry metadata)`` for ``smp:<arch>/<encoder>`` (the family resolver)."""
    rest = name.removeprefix("smp:")
    arch, sep, encoder = rest.partition("/")
    if not sep or not arch or not encoder:
        raise ModelError(f"smp model name {name!r} must read smp:<arch>/<encoder>, "
                         "e.g. smp:unetplusplus/resnet34")
    arch = arch.lower()
    cls = _arch_class(arch)
    _check_encoder(encoder)
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter("num_classes", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("encoder_weights", kw, default=None),
        inspect.Parameter("in_chans", kw, default=3),
    ]
    for pname, p in inspect.signature(cls.__init__).parameters.items():
        if pname in _SET_BY_ADAPTER or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        params.append(inspect.Parameter(pname, kw, default=_json_default(p.default)))
    params.append(inspect.Parameter("encoder_options", kw, default=None))

    def builder(num_classes: int, **options: Any) -> nn.Module:
        return _build(arch, encoder, num_classes, options)

    builder.__signature__ = inspect.Signature(params)  # what the registry checks options by
    settings = {} if encoder.startswith("tu-") else (
        _smp().encoders.encoders[encoder]["pretrained_settings"])
    weights = ("imagenet",) if encoder.startswith("tu-") else tuple(settings)
    meta = {
        "family": "smp",
        "backbone": encoder,
        "description": f"segmentation_models.pytorch {cls.__name__} on {encoder}",
        "backbone_weights": weights,
        "paper": "segmentation_models.pytorch (Iakubovskii, 2019)",
    }
    return builder, meta
