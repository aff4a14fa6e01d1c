"""Freezing policies for fine-tuning, with frozen BatchNorm kept in eval mode.

Policies (strings, so recipes and the CLI can name them):

- ``none``: everything trainable.
- ``head`` (alias ``backbone``: "freeze the backbone"): the backbone frozen; the head,
  decoder and aux head trainable.
- ``last:N``: the last N backbone units trainable, the rest of the backbone frozen, the head
  trainable. Units are ResNet stages (stem, layer1..layer4) and, for MobileNet-style
  backbones, single blocks: MobileNetV3-Large has units 0..16 (stem, 15 inverted residuals,
  the final 1x1 conv), so ``last:1`` trains block 16, ``last:2`` blocks 15-16, ``last:3``
  blocks 14-16 (the CamVid study's sweep).
- ``train:GLOB[,GLOB...]`` (alias ``pattern:``): only parameters whose name matches a glob
  (``fnmatch``, e.g. ``backbone.layer4.*``) are trainable.
- ``freeze:GLOB[,GLOB...]``: parameters matching a glob are frozen, the rest trainable.

A BatchNorm layer whose parameters are all frozen is put in eval mode and kept there: its
``train()`` is overridden and a forward pre-hook re-asserts eval, so ``model.train()`` (as
Lightning calls every epoch) never resumes updating its running statistics.
:func:`convert_sync_batchnorm` (what ``trainer.sync_batchnorm`` uses) keeps that lock.
"""

from __future__ import annotations

import fnmatch
import types
from dataclasses import dataclass

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from seglab.errors import ModelError


@dataclass(frozen=True)
class FreezeSummary:
    """What a policy left trainable."""

    policy: str
    trainable_params: int
    total_params: int
    frozen_batchnorms: int

    @property
    def frozen_params(self) -> int:
        return self.total_params - self.trainable_params


def backbone_stages(model: nn.Module) -> list[list[nn.Module]]:
    """The backbone's units from input to output (what ``last:N`` counts)."""
    stages = getattr(model, "stages", None)
    if callable(stages):
        return stages()
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        raise ModelError(f"{type(model).__name__} has no backbone: use a train:/freeze: policy")
    children = dict(backbone.named_children())
    if "layer1" in children:  # torchvision ResNet inside IntermediateLayerGetter
        stem = [m for name, m in children.items() if not name.startswith("layer")]
        return [stem] + [[m] for name, m in children.items() if name.startswith("layer")]
    return [[m] for m in children.values()]  # torchvision MobileNetV3 `features`: one per block


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def _module_params(modules: list[nn.Module]) -> set[int]:
    return {id(p) for m in modules for p in m.parameters()}


def _frozen_ids(model: nn.Module, policy: str) -> set[int]:
    """ids of the parameters ``policy`` freezes."""
    named = list(model.named_parameters())
    kind, _, arg = policy.partition(":")
    if policy == "none":
        return set()
    if policy in ("head", "backbone"):
        stages = backbone_stages(model)
        return _module_params([m for unit in stages for m in unit])
    if kind == "last":
        stages = backbone_stages(model)
        try:
            n = int(arg)
        except ValueError:
            raise ModelError(f"freeze policy {policy!r}: N in last:N must be an integer") from None
        if not 0 <= n <= len(stages):
            raise ModelError(
                f"freeze policy {policy!r}: this backbone has {len(stages)} units, so N must be "
                f"0..{len(stages)}"
            )
        frozen_units = stages[: len(stages) - n]
        return _module_params([m for unit in frozen_units for m in unit])
    if kind in ("train", "pattern", "freeze"):
        globs = [g.strip() for g in arg.split(",") if g.strip()]
        if not globs:
            raise ModelError(f"freeze policy {policy!r} needs at least one name pattern")
        matched = {id(p) for name, p in named if any(fnmatch.fnmatchcase(name, g) for g in globs)}
        if not matched:
            raise ModelError(
                f"freeze policy {policy!r}: no parameter name matches (names look like "
                f"{named[0][0]!r}; see `seglab models show`)"
            )
        if kind == "freeze":
            return matched
        return {id(p) for _, p in named} - matched
    raise ModelError(
        f"unknown freeze policy {policy!r}: use none, head (alias backbone), last:N, "
        "train:GLOB or freeze:GLOB"
    )


def _frozen_bn_train(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


def _frozen_bn_pre_hook(module: nn.Module, args: tuple) -> None:
    module.training = False


def _release_batchnorms(model: nn.Module) -> None:
    # Found by identity rather than stored handles, so this also works on deep copies.
    for module in model.modules():
        if not isinstance(module, _BatchNorm):
            continue
        module.__dict__.pop("train", None)
        for key, hook in list(module._forward_pre_hooks.items()):
            if hook is _frozen_bn_pre_hook:
                del module._forward_pre_hooks[key]


def frozen_batchnorms(model: nn.Module) -> list[nn.Module]:
    """BatchNorm layers with parameters, all of them frozen."""
    return [
        m for m in model.modules()
        if isinstance(m, _BatchNorm)
        and any(True for _ in m.parameters())
        and not any(p.requires_grad for p in m.parameters())
    ]


def apply_freeze(model: nn.Module, policy: str = "none") -> FreezeSummary:
    """Set ``requires_grad`` per ``policy`` (see module docs); returns what stays trainable.

    Re-applying a policy replaces the previous one.
    """
    if not isinstance(policy, str):
        raise ModelError(f"freeze policy must be a string, got {policy!r}")
    policy = policy.strip()
    frozen = _frozen_ids(model, policy)
    for p in model.parameters():
        p.requires_grad_(id(p) not in frozen)
    _release_batchnorms(model)
    bns = frozen_batchnorms(model)
    for bn in bns:
        _lock_batchnorm(bn)
    trainable, total = count_parameters(model)
    return FreezeSummary(policy, trainable, total, len(bns))


def _lock_batchnorm(bn: nn.Module) -> None:
    """Keep ``bn`` in eval mode whatever ``train()`` is called with (see module docs)."""
    bn.train = types.MethodType(_frozen_bn_train, bn)
    if not any(hook is _frozen_bn_pre_hook for hook in bn._forward_pre_hooks.values()):
        bn.register_forward_pre_hook(_frozen_bn_pre_hook)
    bn.train(False)


def convert_sync_batchnorm(model: nn.Module, process_group: object = None) -> nn.Module:
    """``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` that keeps frozen BatchNorm frozen.

    The conversion builds new modules, losing the eval-mode lock :func:`apply_freeze` put on
    frozen layers (their parameters stay frozen: they are the same tensors). The lock is put
    back on each converted layer whose parameters are all frozen, so ``model.train()`` never
    resumes updating their running statistics. Returns the converted model (a new root when
    ``model`` itself is a BatchNorm layer).
    """
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group)
    for bn in frozen_batchnorms(converted):
        _lock_batchnorm(bn)
    return converted
