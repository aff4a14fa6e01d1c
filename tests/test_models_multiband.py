"""Multi-band input (in_chans, per-band mean/std) and timm transformer backbones at any size."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from pydantic import ValidationError

from seglab.artifacts.pretrained import from_pretrained, save_pretrained
from seglab.config import DataConfig, Recipe
from seglab.data.classes import ClassMap
from seglab.data.transforms import normalize
from seglab.engine.module import SegmentationModule
from seglab.errors import ConfigError, ModelError
from seglab.models import build_model
from seglab.models.backbones import TimmBackbone
from seglab.models.freeze import apply_freeze

FOUR_BANDS = {
    "pspnet": {"backbone": "resnet18", "head_channels": 16, "aux": True},
    "unet_encoder": {"backbone": "mobilenetv3_small_100", "decoder_channels": [16, 8, 8, 8, 8]},
    "unet": {"base_channels": 4},
    "smp:unet/resnet18": {"decoder_channels": [16, 16, 8, 8, 8]},
    "hf:segformer": {"config": {"hidden_sizes": [8, 16, 24, 32],
                                "num_attention_heads": [1, 1, 1, 1], "depths": [1, 1, 1, 1],
                                "decoder_hidden_size": 16}},
}


@pytest.mark.parametrize("name", sorted(FOUR_BANDS))
def test_four_band_models_train_and_refuse_three_bands(name):
    if name.startswith("smp:"):
        pytest.importorskip("segmentation_models_pytorch")
    if name.startswith("hf:"):
        pytest.importorskip("transformers")
    model = build_model(name, 3, in_chans=4, **FOUR_BANDS[name]).train()
    assert model.seglab_spec["options"]["in_chans"] == 4
    out = model(torch.randn(2, 4, 41, 57))
    assert all(v.shape == (2, 3, 41, 57) for v in out.values())
    sum(v.square().mean() for v in out.values()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with pytest.raises((ModelError, RuntimeError), match="4-band|channels"):
        model.eval()(torch.randn(1, 3, 41, 57))


def test_normalize_takes_one_mean_and_std_per_band():
    images = torch.full((2, 4, 3, 5), 51, dtype=torch.uint8)
    images[:, 3] = 255
    mean, std = (0.2, 0.2, 0.2, 0.5), (0.1, 0.1, 0.1, 0.25)
    x = normalize(images, mean, std)
    assert torch.allclose(x[:, :3], torch.zeros(2, 3, 3, 5), atol=1e-5)
    assert torch.allclose(x[:, 3], torch.full((2, 3, 5), 2.0), atol=1e-5)
    with pytest.raises(ConfigError, match="4 channels but mean has 3 values"):
        normalize(images)  # ImageNet's RGB statistics
    assert normalize(images[:, :3]).shape == (2, 3, 3, 5)


def test_recipe_mean_std_any_length_but_matching():
    data = DataConfig(spec="folder:x", mean=[0.1] * 12, std=[0.2] * 12)
    assert len(data.mean) == 12
    assert DataConfig(spec="folder:x", mean=[0.5, 0.5, 0.5]).std is None  # ImageNet std
    with pytest.raises(ValidationError, match="13 values and data.std 12"):
        DataConfig(spec="folder:x", mean=[0.1] * 13, std=[0.2] * 12)
    with pytest.raises(ValidationError, match="give both data.mean and data.std"):
        DataConfig(spec="folder:x", mean=[0.1] * 4)
    with pytest.raises(ValidationError, match="must be > 0"):
        DataConfig(spec="folder:x", mean=[0.1] * 4, std=[0.2, 0.2, 0.0, 0.2])


def test_four_band_recipe_trains_one_epoch_through_the_engine(tmp_path):
    # The data layer reads RGB files today, so the 4-band batches come from tensors here.
    recipe = Recipe.from_dict({
        "data": {"spec": "folder:unused", "mean": [0.4, 0.4, 0.4, 0.3],
                 "std": [0.2, 0.2, 0.2, 0.1], "batch_size": 2},
        "model": {"name": "unet", "options": {"base_channels": 4, "in_chans": 4}},
    })
    classmap = ClassMap.from_dict({"names": ["a", "b"], "colors": [[0, 0, 0], [9, 9, 9]]})
    module = SegmentationModule(recipe.to_dict(), classmap.to_dict())
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 4, 24, 32), dtype=torch.uint8, generator=generator)
    masks = (images[:, 3] > 127).long()  # the fourth band decides the class
    loader = torch.utils.data.DataLoader(list(zip(images, masks, strict=True)), batch_size=2)
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)
    assert trainer.state.finished
    after = module.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        assert module.eval()(images)["out"].shape == (4, 2, 24, 32)


@pytest.mark.parametrize(("backbone", "last1", "size"), [
    ("vit_tiny_patch16_224", "backbone.encoder.model.blocks.11.*", (97, 131)),
    ("swin_tiny_patch4_window7_224", "backbone.encoder.layers_3.*", (49, 67)),
])
def test_transformer_backbones_at_any_size(backbone, last1, size):
    model = build_model("unet_encoder", 2, backbone=backbone,
                        decoder_channels=[16, 8, 8, 8, 8]).train()
    out = model(torch.randn(2, 3, *size))["out"]
    assert out.shape == (2, 2, *size)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    # Every encoder parameter (a ViT's pos_embed too) sits in a freezing unit.
    apply_freeze(model, "head")
    assert not any(p.requires_grad for p in model.backbone.parameters())
    apply_freeze(model, "last:1")
    import fnmatch

    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n in trainable if n.startswith("backbone.")} == {
        n for n, _ in model.named_parameters() if fnmatch.fnmatchcase(n, last1)}


def test_swin_features_are_channels_first_and_cropped_to_the_input():
    enc = TimmBackbone("swin_tiny_patch4_window7_224").eval()
    with torch.no_grad():
        features = enc(torch.randn(1, 3, 97, 131))
    assert [tuple(f.shape[1:]) for f in features] == [
        (96, 25, 33), (192, 13, 17), (384, 7, 9), (768, 4, 5)]


def test_transformer_backbone_round_trip_and_four_bands(tmp_path):
    model = build_model("fcn", 2, backbone="vit_tiny_patch16_224", output_stride=32,
                        head_channels=16, in_chans=4).eval()
    folder = save_pretrained(model, tmp_path / "m")
    loaded, _ = from_pretrained(folder)
    x = torch.randn(1, 4, 50, 70)
    with torch.no_grad():
        assert torch.equal(model(x)["out"], loaded(x)["out"])


def test_fixed_size_encoders_get_a_clear_error():
    enc = TimmBackbone("convit_tiny")
    assert len(enc(torch.randn(1, 3, 224, 224))) == len(enc.channels)
    with pytest.raises(ModelError, match="only runs at 224x224.*got 97x131"):
        enc(torch.randn(1, 3, 97, 131))
    window = TimmBackbone("gcvit_xxtiny")
    with pytest.raises(ModelError, match="cannot run at 97x131.*timm runs it at 224x224"):
        window(torch.randn(1, 3, 97, 131))
    with pytest.raises(ModelError, match="in_chans must be a positive integer"):
        TimmBackbone("resnet18", in_chans=0)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_four_band_model_exports_and_runs_back(tmp_path, fmt) -> None:
    from seglab.artifacts.pretrained import save_pretrained
    from seglab.artifacts.runtimes import OnnxSegmenter, TorchScriptSegmenter
    from seglab.export import export_model
    from seglab.models.registry import build_model

    classmap = ClassMap(("a", "b", "c"), ((0, 0, 0), (255, 0, 0), (0, 255, 0)))
    model = build_model("unet", 3, base_channels=4, in_chans=4)
    folder = save_pretrained(model, tmp_path / "model", classmap=classmap,
                             mean=(0.4, 0.4, 0.4, 0.5), std=(0.2, 0.2, 0.2, 0.3))
    out = tmp_path / f"m.{'onnx' if fmt == 'onnx' else 'pt'}"
    report = export_model(folder, fmt, out, input_size=(32, 48))
    assert report["parity"]["argmax_agreement"] == 1.0
    runtime = (OnnxSegmenter if fmt == "onnx" else TorchScriptSegmenter)(out)
    assert runtime(torch.randn(1, 4, 32, 48))["out"].shape == (1, 3, 32, 48)
    with pytest.raises(ModelError, match=r"expects a \[N, 4, H, W\] batch"):
        runtime(torch.randn(1, 3, 32, 48))
