"""The fp32 tap convolution: dilated convolutions that mostly multiply padding skip those taps
in training on the CPU (forced both ways here; which way runs never depends on the CPU)."""

from __future__ import annotations

import copy

import pytest
import torch
from conv_passes import train_pass
from torch import nn

from seglab.models import cpu_speedups
from seglab.models.cpu_speedups import (
    TAP_MIN_PIXELS,
    SlicedConv2d,
    TapConv2d,
    apply_cpu_speedups,
    inside_share,
)

CL = torch.channels_last


def _conv(cin: int = 16, dilation=12, bias: bool = True, stride: int = 1) -> nn.Conv2d:
    torch.manual_seed(0)
    return nn.Conv2d(cin, 8, 3, stride=stride, padding=dilation, dilation=dilation, bias=bias)


def _counting_taps(monkeypatch) -> list[int]:
    """Counts the calls of the tap convolution (the choice made, not its speed)."""
    calls: list[int] = []
    original = cpu_speedups._TapConvolution.apply

    def counted(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(cpu_speedups._TapConvolution, "apply", counted)
    return calls


def test_inside_share_counts_the_taps_that_read_the_image():
    assert inside_share(_conv(dilation=36), 40, 40) == pytest.approx((48 / 120) ** 2)
    assert inside_share(_conv(dilation=12), 40, 40) == pytest.approx((96 / 120) ** 2)
    plain = nn.Conv2d(4, 4, 3, padding=1)
    assert inside_share(plain, 40, 40) == pytest.approx((118 / 120) ** 2)
    assert inside_share(_conv(dilation=(2, 30)), 10, 40) == pytest.approx(
        (26 / 30) * (60 / 120))  # rows 8 + 10 + 8 of 30
    unpadded = nn.Conv2d(4, 4, 3, dilation=5)
    assert inside_share(unpadded, 20, 20) == 1.0


@pytest.mark.parametrize("capability", ["AVX2", "AVX512", "DEFAULT"])
def test_tap_limit_follows_the_kernels_torch_runs(monkeypatch, capability):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    expected = {"AVX2": cpu_speedups.TAP_MAX_INSIDE}.get(capability,
                                                          cpu_speedups.TAP_MAX_INSIDE_WIDE_SIMD)
    assert cpu_speedups.tap_limit() == expected
    conv = _conv(dilation=12)  # 0.64 of its taps inside at 40x40: taps on AVX2 only
    apply_cpu_speedups(conv)
    calls = _counting_taps(monkeypatch)
    conv(torch.randn(1, 16, 40, 40))
    assert bool(calls) == (capability == "AVX2")


def test_dilated_convolutions_are_swapped_others_kept():
    model = nn.Sequential(_conv(), nn.Conv2d(8, 8, 3, padding=1), _conv(cin=8, stride=2),
                          nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2),
                          nn.Conv2d(8, 8, 1, dilation=2))
    keys = list(model.state_dict())
    assert apply_cpu_speedups(model) == 2
    assert apply_cpu_speedups(model) == 0
    assert [type(m) for m in model] == [TapConv2d, nn.Conv2d, nn.Conv2d, nn.Conv2d, TapConv2d]
    assert list(model.state_dict()) == keys


@pytest.mark.parametrize("layout", [torch.contiguous_format, CL])
@pytest.mark.parametrize("bias", [False, True])
def test_taps_train_the_same_convolution(monkeypatch, layout, bias):
    plain = _conv(bias=bias)
    taps = copy.deepcopy(plain)
    apply_cpu_speedups(taps)
    x = torch.randn(2, 16, 20, 24).contiguous(memory_format=layout)
    assert inside_share(plain, 20, 24) <= cpu_speedups.TAP_MAX_INSIDE_WIDE_SIMD  # any CPU
    calls = _counting_taps(monkeypatch)
    ours = train_pass(taps, x)
    assert calls, "the tap convolution was not used"
    assert ours[0].is_contiguous(memory_format=CL)  # channels_last out, as the model trains
    for name, value, exact in zip(("out", "grad x", "grad w", "grad b"), ours,
                                  train_pass(plain, x), strict=True):
        torch.testing.assert_close(value, exact, rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.parametrize(("dilation", "padding"), [(12, 6), (6, 9), (3, 0)])
def test_taps_where_the_centre_tap_does_not_cover_everything(monkeypatch, dilation, padding):
    """The sums start from a tap's product where it covers the whole output (or, for the input
    gradient, the whole input), else from zeros: less padding than dilation shrinks the output
    (the centre tap covers it, not the input), more grows it (it covers neither)."""
    torch.manual_seed(0)
    plain = nn.Conv2d(16, 8, 3, padding=padding, dilation=dilation)
    taps = copy.deepcopy(plain)
    apply_cpu_speedups(taps)
    monkeypatch.setattr(cpu_speedups, "tap_limit", lambda: 1.0)
    calls = _counting_taps(monkeypatch)
    x = torch.randn(2, 16, 20, 24).contiguous(memory_format=CL)
    ours = train_pass(taps, x)
    assert calls
    for name, value, exact in zip(("out", "grad x", "grad w", "grad b"), ours,
                                  train_pass(plain, x), strict=True):
        torch.testing.assert_close(value, exact, rtol=1e-4, atol=1e-4, msg=name)


def test_forced_off_it_is_the_plain_kernel_bit_for_bit(monkeypatch):
    plain = _conv()
    taps = copy.deepcopy(plain)
    apply_cpu_speedups(taps)
    x = torch.randn(2, 16, 20, 24).contiguous(memory_format=CL)
    monkeypatch.setattr(cpu_speedups, "tap_limit", lambda: -1.0)
    calls = _counting_taps(monkeypatch)
    for value, exact in zip(train_pass(taps, x), train_pass(plain, x), strict=True):
        assert torch.equal(value, exact)
    assert not calls


def test_forced_on_where_little_padding_is_read(monkeypatch):
    """A rate-2 convolution (share 0.9) takes the plain kernel, unless the limit is raised."""
    conv = _conv(dilation=2)
    apply_cpu_speedups(conv)
    x = torch.randn(1, 16, 20, 24)
    calls = _counting_taps(monkeypatch)
    train_pass(conv, x)
    assert not calls
    monkeypatch.setattr(cpu_speedups, "tap_limit", lambda: 1.0)
    ours = train_pass(conv, x)
    assert calls
    plain = _conv(dilation=2)
    for value, exact in zip(ours, train_pass(plain, x), strict=True):
        torch.testing.assert_close(value, exact, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", ["inference", "no weight grad", "small map", "bf16",
                                  "traced"])
def test_the_plain_kernel_where_taps_do_not_pay(monkeypatch, case):
    conv = _conv()
    apply_cpu_speedups(conv)
    calls = _counting_taps(monkeypatch)
    x = torch.randn(1, 16, 20, 24)
    if case == "inference":
        with torch.no_grad():
            conv(x)
    elif case == "no weight grad":
        conv.requires_grad_(False)
        conv(x)  # neither the input nor the weights want a gradient
    elif case == "small map":
        small = torch.randn(1, 16, 12, 12, requires_grad=True)
        assert small.shape[-1] * small.shape[-2] < TAP_MIN_PIXELS
        conv(small)
    elif case == "bf16":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            conv(x.requires_grad_())
    else:
        traced = torch.jit.trace(conv, x.requires_grad_(), check_trace=False)
        assert [n for n in traced.inlined_graph.nodes() if "convolution" in n.kind()]
    assert not calls


def test_deeplabv3_aspp_and_dilated_backbone_get_the_taps():
    from seglab.config import Recipe
    from seglab.engine.module import build_segmentation_model

    recipe = Recipe.from_dict({"data": {"spec": "folder:unused"},
                               "model": {"name": "deeplabv3_resnet50"}})
    model = build_segmentation_model(recipe, 3)
    kinds = [type(layer) for layer in model.modules()]
    assert kinds.count(SlicedConv2d) == 3  # ASPP: wide and dilated, so both speed-ups
    assert issubclass(SlicedConv2d, TapConv2d)
    # the ResNet-50's dilated 3x3s (rates 2 and 4) are Winograd convolutions, also TapConv2d
    assert sum(issubclass(kind, TapConv2d) for kind in kinds) == 3 + 13
