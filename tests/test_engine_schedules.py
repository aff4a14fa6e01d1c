"""Optimizer parameter groups and per-iteration learning-rate schedules."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from seglab.config import OptimConfig, ScheduleConfig
from seglab.engine.schedules import (
    IterationSchedule,
    build_optimizer,
    param_groups,
    schedule_factor,
)


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.classifier = nn.Conv2d(4, 2, 1)


def _lrs(name: str, steps: int = 10, **kw) -> list[float]:
    cfg = ScheduleConfig(name=name, **kw)
    return [schedule_factor(cfg, t, steps, 2, min_ratio=0.0) for t in range(steps + 1)]


def test_poly_cosine_constant_shapes() -> None:
    poly = _lrs("poly", power=0.9)
    assert poly[0] == 1.0 and poly[-1] == 0.0
    assert poly[5] == pytest.approx(0.5**0.9)
    assert all(a > b for a, b in zip(poly, poly[1:], strict=False))
    cosine = _lrs("cosine")
    assert cosine[5] == pytest.approx(0.5) and cosine[-1] == pytest.approx(0.0)
    assert _lrs("constant") == [1.0] * 11


def test_step_schedule_counts_epochs() -> None:
    # 2 iterations per epoch, decay x0.1 every 2 epochs = every 4 iterations.
    lrs = _lrs("step", step_size=2, gamma=0.1)
    assert lrs[:4] == [1.0] * 4
    assert lrs[4] == pytest.approx(0.1) and lrs[8] == pytest.approx(0.01)


def test_onecycle_rises_then_falls() -> None:
    lrs = _lrs("onecycle", steps=100, pct_start=0.3)
    assert lrs[0] == pytest.approx(1 / 25)
    assert max(lrs) == pytest.approx(1.0) and lrs.index(max(lrs)) == 30
    assert lrs[-1] == pytest.approx(1 / 25e4)


def test_linear_warmup_and_min_lr() -> None:
    cfg = ScheduleConfig(name="constant", warmup_iters=4, warmup_factor=0.2)
    factors = [schedule_factor(cfg, t, 10, 5, 0.0) for t in range(6)]
    assert factors == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    poly = ScheduleConfig(name="poly", min_lr=0.001)
    assert schedule_factor(poly, 10, 10, 5, min_ratio=0.1) == pytest.approx(0.1)


def test_head_lr_multiplier_and_no_decay_groups() -> None:
    model = _Toy()
    groups = param_groups(model, OptimConfig(lr=0.01, weight_decay=1e-4, head_lr_mult=10))
    by_lr: dict[float, int] = {}
    for g in groups:
        by_lr[g["lr"]] = by_lr.get(g["lr"], 0) + len(g["params"])
        if all(p.ndim <= 1 for p in g["params"]):
            assert g["weight_decay"] == 0.0
    assert by_lr == {0.01: 4, 0.1: 2}  # conv w+b, bn w+b | classifier w+b
    # Frozen parameters are left out.
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    groups = param_groups(model, OptimConfig(lr=0.01, head_lr_mult=10))
    assert sum(len(g["params"]) for g in groups) == 2


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop"])
def test_build_optimizer_kinds(name: str) -> None:
    opt = build_optimizer(_Toy(), OptimConfig(name=name, lr=0.05))
    assert type(opt).__name__.lower() == name
    assert all(g["lr"] == 0.05 for g in opt.param_groups)


def test_iteration_schedule_steps_and_state_is_plain_data(tmp_path) -> None:
    model = _Toy()
    opt = build_optimizer(model, OptimConfig(lr=0.1, head_lr_mult=2))
    sched = IterationSchedule(opt, ScheduleConfig(name="poly", power=1.0), 10, 5, base_lr=0.1)
    seen = []
    for _ in range(5):
        opt.step()
        sched.step()
        seen.append([g["lr"] for g in opt.param_groups])
    assert seen[-1][0] == pytest.approx(0.1 * 0.5)
    assert seen[-1][-1] == pytest.approx(0.2 * 0.5)  # head group keeps its multiplier
    # A time budget may shorten the schedule mid-way.
    sched.total_steps = 6
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0)
    path = tmp_path / "s.pt"
    torch.save(sched.state_dict(), path)
    state = torch.load(path, weights_only=True)
    again = IterationSchedule(opt, ScheduleConfig(name="poly", power=1.0), 10, 5, base_lr=0.1)
    again.load_state_dict(state)
    assert again.total_steps == 6 and again.last_epoch == 6
    assert not math.isnan(again.get_last_lr()[0])


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_fused_kernels_on_cpu_match_the_per_tensor_update(name: str) -> None:
    # (a toy without BatchNorm: a bias right before BN gets gradients at rounding level,
    # which Adam's normalisation turns into full-size steps of either sign)
    torch.manual_seed(0)
    fused_model, plain_model = _Toy(), _Toy()
    fused_model.backbone[1] = plain_model.backbone[1] = nn.ReLU()
    plain_model.load_state_dict(fused_model.state_dict())
    cfg = OptimConfig(name=name, lr=0.05, momentum=0.9, weight_decay=1e-3)
    fused = build_optimizer(fused_model, cfg)
    assert fused.defaults["fused"] is True
    settings = {**fused.defaults, "fused": None}
    settings.pop("decoupled_weight_decay", None)  # AdamW sets it itself
    plain = type(fused)(param_groups(plain_model, cfg), **settings)
    x = torch.randn(2, 3, 8, 8)
    for _ in range(3):
        for model, opt in ((fused_model, fused), (plain_model, plain)):
            opt.zero_grad()
            (model.classifier(model.backbone(x)) - 1).square().mean().backward()
            opt.step()
    for a, b in zip(fused_model.parameters(), plain_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
