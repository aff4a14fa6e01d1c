"""Freezing policies: MobileNetV3 block counting, BatchNorm kept in eval, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from seglab.errors import ModelError
from seglab.models import build_model
from seglab.models.freeze import apply_freeze, backbone_stages


def _trainable_backbone_prefixes(model, depth: int) -> set[str]:
    return {
        ".".join(n.split(".")[:depth])
        for n, p in model.named_parameters()
        if p.requires_grad and n.startswith("backbone.")
    }


@pytest.mark.parametrize(
    ("policy", "blocks"),
    [("last:1", {16}), ("last:2", {15, 16}), ("last:3", {14, 15, 16}), ("head", set()),
     ("backbone", set())],
)
def test_torchvision_mobilenetv3_counts_blocks_like_the_camvid_study(policy, blocks):
    model = build_model("lraspp_mobilenet_v3_large", 11)
    assert len(backbone_stages(model)) == 17  # features 0..16
    apply_freeze(model, policy)
    assert _trainable_backbone_prefixes(model, 2) == {f"backbone.{b}" for b in blocks}
    assert all(p.requires_grad for n, p in model.named_parameters()
               if n.startswith("classifier."))


def test_timm_mobilenetv3_has_the_same_17_units():
    model = build_model("lraspp_mobilenetv3", 11)
    assert len(backbone_stages(model)) == 17
    apply_freeze(model, "last:3")
    # blocks.5.1-2 are the last two 160-channel inverted residuals, blocks.6.0 the 1x1 conv.
    assert _trainable_backbone_prefixes(model, 5) == {
        "backbone.encoder.blocks.5.1", "backbone.encoder.blocks.5.2", "backbone.encoder.blocks.6.0"
    }


def test_resnet_last_n_counts_stages():
    model = build_model("deeplabv3_aspp_resnet18", 5, head_channels=16)
    apply_freeze(model, "last:2")
    assert _trainable_backbone_prefixes(model, 3) == {
        "backbone.encoder.layer3", "backbone.encoder.layer4"
    }
    apply_freeze(model, "last:5")
    assert all(p.requires_grad for p in model.parameters())


def test_frozen_batchnorm_stays_in_eval_through_train_and_copies():
    model = build_model("pspnet_resnet18", 4, head_channels=16)
    summary = apply_freeze(model, "head")
    assert summary.frozen_batchnorms == sum(
        isinstance(m, _BatchNorm) for n, m in model.named_modules() if n.startswith("backbone.")
    )
    for candidate in (model, copy.deepcopy(model)):
        candidate.train()
        bns = {n: m for n, m in candidate.named_modules() if isinstance(m, _BatchNorm)}
        assert all(m.training == (not n.startswith("backbone.")) for n, m in bns.items())
        stem_bn = candidate.backbone.encoder.bn1
        before = stem_bn.running_mean.clone()
        out = candidate(torch.randn(2, 3, 41, 43))
        assert torch.equal(stem_bn.running_mean, before)
        sum(v.mean() for v in out.values()).backward()
        assert stem_bn.weight.grad is None
        assert candidate.head.classifier.weight.grad is not None


def test_forward_pre_hook_guards_against_direct_training_flags():
    model = build_model("unet", 2, base_channels=4, depth=2)
    apply_freeze(model, "head")
    bn = model.backbone.inc[0][1]
    bn.training = True  # e.g. code that sets flags without calling train()
    before = bn.running_mean.clone()
    model(torch.randn(2, 3, 17, 19))
    assert not bn.training and torch.equal(bn.running_mean, before)


def test_reapplying_a_policy_releases_batchnorm():
    model = build_model("unet", 2, base_channels=4, depth=2)
    apply_freeze(model, "head")
    apply_freeze(model, "none")
    model.train()
    assert all(m.training for m in model.modules() if isinstance(m, _BatchNorm))
    bn = model.backbone.inc[0][1]
    before = bn.running_mean.clone()
    model(torch.randn(2, 3, 17, 19))
    assert not torch.equal(bn.running_mean, before)


def test_summary_counts():
    model = build_model("unet", 2, base_channels=4, depth=2)
    total = sum(p.numel() for p in model.parameters())
    backbone = sum(p.numel() for p in model.backbone.parameters())
    summary = apply_freeze(model, "freeze:backbone.*")
    assert (summary.total_params, summary.trainable_params) == (total, total - backbone)
    assert summary.frozen_params == backbone


@pytest.mark.parametrize(
    ("policy", "message"),
    [("last:x", "must be an integer"), ("last:6", "has 3 units, so N must be 0..3"),
     ("train:", "at least one name pattern"), ("train:nothing.*", "no parameter name matches"),
     ("bogus", "unknown freeze policy")],
)
def test_bad_policies_are_clear(policy, message):
    model = build_model("unet", 2, base_channels=4, depth=2)
    with pytest.raises(ModelError, match=message):
        apply_freeze(model, policy)


@pytest.mark.parametrize(
    ("encoder", "units"),
    [("resnet18d", 5), ("convnext_nano", 4), ("regnetx_002", 5), ("efficientnet_b0", 17),
     ("densenet121", 5)],
)
def test_any_timm_encoder_splits_into_units_covering_every_parameter(encoder, units):
    from seglab.models.backbones import TimmBackbone

    backbone = TimmBackbone(encoder)
    stages = backbone.stages()
    assert len(stages) == units
    ids = [id(p) for unit in stages for m in unit for p in m.parameters()]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in backbone.parameters()}


def test_pattern_policy_trains_only_matching_names():
    model = build_model("deeplabv3_resnet50", 4)
    apply_freeze(model, "pattern:backbone.layer4.*")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith("backbone.layer4.")}
    apply_freeze(model, "train:backbone.layer4.*, classifier.*")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters()
                         if n.startswith(("backbone.layer4.", "classifier."))}
