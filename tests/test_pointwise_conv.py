"""The pointwise convolution: a wide 1x1 convolution's weight gradient as one MKL product in fp32
training with AVX2 kernels (forced both ways here; which way runs never depends on the CPU)."""

from __future__ import annotations

import copy

import pytest
import torch
from conv_passes import train_pass
from torch import nn

from seglab.models import cpu_speedups
from seglab.models.cpu_speedups import POINTWISE_MIN_PRODUCT, PointwiseConv2d, apply_cpu_speedups

CL = torch.channels_last


def _conv(cin: int = 256, cout: int = 1024, bias: bool = False) -> nn.Conv2d:
    torch.manual_seed(0)
    return nn.Conv2d(cin, cout, 1, bias=bias)


def _input(cin: int = 256, layout=CL) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, cin, 12, 10).contiguous(memory_format=layout)


def _counting(monkeypatch, on: bool = True) -> list[int]:
    """Counts the pointwise convolutions run (the choice made, not its speed), with MKL's
    weight gradient forced ``on`` or off whatever this CPU runs."""
    monkeypatch.setattr(cpu_speedups, "pointwise_weight_grad_by_mkl", lambda: on)
    calls: list[int] = []
    original = cpu_speedups._PointwiseConvolution.apply
    monkeypatch.setattr(cpu_speedups._PointwiseConvolution, "apply",
                        lambda *a: calls.append(1) or original(*a))
    return calls


def test_wide_stride1_pointwise_convolutions_are_swapped_others_kept():
    model = nn.Sequential(_conv(), _conv(256, 512), nn.Conv2d(1024, 256, 1, stride=2),
                          nn.Conv2d(256, 512, 3, padding=1), nn.Conv2d(1024, 1024, 1, groups=4))
    keys = list(model.state_dict())
    assert 256 * 1024 == POINTWISE_MIN_PRODUCT
    assert apply_cpu_speedups(model) == 2  # the 1x1 and the Winograd 3x3
    assert apply_cpu_speedups(model) == 0
    assert type(model[0]) is PointwiseConv2d and isinstance(model[0], nn.Conv2d)
    assert [type(layer) for layer in model[1:3]] == [nn.Conv2d, nn.Conv2d]  # narrow, strided
    assert type(model[4]) is nn.Conv2d  # grouped
    assert list(model.state_dict()) == keys
    assert type(copy.deepcopy(model)[0]) is PointwiseConv2d


@pytest.mark.parametrize("bias", [False, True])
def test_forced_on_it_trains_the_same_convolution(monkeypatch, bias):
    plain = _conv(bias=bias)
    ours = copy.deepcopy(plain)
    apply_cpu_speedups(ours)
    calls = _counting(monkeypatch)
    x = _input()
    for name, value, exact in zip(("output", "input grad", "weight grad", "bias grad"),
                                  train_pass(ours, x), train_pass(plain, x), strict=True):
        torch.testing.assert_close(value, exact, rtol=1e-5, atol=1e-4, msg=name)
    assert calls == [1]
    assert ours.weight.grad.shape == plain.weight.grad.shape


def test_forced_off_it_is_the_plain_kernel_bit_for_bit(monkeypatch):
    plain = _conv(bias=True)
    ours = copy.deepcopy(plain)
    apply_cpu_speedups(ours)
    calls = _counting(monkeypatch, on=False)
    for value, exact in zip(train_pass(ours, _input()), train_pass(plain, _input()),
                            strict=True):
        assert torch.equal(value, exact)
    assert not calls


@pytest.mark.parametrize("case", ["NCHW input", "inference", "frozen weights", "bf16",
                                  "traced"])
def test_the_plain_kernel_where_the_product_does_not_apply(monkeypatch, case):
    conv = _conv()
    apply_cpu_speedups(conv)
    calls = _counting(monkeypatch)
    x = _input().requires_grad_()
    if case == "NCHW input":
        conv(_input(layout=torch.contiguous_format).requires_grad_())  # its view would copy
    elif case == "inference":
        with torch.no_grad():
            conv(x)
    elif case == "frozen weights":
        conv.requires_grad_(False)
        conv(x).sum().backward()  # only the input's gradient: oneDNN's, as before
    elif case == "bf16":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            conv(x)
    else:
        traced = torch.jit.trace(conv, x, check_trace=False)
        assert [n for n in traced.inlined_graph.nodes() if "convolution" in n.kind()]
    assert not calls


@pytest.mark.parametrize("capability", ["AVX2", "AVX512", "DEFAULT"])
def test_mkl_weight_gradient_follows_the_kernels_torch_runs(monkeypatch, capability):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert cpu_speedups.pointwise_weight_grad_by_mkl() == (capability == "AVX2")
    conv = _conv()
    apply_cpu_speedups(conv)
    calls: list[int] = []
    original = cpu_speedups._PointwiseConvolution.apply
    monkeypatch.setattr(cpu_speedups._PointwiseConvolution, "apply",
                        lambda *a: calls.append(1) or original(*a))
    conv(_input().requires_grad_())
    assert bool(calls) == (capability == "AVX2")


def test_deeplabv3_wide_pointwise_layers_are_swapped():
    from seglab.config import Recipe
    from seglab.engine.module import build_segmentation_model

    recipe = Recipe.from_dict({"data": {"spec": "folder:unused"},
                               "model": {"name": "deeplabv3_resnet50"}})
    model = build_segmentation_model(recipe, 3)
    swapped = [name for name, layer in model.named_modules()
               if type(layer) is PointwiseConv2d]
    assert "backbone.layer4.0.downsample.0" in swapped
    assert "classifier.0.convs.0.0" in swapped and "classifier.0.project.0" in swapped
    assert not any(name.startswith(("backbone.layer1", "backbone.layer2")) for name in swapped)
    assert "backbone.layer3.0.conv1" not in swapped  # 512 -> 256: below the threshold
    # layer3: 6 bottlenecks' conv3, 5 conv1 and the first one's (unstrided) downsample; layer4:
    # 3 conv1, 3 conv3 and 1 downsample; ASPP: the 1x1 branch, the pooling branch, the projection
    assert len(swapped) == (6 + 5 + 1) + (3 + 3 + 1) + 3
