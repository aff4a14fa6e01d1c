"""save_pretrained / from_pretrained: the folder layout, round trip, and clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from seglab.artifacts.pretrained import CONFIG_FILE, WEIGHTS_FILE, from_pretrained, save_pretrained
from seglab.data.classes import ClassMap
from seglab.errors import ModelError
from seglab.models import build_model


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("unet", 3, base_channels=4, depth=2).eval()


def test_folder_holds_config_and_safetensors(model, tmp_path):
    classes = ClassMap.from_names(["sky", "road", "car"])
    folder = save_pretrained(model, tmp_path / "m", classmap=classes, std=[0.2, 0.3, 0.4],
                             extra={"metrics": {"miou": 0.5}})
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", CONFIG_FILE, WEIGHTS_FILE]
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config["model"] == {"name": "unet", "num_classes": 3,
                               "options": {"base_channels": 4, "depth": 2, "dropout": 0.0,
                                           "in_chans": 3}}
    assert config["classes"] == classes.to_dict()
    assert config["normalization"] == {"mean": [0.485, 0.456, 0.406], "std": [0.2, 0.3, 0.4]}
    assert config["metrics"] == {"miou": 0.5}
    assert config["seglab_version"]
    loaded, loaded_config = from_pretrained(folder)
    assert loaded_config == config
    assert ClassMap.from_dict(loaded_config["classes"]) == classes
    assert not loaded.training
    x = torch.randn(1, 3, 29, 35)
    with torch.no_grad():
        assert torch.equal(model(x)["out"], loaded(x)["out"])


def test_saving_again_replaces_the_folder_atomically(model, tmp_path):
    target = tmp_path / "m"
    save_pretrained(model, target)
    (target / "stale.txt").write_text("left from an older save")
    save_pretrained(model, target, mean=[0.1, 0.2, 0.3])
    assert not (target / "stale.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers
    assert from_pretrained(target)[1]["normalization"]["mean"] == [0.1, 0.2, 0.3]


def test_weight_options_are_not_fetched_again(tmp_path, monkeypatch):
    # A model built from a local weight file is rebuilt from the folder alone (file deleted).
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    source = tmp_path / "init.pth"
    torch.save(lraspp_mobilenet_v3_large(weights=None, weights_backbone=None).state_dict(), source)
    model = build_model("lraspp_mobilenet_v3_large", 4, weights=str(source)).eval()
    save_pretrained(model, tmp_path / "m")
    source.unlink()
    loaded, config = from_pretrained(tmp_path / "m")
    assert config["model"]["options"] == {"weights": str(source), "backbone_weights": None}
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])


def test_wrapped_models_are_saved_without_wrapper_prefixes(model, tmp_path):
    wrapped = torch.nn.DataParallel(model)
    folder = save_pretrained(wrapped, tmp_path / "m")
    loaded, _ = from_pretrained(folder)
    assert set(loaded.state_dict()) == set(model.state_dict())


def test_only_registry_models_can_be_saved(tmp_path):
    with pytest.raises(ModelError, match="seglab_spec"):
        save_pretrained(torch.nn.Conv2d(3, 3, 1), tmp_path / "m")


def test_class_count_must_match(model, tmp_path):
    with pytest.raises(ModelError, match="2 classes but the model predicts 3"):
        save_pretrained(model, tmp_path / "m", classmap=ClassMap.from_names(["a", "b"]))
    assert not (tmp_path / "m").exists()


def test_bad_normalisation_and_reserved_extra(model, tmp_path):
    with pytest.raises(ModelError, match="3 values"):
        save_pretrained(model, tmp_path / "m", mean=[0.5])
    with pytest.raises(ModelError, match="reserved"):
        save_pretrained(model, tmp_path / "m", extra={"model": "x"})
    with pytest.raises(ModelError, match="JSON-safe"):
        save_pretrained(model, tmp_path / "m", extra={"when": object()})
    assert not (tmp_path / "m").exists()


def test_missing_or_corrupt_folders_give_clear_errors(model, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="config.json is missing"):
        from_pretrained(tmp_path / "empty")

    folder = save_pretrained(model, tmp_path / "m")
    weights = (folder / WEIGHTS_FILE).read_bytes()
    (folder / WEIGHTS_FILE).write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ModelError, match="corrupt or truncated"):
        from_pretrained(folder)
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelError, match="no model.safetensors"):
        from_pretrained(folder)

    (folder / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        from_pretrained(folder)
    (folder / CONFIG_FILE).write_text(json.dumps({"model": {"name": "unet"}}))
    with pytest.raises(ModelError, match="no valid 'model' entry"):
        from_pretrained(folder)


def test_weights_of_another_architecture_are_rejected(model, tmp_path):
    folder = save_pretrained(model, tmp_path / "m")
    config = json.loads((folder / CONFIG_FILE).read_text())
    config["model"]["options"]["base_channels"] = 8
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ModelError, match="do not fit this model"):
        from_pretrained(folder)


def test_loaded_models_are_real_trainable_tensors(tmp_path):
    # from_pretrained builds on the meta device and adopts the file's tensors.
    model = build_model("pspnet_resnet18", 3, head_channels=8)
    loaded, _ = from_pretrained(save_pretrained(model, tmp_path / "m"))
    tensors = [*loaded.parameters(), *loaded.buffers()]
    assert not any(t.is_meta for t in tensors)
    assert all(p.requires_grad for p in loaded.parameters())
    loaded.train()
    out = loaded(torch.randn(2, 3, 33, 35))
    out["out"].mean().backward()
    assert loaded.head.classifier.weight.grad is not None
