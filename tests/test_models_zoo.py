"""Every registered model passes the contract in ``model_mixin.ModelContract``."""

from __future__ import annotations

from model_mixin import ModelContract

from seglab.models import model_names

TV_RESNET = ("backbone.layer4.*",)
TV_MOBILENET = ("backbone.16.*",)
TIMM_RESNET = ("backbone.encoder.layer4.*",)
# MobileNet/EfficientNet-style timm encoders: the last unit is the last block of the last stage.
TIMM_BLOCK_6 = ("backbone.encoder.blocks.6.0.*",)  # MobileNetV2/V3-Large, EfficientNet-B0
TIMM_BLOCK_5 = ("backbone.encoder.blocks.5.0.*",)  # MobileNetV3-Small
VGG_BLOCK_5 = ("backbone.24.*", "backbone.26.*", "backbone.28.*")

SMALL_PSP = {"head_channels": 64}
SMALL_ASPP = {"head_channels": 32}
SMALL_OCR = {"head_channels": 64, "key_channels": 32}
SMALL_UNET_DECODER = {"decoder_channels": [32, 16, 16, 8, 8]}
SMALL_ENCDEC = {"decoder_channels": [32, 32, 16, 16, 8]}

# Output stride 8 ResNet-50/101 models are the slowest on CPU: a smaller (still odd) input.
HEAVY = ("fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101",
         "pspnet_resnet50", "pspnet_resnet101", "ocrnet_resnet50", "deeplabv3_aspp_resnet50")
HEAVY_SIZE = (49, 67)

# name: (options that keep the test small, globs of the last backbone unit)
CASES: dict[str, tuple[dict, tuple[str, ...]]] = {
    # torchvision models (no width options: the architecture is torchvision's)
    "fcn_resnet50": ({}, TV_RESNET),
    "fcn_resnet101": ({"aux": True}, TV_RESNET),
    "deeplabv3_resnet50": ({"aux": True}, TV_RESNET),
    "deeplabv3_resnet101": ({}, TV_RESNET),
    "deeplabv3_mobilenet_v3_large": ({"aux": True}, TV_MOBILENET),
    "lraspp_mobilenet_v3_large": ({}, TV_MOBILENET),
    # generic families, each on a different timm encoder ("any timm encoder")
    "pspnet": ({**SMALL_PSP, "backbone": "efficientnet_b0"}, TIMM_BLOCK_6),
    "deeplabv3_aspp": ({**SMALL_ASPP, "backbone": "mobilenetv3_small_100", "aux": True,
                        "atrous_rates": [1, 2, 4, 8]}, TIMM_BLOCK_5),
    "deeplabv3plus": ({**SMALL_ASPP, "backbone": "efficientnet_b0", "output_stride": 8},
                      TIMM_BLOCK_6),
    "fcn": ({"backbone": "resnet18", "output_stride": 16, "head_channels": 32}, TIMM_RESNET),
    "lraspp": ({"backbone": "mobilenetv3_small_100", "head_channels": 32}, TIMM_BLOCK_5),
    "ocrnet": ({**SMALL_OCR, "backbone": "mobilenetv3_small_100", "output_stride": 16},
               TIMM_BLOCK_5),
    "unet_encoder": ({**SMALL_UNET_DECODER, "backbone": "efficientnet_b0"}, TIMM_BLOCK_6),
    # presets
    "pspnet_resnet18": (SMALL_PSP, TIMM_RESNET),
    "pspnet_resnet50": ({**SMALL_PSP, "aux": False}, TIMM_RESNET),
    "pspnet_resnet101": ({**SMALL_PSP, "bins": [1, 2, 4]}, TIMM_RESNET),
    "pspnet_mobilenetv2": (SMALL_PSP, TIMM_BLOCK_6),
    "pspnet_mobilenetv3": (SMALL_PSP, TIMM_BLOCK_6),
    "deeplabv3_aspp_resnet18": (SMALL_ASPP, TIMM_RESNET),
    "deeplabv3_aspp_resnet50": ({**SMALL_ASPP, "output_stride": 16}, TIMM_RESNET),
    "deeplabv3_aspp_mobilenetv3": (SMALL_ASPP, TIMM_BLOCK_6),
    "deeplabv3plus_resnet18": (SMALL_ASPP, TIMM_RESNET),
    "deeplabv3plus_resnet50": ({**SMALL_ASPP, "aux": True}, TIMM_RESNET),
    "deeplabv3plus_mobilenetv2": (SMALL_ASPP, TIMM_BLOCK_6),
    "fcn_resnet18": ({"head_channels": 32}, TIMM_RESNET),
    "lraspp_mobilenetv3": ({}, TIMM_BLOCK_6),
    "lraspp_mobilenetv3_small": ({}, TIMM_BLOCK_5),
    "ocrnet_resnet18": (SMALL_OCR, TIMM_RESNET),
    "ocrnet_resnet50": ({**SMALL_OCR, "aux": False}, TIMM_RESNET),
    "ocrnet_mobilenetv3": (SMALL_OCR, TIMM_BLOCK_6),
    "unet_resnet18": (SMALL_UNET_DECODER, TIMM_RESNET),
    "unet_resnet34": (SMALL_UNET_DECODER, TIMM_RESNET),
    "unet_mobilenetv2": (SMALL_UNET_DECODER, TIMM_BLOCK_6),
    # from scratch
    "unet": ({"base_channels": 8}, ("backbone.downs.3.*",)),
    "unet_aspp": ({"base_channels": 8, "atrous_rates": [2, 4]}, ("backbone.downs.3.*",)),
    "resnet18_encdec": (SMALL_ENCDEC, TIMM_RESNET),
    "resnet34_encdec": (SMALL_ENCDEC, TIMM_RESNET),
    "fcn8s_vgg16": ({"fc_channels": 64}, VGG_BLOCK_5),
    "fcn16s_vgg16": ({"fc_channels": 64}, VGG_BLOCK_5),
    "fcn32s_vgg16": ({"fc_channels": 64}, VGG_BLOCK_5),
    # real-time architectures, from scratch
    "bisenetv2": ({"head_channels": 32, "aux": True}, ("backbone.semantic.s5.*",
                                                       "backbone.semantic.ce.*")),
    "ddrnet23_slim": ({"aux": True}, ("backbone.layer5.*", "backbone.layer5_high.*")),
    "ddrnet23": ({"head_channels": 16}, ("backbone.layer5.*", "backbone.layer5_high.*")),
    "fastscnn": ({"aux": True}, ("backbone.ppm.*",)),
    "enet": ({}, ("backbone.stage3.*",)),
    "cgnet": ({"n": 3}, ("backbone.down3.*", "backbone.stage3.*", "backbone.join3.*")),
    "pidnet_s": ({"aux": True, "head_channels": 16},
                 ("backbone.layer5.*", "backbone.layer5_p.*", "backbone.layer5_d.*",
                  "backbone.spp.*")),
    "stdc1": ({"aux": True}, ("backbone.stage5.*",)),
    "stdc2": ({"aux": True, "aux_stage": 5}, ("backbone.stage5.*",)),
}


def test_every_registered_model_is_covered():
    assert set(model_names()) == set(CASES), (
        f"missing from CASES: {sorted(set(model_names()) - set(CASES))}; "
        f"not registered: {sorted(set(CASES) - set(model_names()))}"
    )


for _name, (_options, _last1) in CASES.items():
    _attrs = {"name": _name, "options": _options, "last1": _last1}
    if _name in HEAVY:
        _attrs["size"] = HEAVY_SIZE
    _cls = type(f"TestModel_{_name}", (ModelContract,), _attrs)
    globals()[_cls.__name__] = _cls
