"""smp: and hf: adapters: the model contract on tiny configs, names, weights, families, specs."""

from __future__ import annotations

import sys

import pytest
import torch
from model_mixin import ModelContract

from seglab.artifacts.pretrained import from_pretrained, save_pretrained
from seglab.errors import ModelError
from seglab.models import build_model, list_models, model_info, registry
from seglab.models.registry import rebuild_spec

pytest.importorskip("segmentation_models_pytorch")
pytest.importorskip("transformers")

SMP_RESNET = ("backbone.layer4.*",)
TINY_SEGFORMER = {"hidden_sizes": [8, 16, 24, 32], "num_attention_heads": [1, 1, 1, 1],
                  "depths": [1, 1, 1, 1], "decoder_hidden_size": 16}
TINY_MOBILEVIT = {"hidden_sizes": [16, 16, 16], "neck_hidden_sizes": [8, 8, 16, 16, 16, 32, 32],
                  "aspp_out_channels": 16}
TINY_UPERNET = {"backbone_config": {"model_type": "convnext", "hidden_sizes": [8, 8, 8, 8],
                                    "depths": [1, 1, 1, 1],
                                    "out_features": ["stage1", "stage2", "stage3", "stage4"]},
                "hidden_size": 16, "auxiliary_in_channels": 8}
TINY_BEIT = {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2,
             "intermediate_size": 37, "image_size": 32, "out_indices": [0, 1, 2, 3],
             "pool_scales": [1, 2], "auxiliary_channels": 8}

# name: (options that keep the test small, globs of the last backbone unit)
CASES: dict[str, tuple[dict, tuple[str, ...]]] = {
    "smp:unet/resnet18": ({"decoder_channels": [16, 16, 8, 8, 8]}, SMP_RESNET),
    "smp:unetplusplus/resnet18": ({"decoder_channels": [16, 16, 8, 8, 8]}, SMP_RESNET),
    "smp:upernet/resnet18": ({"decoder_channels": 32}, SMP_RESNET),
    "smp:fpn/tu-convnext_atto": ({"decoder_pyramid_channels": 32,
                                  "decoder_segmentation_channels": 32},
                                 ("backbone.model.stages_3.*",)),
    "hf:segformer": ({"config": TINY_SEGFORMER},
                     ("backbone.stages.3.*",)),
    "hf:mobilevit": ({"config": TINY_MOBILEVIT}, ("backbone.encoder.layer.4.*",)),
    "hf:upernet": ({"config": TINY_UPERNET},
                   ("backbone.encoder.stages.3.*", "backbone.hidden_states_norms.*")),
    "hf:beit": ({"config": TINY_BEIT}, ("backbone.layers.3.*",)),
}

for _name, (_options, _last1) in CASES.items():
    _slug = _name.replace(":", "_").replace("/", "_").replace("-", "_")
    _cls = type(f"TestAdapter_{_slug}", (ModelContract,),
                {"name": _name, "options": _options, "last1": _last1})
    globals()[_cls.__name__] = _cls


@pytest.mark.parametrize("name", ["smp:pspnet/resnet18", "smp:pan/resnet18",
                                  "smp:deeplabv3plus/resnet18", "smp:segformer/mit_b0",
                                  "smp:dpt/tu-vit_tiny_patch16_224"])
def test_smp_archs_that_need_divisible_sizes_return_the_input_size(name):
    # These pad to a multiple of their stride (32 for PAN and DPT) and crop back.
    model = build_model(name, 4).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 75, 101))
    assert set(out) == {"out"} and out["out"].shape == (1, 4, 75, 101)


def test_hf_dpt_pads_to_a_square_patch_grid():
    config = {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2,
              "intermediate_size": 37, "image_size": 32, "backbone_out_indices": [0, 1, 2, 3],
              "neck_hidden_sizes": [8, 16, 16, 16], "fusion_hidden_size": 16}
    model = build_model("hf:dpt", 2, config=config).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 37, 70))["out"].shape == (1, 2, 37, 70)


def test_smp_options_come_from_the_architecture_and_are_checked():
    info = model_info("smp:unetplusplus/resnet34")
    assert info.family == "smp" and info.backbone == "resnet34"
    assert {"encoder_weights", "in_chans", "decoder_channels", "encoder_depth"} <= set(
        info.options)
    assert info.defaults["encoder_weights"] is None and "imagenet" in info.backbone_weights
    with pytest.raises(ModelError, match="has no option 'decoder_chanels'"):
        build_model("smp:unet/resnet18", 3, decoder_chanels=[8])
    with pytest.raises(ModelError, match="unknown smp architecture 'unet3'"):
        build_model("smp:unet3/resnet18", 3)
    with pytest.raises(ModelError, match="unknown smp encoder 'resnet19'"):
        build_model("smp:unet/resnet19", 3)
    with pytest.raises(ModelError, match="must read smp:<arch>/<encoder>"):
        build_model("smp:unet", 3)


def test_smp_imagenet_offline_is_a_clear_error(monkeypatch):
    import huggingface_hub

    from seglab.models import backbones

    monkeypatch.setattr(backbones, "_hub_reachable", lambda host="huggingface.co": False)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    with pytest.raises(ModelError, match="not reachable.*encoder_weights=None"):
        build_model("smp:unet/resnet18", 3, encoder_weights="imagenet")
    with pytest.raises(ModelError, match="has no weights 'imagenet21k'"):
        build_model("smp:unet/resnet18", 3, encoder_weights="imagenet21k")


def test_missing_packages_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", None)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ModelError, match=r"pip install seglab\[smp\]"):
        build_model("smp:linknet/resnet18", 3)
    with pytest.raises(ModelError, match=r"pip install seglab\[hf\]"):
        build_model("hf:mobilevitv2", 3)


def test_models_list_shows_both_families_and_a_missing_one(monkeypatch):
    names = {i.name for i in list_models()}
    assert {"smp:unetplusplus/resnet34", "smp:segformer/resnet34", "hf:segformer",
            "hf:upernet"} <= names
    assert {i.family for i in list_models("hf")} == {"hf"}

    def missing(name):
        raise ModelError("needs pip install seglab[demo]")

    fam = registry._Family(missing, "demo:<x>", "a demo family", ("demo:a",))
    monkeypatch.setitem(registry._FAMILIES, "demo", fam)
    assert list_models("demo") == []  # every listed name builds
    rows = {row["prefix"]: row for row in registry.model_families()}
    assert rows["demo"]["unavailable"] == "needs pip install seglab[demo]"
    assert rows["smp"]["unavailable"] is None and rows["hf"]["pattern"] == "hf:<model type>"


def test_hf_unknown_type_and_reserved_config():
    with pytest.raises(ModelError, match="unknown Hugging Face model type 'segformerr'"):
        build_model("hf:segformerr", 3)
    with pytest.raises(ModelError, match="config may not set num_labels"):
        build_model("hf:segformer", 3, config={**TINY_SEGFORMER, "num_labels": 4})


def test_hf_checkpoint_folder_loads_weights_and_the_spec_rebuilds_without_it(tmp_path):
    from transformers import AutoConfig, SegformerForSemanticSegmentation

    config = AutoConfig.for_model("segformer", num_labels=5, **TINY_SEGFORMER)
    torch.manual_seed(1)
    SegformerForSemanticSegmentation(config).save_pretrained(tmp_path / "ckpt")
    source = SegformerForSemanticSegmentation.from_pretrained(tmp_path / "ckpt")
    model = build_model("hf:segformer", 3, checkpoint=str(tmp_path / "ckpt")).eval()
    ours = model.state_dict()
    theirs = {k.replace("segformer.", "backbone.", 1): v for k, v in source.state_dict().items()}
    encoder = [k for k in ours if k.startswith("backbone.")]
    assert encoder and all(torch.equal(ours[k], theirs[k]) for k in encoder)
    assert model.decode_head.classifier.out_channels == 3  # a fresh 3-class classifier
    spec = model.seglab_spec
    assert spec["options"]["config"]["hidden_sizes"] == [8, 16, 24, 32]
    # Rebuilt without the checkpoint (it may be gone): the same architecture.
    rebuilt = rebuild_spec(spec)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in ours.items()}
    folder = save_pretrained(model, tmp_path / "saved")
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    loaded, _ = from_pretrained(folder)
    reloaded = loaded.state_dict()
    assert all(torch.equal(value, reloaded[key]) for key, value in model.state_dict().items())
    x = torch.randn(1, 3, 40, 52)
    with torch.no_grad():  # same weights; the kernels may round differently between builds
        torch.testing.assert_close(model(x)["out"], loaded(x)["out"], rtol=1e-5, atol=1e-6)


def test_hf_checkpoint_of_another_type_is_refused(tmp_path):
    from transformers import AutoConfig

    AutoConfig.for_model("segformer", **TINY_SEGFORMER).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="is a 'segformer' model, not 'mobilevit'"):
        build_model("hf:mobilevit", 3, checkpoint=str(tmp_path))
    with pytest.raises(ModelError, match="cannot read checkpoint"):
        build_model("hf:segformer", 3, checkpoint=str(tmp_path / "nowhere"))
