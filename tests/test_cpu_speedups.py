"""The exact CPU speed-ups: sliced wide convolutions and layout-keeping global pooling."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from seglab.errors import ConfigError
from seglab.models.cpu_speedups import (
    SLICE,
    WIDE_INPUT,
    LayoutKeepingAvgPool2d,
    SlicedConv2d,
    apply_cpu_speedups,
)

CL = torch.channels_last


def _wide_conv(dilation: int = 3, bias: bool = False) -> nn.Conv2d:
    torch.manual_seed(0)
    return nn.Conv2d(WIDE_INPUT, 8, 3, padding=dilation, dilation=dilation, bias=bias)


def _input(requires_grad: bool = True) -> torch.Tensor:
    torch.manual_seed(1)
    x = torch.randn(2, WIDE_INPUT, 7, 9).contiguous(memory_format=CL)
    return x.requires_grad_(requires_grad)


def _run(conv: nn.Module, x: torch.Tensor, bf16: bool):
    """Output, input gradient and weight gradient of one pass."""
    conv.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = conv(x)
    torch.manual_seed(2)
    out.float().backward(torch.randn(out.shape))
    return out.float(), x.grad.float(), conv.weight.grad.float()


def _relative_error(value: torch.Tensor, exact: torch.Tensor) -> float:
    return float((value - exact).norm() / exact.norm())


def test_swap_keeps_parameters_and_is_idempotent():
    model = nn.Sequential(_wide_conv(), nn.Conv2d(8, 8, 3), nn.AdaptiveAvgPool2d(1),
                          nn.AdaptiveAvgPool2d(2), nn.Conv2d(WIDE_INPUT, 4, 1))
    keys = list(model.state_dict())
    assert apply_cpu_speedups(model) == 2
    assert apply_cpu_speedups(model) == 0  # already swapped
    assert type(model[0]) is SlicedConv2d and isinstance(model[0], nn.Conv2d)
    assert type(model[1]) is nn.Conv2d  # narrow: left alone
    assert type(model[2]) is LayoutKeepingAvgPool2d
    assert type(model[3]) is nn.AdaptiveAvgPool2d  # not global: its gradient keeps the layout
    assert type(model[4]) is nn.Conv2d  # 1x1: fast as it is
    assert list(model.state_dict()) == keys
    assert type(copy.deepcopy(model)[0]) is SlicedConv2d


@pytest.mark.parametrize("bias", [False, True])
def test_sliced_bf16_is_as_accurate_as_the_plain_bf16_convolution(bias):
    plain = _wide_conv(bias=bias)
    sliced = copy.deepcopy(plain)
    apply_cpu_speedups(sliced)
    x = _input()
    exact = _run(plain, x, bf16=False)
    direct = _run(plain, x, bf16=True)
    ours = _run(sliced, x, bf16=True)
    assert ours[0].shape == exact[0].shape
    for name, value, reference, exact_value in zip(("out", "grad x", "grad w"), ours, direct,
                                                   exact, strict=True):
        ours_error = _relative_error(value, exact_value)
        plain_error = _relative_error(reference, exact_value)
        # bf16 rounding of each slice: about a bf16 ulp, and never far from the plain kernel's
        assert ours_error < max(3 * plain_error, 1e-2), (name, ours_error, plain_error)
    assert x.shape[1] // SLICE > 1  # the test really cuts the input into slices


def test_sliced_conv_is_the_plain_conv_in_fp32_and_bf16_weights_train():
    plain = _wide_conv(bias=True)
    sliced = copy.deepcopy(plain)
    apply_cpu_speedups(sliced)
    x = _input()
    for a, b in zip(_run(plain, x, bf16=False), _run(sliced, x, bf16=False), strict=True):
        assert torch.equal(a, b)  # fp32 takes the plain kernel: bit for bit
    out, _, grad_w = _run(sliced, x, bf16=True)
    assert sliced.weight.grad.dtype == torch.float32  # the fp32 master weight gets the gradient
    assert out.dtype == torch.float32 and torch.isfinite(grad_w).all()


def test_sliced_conv_steps_aside_when_traced():
    sliced = _wide_conv()
    apply_cpu_speedups(sliced)
    x = _input(requires_grad=False).bfloat16()
    traced = torch.jit.trace(sliced.bfloat16(), x, check_trace=False)
    convolutions = [n for n in traced.inlined_graph.nodes() if "convolution" in n.kind()]
    assert len(convolutions) == 1


def _pool_branch_gradient(pool: nn.Module) -> torch.Tensor:
    """The gradient a pooling branch (pool, 1x1 conv, as DeepLabV3's) hands to its input."""
    torch.manual_seed(3)
    leaf = torch.randn(2, 16, 5, 6).contiguous(memory_format=CL).requires_grad_()
    x = leaf * 1.0  # not a leaf: a leaf's .grad is restrided to the leaf's own layout
    seen: list[torch.Tensor] = []
    x.register_hook(seen.append)
    conv = nn.Conv2d(16, 4, 1).to(memory_format=CL)
    conv(pool(x)).sum().backward()
    return seen[0]


def test_global_pool_gradient_keeps_channels_last():
    kept = nn.AdaptiveAvgPool2d(1)
    apply_cpu_speedups(kept)
    expected = _pool_branch_gradient(nn.AdaptiveAvgPool2d(1))
    assert not expected.is_contiguous(memory_format=CL)  # torch's own layout: why the swap
    ours = _pool_branch_gradient(kept)
    assert ours.is_contiguous(memory_format=CL)
    assert torch.equal(ours, expected)


@pytest.mark.parametrize(("value", "swapped"), [("0", 0), ("off", 0), (" False ", 0),
                                                ("1", 2), ("on", 2), ("", 2)])
def test_the_environment_switch(monkeypatch, value, swapped):
    monkeypatch.setenv("SEGLAB_CPU_SPEEDUPS", value)
    model = nn.Sequential(_wide_conv(), nn.AdaptiveAvgPool2d(1))
    assert apply_cpu_speedups(model) == swapped
    assert (type(model[0]) is nn.Conv2d) == (swapped == 0)


def test_a_bad_switch_value_is_named(monkeypatch):
    monkeypatch.setenv("SEGLAB_CPU_SPEEDUPS", "fast")
    with pytest.raises(ConfigError, match="SEGLAB_CPU_SPEEDUPS='fast': use 0"):
        apply_cpu_speedups(nn.Sequential(_wide_conv()))


def test_switched_off_training_and_inference_keep_the_plain_layers(monkeypatch):
    from seglab.config import Recipe
    from seglab.engine.inference import predict_logits
    from seglab.engine.module import build_segmentation_model

    monkeypatch.setenv("SEGLAB_CPU_SPEEDUPS", "0")
    recipe = Recipe.from_dict({"data": {"spec": "folder:unused"},
                               "model": {"name": "deeplabv3_resnet50"}})
    model = build_segmentation_model(recipe, 3)
    assert not [layer for layer in model.modules() if type(layer) is SlicedConv2d]
    head = _WideHead().eval()
    predict_logits(head, torch.zeros(1, 3, 9, 11, dtype=torch.uint8), precision="fp32",
                   mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert type(head.head) is nn.Conv2d


def test_training_models_get_the_speedups():
    from seglab.config import Recipe
    from seglab.engine.module import build_segmentation_model

    recipe = Recipe.from_dict({"data": {"spec": "folder:unused"},
                               "model": {"name": "deeplabv3_resnet50"}})
    model = build_segmentation_model(recipe, 3)
    kinds = [type(layer) for layer in model.modules()]
    assert kinds.count(SlicedConv2d) == 3  # the ASPP branches at rates 12, 24, 36
    assert kinds.count(LayoutKeepingAvgPool2d) == 1  # ASPP's image pooling


class _WideHead(nn.Module):
    """A 1x1 stem to 2048 channels and a wide 3x3 classifier, as DeepLabV3's ASPP branch."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.stem = nn.Conv2d(3, WIDE_INPUT, 1)
        self.head = nn.Conv2d(WIDE_INPUT, 4, 3, padding=2, dilation=2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.head(torch.relu(self.stem(x)))}


def test_inference_gets_the_speedups_and_the_same_classes():
    from seglab.engine.inference import predict_logits

    images = torch.randint(0, 256, (1, 3, 9, 11), dtype=torch.uint8)
    norm = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    plain = _WideHead().eval()
    exact = predict_logits(copy.deepcopy(plain), images, precision="fp32", **norm)
    model = copy.deepcopy(plain)
    probs = predict_logits(model, images, precision="bf16", **norm)
    assert type(model.head) is SlicedConv2d
    assert (probs - exact).abs().max() < 0.05  # bf16 probabilities
    assert (probs.argmax(1) == exact.argmax(1)).float().mean() > 0.9
