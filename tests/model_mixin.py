"""The contract every registered model must meet, as a test mixin.

Subclass ``ModelContract`` with ``name`` (a registered model), ``options`` (small widths to
keep CPU tests fast) and ``last1`` (globs of the backbone parameters that ``last:1`` leaves
trainable, written out by hand so the freeze code is checked against an independent answer).
"""

from __future__ import annotations

import copy
import fnmatch
import json

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from seglab.artifacts.pretrained import from_pretrained, save_pretrained
from seglab.errors import ModelError
from seglab.models import build_model, model_info
from seglab.models.freeze import apply_freeze


def _batch(n: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, *size, generator=generator)


def _trainable_names(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _batchnorms(model: torch.nn.Module, prefix: str, inside: bool) -> list[_BatchNorm]:
    return [
        m for n, m in model.named_modules()
        if isinstance(m, _BatchNorm) and n.startswith(prefix) == inside
    ]


class ModelContract:
    name: str = ""
    options: dict = {}
    size: tuple[int, int] = (97, 131)  # odd on purpose: stride-2 layers round these sizes
    small: tuple[int, int] = (33, 47)  # for the checks that need no large input
    num_classes: int = 3
    last1: tuple[str, ...] = ()

    @pytest.fixture(scope="class")
    def model(self) -> torch.nn.Module:
        torch.manual_seed(0)
        return build_model(self.name, self.num_classes, **self.options)

    def expects_aux(self) -> bool:
        return bool(self.options.get("aux", model_info(self.name).defaults.get("aux", False)))

    def test_spec_is_json_safe_and_rebuilds(self, model):
        spec = json.loads(json.dumps(model.seglab_spec))
        assert spec["name"] == self.name and spec["num_classes"] == self.num_classes
        rebuilt = build_model(spec["name"], spec["num_classes"], **spec["options"])
        ours = {k: v.shape for k, v in model.state_dict().items()}
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == ours

    def test_train_forward_backward_at_odd_size(self, model):
        model.train()
        out = model(_batch(2, self.size))
        expected = {"out", "aux"} if self.expects_aux() else {"out"}
        assert set(out) == expected
        for value in out.values():
            assert value.shape == (2, self.num_classes, *self.size)
            assert torch.isfinite(value).all()
        sum(v.float().square().mean() for v in out.values()).backward()
        no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not no_grad, f"parameters unused in the forward pass: {no_grad[:5]}"
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        model.zero_grad(set_to_none=True)

    def test_eval_is_deterministic(self, model):
        model.eval()
        x = _batch(1, self.small, seed=1)
        with torch.no_grad():
            first, second = model(x), model(x)
        assert first["out"].shape == (1, self.num_classes, *self.small)
        assert torch.equal(first["out"], second["out"])

    def test_aux_switch(self):
        defaults = model_info(self.name).defaults
        if "aux" not in defaults:
            with pytest.raises(ModelError, match="no option 'aux'"):
                build_model(self.name, 5, **self.options, aux=True)
            return
        flipped = not self.expects_aux()
        other = build_model(self.name, 5, **{**self.options, "aux": flipped}).eval()
        with torch.no_grad():
            out = other(_batch(1, self.small))
        assert ("aux" in out) == flipped
        assert all(v.shape == (1, 5, *self.small) for v in out.values())

    def test_freeze_head_keeps_frozen_batchnorm_in_eval(self, model):
        m = copy.deepcopy(model)
        summary = apply_freeze(m, "head")
        names = {n for n, _ in m.named_parameters()}
        backbone = {n for n in names if n.startswith("backbone.")}
        assert backbone, "the model should expose its encoder as `backbone`"
        assert _trainable_names(m) == names - backbone
        assert summary.trainable_params == sum(
            p.numel() for n, p in m.named_parameters() if n not in backbone
        )
        m.train()
        frozen_bns = _batchnorms(m, "backbone.", inside=True)
        assert all(not bn.training for bn in frozen_bns if bn.weight is not None)
        assert all(bn.training for bn in _batchnorms(m, "backbone.", inside=False))
        before = [bn.running_mean.clone() for bn in frozen_bns if bn.running_mean is not None]
        m(_batch(2, self.small))
        after = [bn.running_mean for bn in frozen_bns if bn.running_mean is not None]
        assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))

    def test_freeze_last1_trains_only_the_last_backbone_unit(self, model):
        assert self.last1, "declare the globs of the last backbone unit"
        m = copy.deepcopy(model)
        apply_freeze(m, "last:1")
        names = [n for n, _ in m.named_parameters()]
        expected = {
            n for n in names
            if not n.startswith("backbone.") or any(fnmatch.fnmatchcase(n, g) for g in self.last1)
        }
        assert _trainable_names(m) == expected
        assert any(n.startswith("backbone.") for n in expected)

    def test_freeze_patterns_and_none(self, model):
        m = copy.deepcopy(model)
        apply_freeze(m, "train:" + ",".join(self.last1))
        trainable = _trainable_names(m)
        assert trainable
        assert all(any(fnmatch.fnmatchcase(n, g) for g in self.last1) for n in trainable)
        apply_freeze(m, "freeze:" + ",".join(self.last1))
        assert _trainable_names(m) == {n for n, _ in m.named_parameters()} - trainable
        apply_freeze(m, "none")
        assert _trainable_names(m) == {n for n, _ in m.named_parameters()}
        m.train()
        assert all(bn.training for bn in _batchnorms(m, "", inside=True))

    def test_save_and_load_round_trip(self, model, tmp_path):
        model.eval()
        folder = save_pretrained(model, tmp_path / "model", mean=(0.5, 0.5, 0.5))
        loaded, config = from_pretrained(folder)
        assert config["model"]["name"] == self.name
        assert config["normalization"]["mean"] == [0.5, 0.5, 0.5]
        x = _batch(1, self.small, seed=2)
        with torch.no_grad():
            assert torch.equal(model(x)["out"], loaded(x)["out"])
