"""The real-time architectures match their papers' sizes, and their options behave.

Parameter counts are of the model as registered (aux heads off) at 19 classes, the Cityscapes
configuration the papers report; GFLOPs are seglab's convention (multiply-adds / 1e9, see
``seglab.models.profile``), counted on the meta device, so no memory or arithmetic is spent.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from seglab.config import Recipe
from seglab.data.classes import ClassMap
from seglab.engine.module import SegmentationModule
from seglab.errors import ModelError
from seglab.models import build_model
from seglab.models.freeze import count_parameters
from seglab.models.profile import build_on_meta, count_gmacs
from seglab.models.realtime.blocks import conv_bn
from seglab.models.realtime.stdc import STDCNet, detail_targets

# name: (published parameters in millions, source, relative tolerance)
PUBLISHED_PARAMS = {
    # later papers' comparison tables quote 3.4M (the BiSeNet V2 paper reports only FLOPs)
    "bisenetv2": (3.4, "comparison tables citing BiSeNet V2", 0.05),
    "ddrnet23_slim": (5.7, "DDRNet paper, Cityscapes table", 0.03),
    "ddrnet23": (20.1, "DDRNet paper, Cityscapes table", 0.03),
    "fastscnn": (1.11, "Fast-SCNN paper, section 3", 0.05),
    "enet": (0.37, "ENet paper, Table 3 (0.36M in later tables)", 0.05),
    "pidnet_s": (7.6, "PIDNet paper, Cityscapes table", 0.03),
    "cgnet": (0.5, "CGNet paper, abstract and Cityscapes table (CGNet_M3N21)", 0.05),
}

# name: (published GMACs, (H, W) of the paper's figure, source, relative tolerance)
PUBLISHED_GMACS = {
    "ddrnet23_slim": (36.3, (1024, 2048), "DDRNet paper, Cityscapes table", 0.03),
    "ddrnet23": (143.1, (1024, 2048), "DDRNet paper, Cityscapes table", 0.03),
    "pidnet_s": (47.6, (1024, 2048), "PIDNet paper, Cityscapes table", 0.03),
    # ENet's Table 3 counts 2 FLOPs per multiply-add (its SegNet row, 286 GFLOPs, is twice
    # SegNet's MACs): 3.83 GFLOPs at 640x360 is 1.915 GMACs. Ours counts convolutions only
    # (no PReLU, pooling, unpooling): 1.81, 5.5% below.
    "enet": (3.83 / 2, (360, 640), "ENet paper, Table 3", 0.10),
    # BiSeNet V2's Table 8: 21.15 GFLOPs at 512x1024. Ours is 24.6: the 1024-channel 3x3 head
    # at 1/8 alone is 9.7 of it, and the paper does not give the head's width; 20% allowed.
    "bisenetv2": (21.15, (512, 1024), "BiSeNet V2 paper, Table 8", 0.20),
}

# No verifiable parameter or FLOP count of STDC-Seg itself is published (its paper reports
# only speed on Cityscapes), so its STDC networks are checked as the paper's ImageNet
# classifiers: the stages seglab builds plus the paper's 1x1 conv to 1024, global pooling,
# FC 1024 and FC 1000, at 224x224. Ours: 8.43M / 0.804 and 12.46M / 1.436 GMACs.
# name: (modules in stages 3-5, published parameters (M), published GMACs, source)
PUBLISHED_IMAGENET = {
    "stdc1": ((2, 2, 2), 8.44, 0.813, "STDC paper, ImageNet table (STDC1, 224x224)"),
    "stdc2": ((4, 5, 3), 12.47, 1.446, "STDC paper, ImageNet table (STDC2, 224x224)"),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_parameter_count_matches_the_paper(name):
    published, source, tolerance = PUBLISHED_PARAMS[name]
    _, total = count_parameters(build_on_meta(name, 19))
    ours = total / 1e6
    assert abs(ours - published) <= tolerance * published, (
        f"{name}: {ours:.3f}M parameters, {source} says {published}M (+-{tolerance:.0%})"
    )


@pytest.mark.parametrize("name", sorted(PUBLISHED_GMACS))
def test_compute_matches_the_paper(name):
    published, size, source, tolerance = PUBLISHED_GMACS[name]
    ours = count_gmacs(build_on_meta(name, 19), size)
    assert abs(ours - published) <= tolerance * published, (
        f"{name}: {ours:.2f} GMACs at {size}, {source} says {published:.2f} (+-{tolerance:.0%})"
    )


class _ImageNetClassifier(nn.Module):
    """The STDC paper's classification network around seglab's STDC stages."""

    def __init__(self, modules_per_stage: tuple[int, int, int]) -> None:
        super().__init__()
        self.backbone = STDCNet(modules_per_stage)
        self.tail = nn.Sequential(conv_bn(1024, 1024, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 1000))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.backbone(x)[-1])


@pytest.mark.parametrize("name", sorted(PUBLISHED_IMAGENET))
def test_stdc_network_matches_the_papers_imagenet_size(name):
    modules, params, gmacs, source = PUBLISHED_IMAGENET[name]
    with torch.device("meta"):
        classifier = _ImageNetClassifier(modules).eval()
    ours_params = count_parameters(classifier)[1] / 1e6
    ours_gmacs = count_gmacs(classifier, (224, 224))
    assert abs(ours_params - params) <= 0.01 * params, f"{name}: {ours_params:.3f}M, {source}"
    # ours counts convolutions and FC layers only (no BN, ReLU, pooling): 1% below
    assert abs(ours_gmacs - gmacs) <= 0.02 * gmacs, f"{name}: {ours_gmacs:.3f} GMACs, {source}"
    # the segmentation network keeps exactly these stages
    seg = build_on_meta(name, 19).backbone.state_dict()
    assert {k: v.shape for k, v in seg.items()} == {
        k: v.shape for k, v in classifier.backbone.state_dict().items()
    }


def test_aux_heads_add_parameters_and_carry_the_papers_weights():
    expected = {"bisenetv2": 1.0, "ddrnet23_slim": 0.4, "fastscnn": 0.4, "pidnet_s": 0.4,
                "stdc1": 1.0}
    for name, weight in expected.items():
        plain, boosted = build_on_meta(name, 19), build_on_meta(name, 19, aux=True)
        assert plain.aux_weight is None and boosted.aux_weight == weight
        assert count_parameters(boosted)[1] > count_parameters(plain)[1]


@pytest.mark.parametrize("stage", [2, 3, 4, 5])
def test_bisenetv2_booster_on_every_semantic_stage(stage):
    model = build_model("bisenetv2", 4, aux=True, aux_stage=stage, head_channels=16).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 40, 72))
    assert out["aux"].shape == (1, 4, 40, 72)


def test_bisenetv2_rejects_an_unknown_booster_stage():
    with pytest.raises(ModelError, match="aux_stage"):
        build_model("bisenetv2", 4, aux=True, aux_stage=6)


def test_stdc_rejects_an_unknown_aux_stage():
    with pytest.raises(ModelError, match="aux_stage"):
        build_model("stdc1", 4, aux=True, aux_stage=3)


def test_stdc_detail_targets_mark_label_boundaries_and_skip_ignored_pixels():
    target = torch.zeros(1, 32, 32, dtype=torch.long)
    target[:, :, 16:] = 2  # a vertical boundary between columns 15 and 16
    target[:, :4, :4] = 255
    edges, valid = detail_targets(target, ignore_index=255)
    assert edges.shape == valid.shape == (1, 1, 32, 32)
    columns = edges[0, 0, 8:].amax(dim=0)  # rows clear of the ignored corner
    assert columns[12:20].eq(1).all()  # 4 pixels either side of the boundary
    assert columns[:12].eq(0).all() and columns[20:].eq(0).all()  # the image edge is none
    assert valid[0, 0, :4, :4].eq(0).all() and valid.sum() == 32 * 32 - 16


def test_stdc_detail_head_runs_in_training_only_and_gives_a_loss():
    torch.manual_seed(0)
    model = build_model("stdc1", 3, detail=True).train()
    x = torch.randn(2, 3, 40, 72)
    target = torch.randint(0, 3, (2, 40, 72))
    out = model(x)
    assert out["detail"].shape == (2, 1, 40, 72) and out["out"].shape == (2, 3, 40, 72)
    loss = model.extra_loss(out, target, ignore_index=255)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    loss.backward()
    assert all(p.grad is not None for p in model.detail_head.parameters())
    with torch.no_grad():
        evaluated = model.eval()(x)
    assert set(evaluated) == {"out"}
    assert model.extra_loss(evaluated, target, ignore_index=255) == 0
    # without the option nothing is built: the detail head costs no parameters
    plain = build_on_meta("stdc1", 3)
    assert plain.detail_head is None


def test_stdc_detail_loss_trains_through_the_engine(tmp_path):
    recipe = Recipe.from_dict({
        "data": {"spec": "folder:unused", "batch_size": 2},
        "model": {"name": "stdc1", "options": {"detail": True}},
    })
    classmap = ClassMap.from_dict({"names": ["a", "b"], "colors": [[0, 0, 0], [9, 9, 9]]})
    module = SegmentationModule(recipe.to_dict(), classmap.to_dict())
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 32, 48), dtype=torch.uint8, generator=generator)
    masks = (images[:, 0] > 127).long()
    loader = torch.utils.data.DataLoader(list(zip(images, masks, strict=True)), batch_size=2)
    head = module.model.detail_head
    before = [p.detach().clone() for p in head.parameters()]
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)
    # only the detail loss reaches the detail head: its weights moved, so the engine added it
    assert all(not torch.equal(b, p) for b, p in zip(before, head.parameters(), strict=True))


def test_padding_leaves_an_exact_multiple_untouched():
    """Sizes already a multiple of the stride are not padded: the crop is the whole map."""
    torch.manual_seed(0)
    model = build_model("fastscnn", 3).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out = model(x)["out"]
        direct = model.logits(x)["out"]
    # resized as the model resizes (Fast-SCNN's published code: align_corners=True)
    upsampled = torch.nn.functional.interpolate(direct, size=(64, 96), mode="bilinear",
                                                align_corners=model.align_corners)
    assert torch.equal(out, upsampled)


def test_cgnet_rejects_empty_stages():
    with pytest.raises(ModelError, match="m >= 1 and n >= 1"):
        build_model("cgnet", 4, n=0)


@pytest.mark.parametrize("name", ["fastscnn", "enet", "cgnet", "stdc1"])
def test_bf16_channels_last_training_step(name):
    """The training default (bf16 autocast, channels_last) runs forward and backward through
    the less common layers: max-unpool, PReLU, dilated depthwise convs."""
    model = build_model(name, 5).to(memory_format=torch.channels_last).train()
    x = torch.randn(2, 3, 48, 80).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)["out"]
    assert out.shape == (2, 5, 48, 80)
    out.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
