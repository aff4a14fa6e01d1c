"""Winograd F(m x m, 3x3), m = 2-5: the same convolution and gradients as ``conv2d``,
chosen only for fp32 training on the CPU of stride-1 3x3 convolutions with enough channels
(forced both ways here, so which way runs never depends on the CPU)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seglab.models import cpu_speedups
from seglab.models.cpu_speedups import (
    WINOGRAD_MIN_CHANNELS,
    SlicedConv2d,
    TapConv2d,
    WinogradConv2d,
    apply_cpu_speedups,
)
from seglab.models.winograd import (
    _chosen_plan,
    _cost,
    _live_span,
    _plan,
    block_side,
    winograd_conv2d,
    winograd_matrices,
)

CL = torch.channels_last
WIDE = WINOGRAD_MIN_CHANNELS


# Largest error against conv2d (relative to the largest value) per block side: F(5, 3)'s
# interpolation point 1/2 costs some fp32 accuracy.
TOLERANCE = {2: 1e-5, 3: 1e-5, 4: 2e-5, 5: 6e-5}


def _relative_error(value: torch.Tensor, exact: torch.Tensor) -> float:
    return float((value - exact).abs().max() / exact.abs().max())


def test_f43_is_lavin_and_grays():
    """The matrices derived from the interpolation points are the published F(4, 3) ones."""
    b_t, g, a_t = winograd_matrices(4)
    assert b_t.tolist() == [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                            [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
    published_g = torch.tensor([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                                [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
                               dtype=torch.float64)
    assert torch.allclose(g, published_g, rtol=0, atol=1e-15)
    assert a_t.tolist() == [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                            [0, 1, -1, 8, -8, 1]]


@pytest.mark.parametrize("tile", [2, 3, 4, 5])
def test_the_matrices_compute_a_correlation(tile):
    """``A^T [(G g) * (B^T d)]`` is the 3-tap correlation of ``d`` with ``g`` (float64)."""
    b_t, g, a_t = winograd_matrices(tile)
    torch.manual_seed(0)
    for _ in range(5):
        data = torch.randn(tile + 2, dtype=torch.float64)
        kernel = torch.randn(3, dtype=torch.float64)
        exact = torch.stack([data[i:i + 3] @ kernel for i in range(tile)])
        assert torch.allclose(a_t @ ((g @ kernel) * (b_t @ data)), exact, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("shape", "side"), [
    ((40, 40, 4, 512, 512), 5),  # ResNet's layer4: 10x10 phases, 12x12 in 4x4 blocks
    ((40, 40, 1, 256, 256), 5),  # both fit: 5x5 blocks need 13% fewer products
    ((40, 40, 1, 2048, 512), 5),
    ((88, 120, 1, 128, 128), 4),  # few channels: the larger transforms cost more
    ((16, 16, 1, 256, 256), 4),  # 5x5 blocks would cover 20x20
    ((40, 40, 12, 2048, 256), 4),  # one block a phase either way
])
def test_the_block_side_is_the_cheaper(shape, side):
    """The choices bench_winograd.py measured fastest with AVX2 kernels."""
    assert block_side(*shape) == side


@pytest.mark.parametrize(("side", "padding", "dilation", "tile", "blocks", "span"), [
    (40, 12, 12, 4, 1, (1, 5)),  # ASPP's rate 12 at crop 320: rows 0 and 5 read padding
    (40, 2, 2, 4, 5, (0, 6)),  # ResNet's layer3: every row reads the image in some block
    (40, 24, 24, 4, 1, (1, 3)),  # rate 24: two live rows
    (9, 3, 6, 4, 1, (0, 2)),  # less padding than dilation: row 0 reads the image
])
def test_the_block_rows_that_read_only_padding_are_left_out(side, padding, dilation, tile,
                                                            blocks, span):
    assert _live_span(side, padding, dilation, tile, blocks) == span


def test_bad_calls_are_refused_with_the_values():
    with pytest.raises(ValueError, match="block side 6"):
        winograd_conv2d(torch.randn(1, 2, 8, 8), torch.randn(2, 2, 3, 3), 1, 1, tile=6)
    with pytest.raises(ValueError, match="4x6 input with padding 0 and dilation 2 leaves no"):
        winograd_conv2d(torch.randn(1, 2, 4, 6), torch.randn(2, 2, 3, 3), 2, 0)


@pytest.mark.parametrize(("size", "dilation", "padding"), [
    ((13, 11), 1, 1),  # sizes that are not whole blocks
    ((20, 20), 2, 2),
    ((17, 9), 4, 4),  # the phases of the two sides differ in length
    ((6, 7), 3, 3),  # fewer outputs per phase than a block holds
    ((9, 10), 1, 0),  # no padding: the output shrinks
    ((9, 10), 2, 3),  # more padding than dilation: the output grows
    ((20, 20), 6, 6),  # one block per phase whose first and last rows read only padding
    ((20, 9), 6, 3),  # the same on one side only, with less padding than dilation
])
@pytest.mark.parametrize("layout", [torch.contiguous_format, CL])
@pytest.mark.parametrize("tile", [4, 5])
def test_it_is_conv2d_with_its_gradients(size, dilation, padding, layout, tile):
    torch.manual_seed(0)
    x = torch.randn(2, 8, *size).contiguous(memory_format=layout).requires_grad_()
    # seglab's models are channels_last, their weights too
    weight = torch.randn(5, 8, 3, 3).contiguous(memory_format=layout).requires_grad_()
    exact = F.conv2d(x, weight, None, 1, padding, dilation)
    ours = winograd_conv2d(x, weight, dilation, padding, tile)
    assert ours.shape == exact.shape and ours.is_contiguous(memory_format=CL)
    grad = torch.randn(exact.shape)
    exact_grads = torch.autograd.grad(exact, (x, weight), grad)
    our_grads = torch.autograd.grad(ours, (x, weight), grad)
    assert _relative_error(ours, exact) < TOLERANCE[tile]
    for name, value, reference in zip(("x", "weight"), our_grads, exact_grads, strict=True):
        assert _relative_error(value, reference) < TOLERANCE[tile], name


@pytest.mark.parametrize(("size", "dilation", "padding", "runs"), [
    ((40, 40), 12, 12, ([(0, 4), (4, 12)], [(0, 4), (4, 12)])),  # ASPP's rate 12: 4 and 3
    ((20, 20), 6, 6, ([(0, 2), (2, 6)], [(0, 2), (2, 6)])),
    ((6, 7), 3, 3, ([(0, 3)], [(0, 1), (1, 3)])),  # 2 outputs a phase; 3 and 2
    ((17, 9), 4, 4, ([(0, 1), (1, 4)], [(0, 1), (1, 4)])),  # 5 and 4; 3 and 2
    ((20, 9), 6, 3, ([(0, 2), (2, 6)], [(0, 6)])),  # 3 outputs: one side only
    ((5, 5), 2, 3, ([(0, 1), (1, 2)], [(0, 1), (1, 2)])),  # more padding than dilation
    ((13, 11), 1, 1, ([(0, 1)], [(0, 1)])),  # long phases: blocks of one side
])
def test_short_phases_take_blocks_as_long_as_they_are(size, dilation, padding, runs):
    """Chosen by default: each phase of 2-5 outputs is one block that fits it, so no
    product is computed for an output that does not exist; the same convolution and
    gradients as conv2d."""
    torch.manual_seed(0)
    out = [side + 2 * padding - 2 * dilation for side in size]
    plan = _chosen_plan(*out, dilation, padding, 8, 5)
    assert [[run.phases for run in side] for side in plan] == list(runs)
    for side, length in zip(plan, out, strict=True):  # fitted blocks cover each phase exactly
        if len(side) > 1 or side[0].tile < 4:
            assert sum(run.tile * (run.phases[1] - run.phases[0]) for run in side) == length
    x = torch.randn(2, 8, *size).contiguous(memory_format=CL).requires_grad_()
    weight = torch.randn(5, 8, 3, 3).contiguous(memory_format=CL).requires_grad_()
    exact = F.conv2d(x, weight, None, 1, padding, dilation)
    ours = winograd_conv2d(x, weight, dilation, padding)
    grad = torch.randn(exact.shape)
    pairs = zip((ours, *torch.autograd.grad(ours, (x, weight), grad)),
                (exact, *torch.autograd.grad(exact, (x, weight), grad)), strict=True)
    for value, reference in pairs:
        assert value.shape == reference.shape
        assert _relative_error(value, reference) < TOLERANCE[5]


def test_rate_12_at_crop_320_saves_a_fifth_of_the_products():
    """40 outputs in 12 phases: 4 phases of 4 and 8 of 3 a side. 4x4 blocks everywhere
    compute 144 x 36 products an image; blocks that fit, 16 x 36 + 64 x 30 + 64 x 25."""
    exact = _chosen_plan(40, 40, 12, 12, 2048, 256)
    assert [[(run.tile, run.blocks, run.live) for run in side] for side in exact] == [
        [(4, 1, (1, 5)), (3, 1, (1, 4))]] * 2
    products = [sum((r.phases[1] - r.phases[0]) * (c.phases[1] - c.phases[0])
                    * (r.tile + 2) * (c.tile + 2) for r in plan[0] for c in plan[1])
                for plan in (_plan(40, 40, 12, 12, 4), exact)]
    assert products == [144 * 36, 16 * 36 + 64 * 30 + 64 * 25]
    assert _cost(exact, 2048, 256) < _cost(_plan(40, 40, 12, 12, 4), 2048, 256)


def test_only_the_gradients_asked_for():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    weight = torch.randn(4, 4, 3, 3)  # frozen
    out = winograd_conv2d(x, weight, 1, 1)
    (grad_x,) = torch.autograd.grad(out.sum(), (x,))
    exact = torch.autograd.grad(F.conv2d(x, weight, None, 1, 1).sum(), (x,))[0]
    assert _relative_error(grad_x, exact) < 2e-5
    assert weight.grad is None


def _conv(cin: int = WIDE, cout: int = WIDE, dilation: int = 1, **kwargs) -> nn.Conv2d:
    torch.manual_seed(0)
    return nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, **kwargs)


def test_which_convolutions_are_swapped():
    model = nn.Sequential(
        _conv(), _conv(dilation=2, bias=False),  # Winograd
        _conv(cin=WIDE // 2), _conv(cout=WIDE // 2),  # too narrow: the plain kernel
        _conv(stride=2), _conv(groups=2),
        nn.Conv2d(WIDE, WIDE, 1),
        nn.Conv2d(WIDE, WIDE, 3, padding=(1, 2), dilation=(1, 2)),  # unequal sides: taps
        nn.Conv2d(WIDE, WIDE, 3, padding="same"))
    keys = list(model.state_dict())
    assert apply_cpu_speedups(model) == 3
    assert apply_cpu_speedups(model) == 0
    assert [type(m) for m in model] == [WinogradConv2d] * 2 + [nn.Conv2d] * 5 + [
        TapConv2d, nn.Conv2d]
    assert list(model.state_dict()) == keys
    assert type(copy.deepcopy(model)[0]) is WinogradConv2d


def _counting(monkeypatch) -> list[int]:
    """Counts the Winograd convolutions run (the choice made, not its speed), with the
    channel threshold of AVX2 kernels whatever this CPU runs."""
    monkeypatch.setattr(cpu_speedups, "winograd_min_channels", lambda: WIDE)
    calls: list[int] = []
    original = cpu_speedups.winograd_conv2d

    def counted(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(cpu_speedups, "winograd_conv2d", counted)
    return calls


@pytest.mark.parametrize("capability", ["AVX2", "AVX512", "DEFAULT"])
def test_the_channel_threshold_follows_the_kernels_torch_runs(monkeypatch, capability):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    expected = WIDE if capability == "AVX2" else cpu_speedups.WINOGRAD_MIN_CHANNELS_WIDE_SIMD
    assert cpu_speedups.winograd_min_channels() == expected
    conv = _conv()  # 128 channels: Winograd with AVX2 kernels only
    apply_cpu_speedups(conv)
    calls: list[int] = []
    original = cpu_speedups.winograd_conv2d
    monkeypatch.setattr(cpu_speedups, "winograd_conv2d",
                        lambda *a: calls.append(1) or original(*a))
    conv(torch.randn(1, WIDE, 16, 16))
    assert bool(calls) == (capability == "AVX2")


@pytest.mark.parametrize("bias", [False, True])
def test_a_training_pass_is_the_plain_one(monkeypatch, bias):
    plain = _conv(dilation=2, bias=bias)
    ours = copy.deepcopy(plain)
    apply_cpu_speedups(ours)
    calls = _counting(monkeypatch)
    x = torch.randn(2, WIDE, 17, 20).contiguous(memory_format=CL)
    results = []
    for conv in (ours, plain):
        conv.zero_grad(set_to_none=True)
        inp = x.clone().requires_grad_()
        out = conv(inp)
        out.backward(torch.ones_like(out))
        results.append([out, inp.grad, conv.weight.grad]
                       + ([conv.bias.grad] if bias else []))
    assert len(calls) == 1
    assert block_side(17, 20, 2, WIDE, WIDE) == 5  # 9x10 phases: two 5x5 blocks a side
    for value, exact in zip(*results, strict=True):
        assert _relative_error(value, exact) < TOLERANCE[5]


@pytest.mark.parametrize("case", ["inference", "frozen", "small map", "bf16", "traced",
                                  "mostly padding"])
def test_the_plain_kernel_or_taps_elsewhere(monkeypatch, case):
    conv = _conv()
    apply_cpu_speedups(conv)
    calls = _counting(monkeypatch)
    x = torch.randn(1, WIDE, 20, 20)
    if case == "inference":
        with torch.no_grad():
            conv(x)
    elif case == "frozen":
        conv.requires_grad_(False)
        conv(x)
    elif case == "small map":
        conv(torch.randn(1, WIDE, 15, 15, requires_grad=True))  # under TAP_MIN_PIXELS
    elif case == "bf16":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            conv(x.requires_grad_())
    elif case == "traced":
        traced = torch.jit.trace(conv, x.requires_grad_(), check_trace=False)
        assert [n for n in traced.inlined_graph.nodes() if "convolution" in n.kind()]
    else:  # rate 12 on 20x20 reads padding for most taps: the tap convolution wins there
        rate12 = _conv(dilation=12)
        apply_cpu_speedups(rate12)
        monkeypatch.setattr(cpu_speedups, "tap_limit", lambda: 1.0)
        taps = []
        original = cpu_speedups._TapConvolution.apply
        monkeypatch.setattr(cpu_speedups._TapConvolution, "apply",
                            lambda *a: taps.append(1) or original(*a))
        rate12(x.requires_grad_())
        assert taps
    assert not calls


def test_wide_convolutions_train_by_winograd_too(monkeypatch):
    """FCN's head (2048 -> 512) is a SlicedConv2d: bf16 slices, but fp32 training by Winograd."""
    torch.manual_seed(0)
    conv = nn.Conv2d(2048, WIDE, 3, padding=1)
    apply_cpu_speedups(conv)
    assert type(conv) is SlicedConv2d
    calls = _counting(monkeypatch)
    x = torch.randn(1, 2048, 16, 16)
    out = conv(x)
    assert calls
    assert _relative_error(out, F.conv2d(x, conv.weight, conv.bias, padding=1)) < 2e-5


def test_a_convolution_that_mostly_reads_padding_never_takes_winograd(monkeypatch):
    """Where the taps are not taken (AVX-512 kernels: ASPP's rate 24 at crop 320), oneDNN is,
    not Winograd (which needs 4x the taps' multiply-adds there)."""
    conv = _conv(dilation=24)
    apply_cpu_speedups(conv)
    assert not cpu_speedups.winograd_is_cheaper(conv, 40, 40)
    monkeypatch.setattr(cpu_speedups, "tap_limit", lambda: -1.0)
    calls = _counting(monkeypatch)
    conv(torch.randn(1, WIDE, 40, 40, requires_grad=True))
    assert not calls


@pytest.mark.parametrize("tap_limit", [1.0, -1.0])
def test_rate_12_on_a_40x40_map_trains_by_winograd(monkeypatch, tap_limit):
    """ASPP's rate 12 at crop 320 reads padding with 36% of its taps, but one block per phase
    whose edge rows read only padding makes Winograd cheaper still, whether or not the taps
    would be taken."""
    conv = _conv(dilation=12)
    apply_cpu_speedups(conv)
    assert cpu_speedups.winograd_is_cheaper(conv, 40, 40)
    monkeypatch.setattr(cpu_speedups, "tap_limit", lambda: tap_limit)
    calls = _counting(monkeypatch)
    x = torch.randn(2, WIDE, 40, 40, requires_grad=True)
    out = conv(x)
    exact = F.conv2d(x, conv.weight, conv.bias, padding=12, dilation=12)
    grad = torch.randn(out.shape)
    ours = torch.autograd.grad(out, (x, conv.weight), grad)
    theirs = torch.autograd.grad(exact, (x, conv.weight), grad)
    assert len(calls) == 1
    for value, reference in zip((out, *ours), (exact, *theirs), strict=True):
        assert _relative_error(value, reference) < TOLERANCE[4]


def test_a_map_too_small_for_any_output_gets_the_plain_kernels_error(monkeypatch):
    conv = nn.Conv2d(WIDE, WIDE, 3, dilation=12)  # no padding: a 20x20 map leaves no output
    apply_cpu_speedups(conv)
    assert not cpu_speedups.winograd_is_cheaper(conv, 20, 20)
    monkeypatch.setattr(cpu_speedups, "tap_limit", lambda: -1.0)
    with pytest.raises(RuntimeError, match="too small|Kernel size can't be greater"):
        conv(torch.randn(1, WIDE, 20, 20, requires_grad=True))


def test_where_most_taps_read_the_image_winograd_is_kept_whatever_the_cost_model(monkeypatch):
    """128 channels at rate 3 on 16x16 (0.77 inside): the weighted count favours the taps,
    but the taps are not taken above TAP_MAX_INSIDE, so Winograd stays the choice there (as
    it was before the count was consulted), not oneDNN."""
    conv = _conv(dilation=3)
    apply_cpu_speedups(conv)
    assert cpu_speedups.inside_share(conv, 16, 16) > cpu_speedups.TAP_MAX_INSIDE
    assert not cpu_speedups.winograd_is_cheaper(conv, 16, 16)
    calls = _counting(monkeypatch)
    conv(torch.randn(1, WIDE, 16, 16, requires_grad=True))
    assert calls


def test_deeplabv3_trains_its_3x3_convolutions_by_winograd():
    from seglab.config import Recipe
    from seglab.engine.module import build_segmentation_model

    recipe = Recipe.from_dict({"data": {"spec": "folder:unused"},
                               "model": {"name": "deeplabv3_resnet50"}})
    layers = list(build_segmentation_model(recipe, 3).modules())
    kinds = [type(layer) for layer in layers]
    # layer2 after its strided block (3), layer3 (6), layer4 (3) and the head's 3x3
    assert kinds.count(WinogradConv2d) == 13
    assert kinds.count(SlicedConv2d) == 3  # ASPP's dilated branches
    branches = [layer for layer in layers if type(layer) is SlicedConv2d]
    # at crop 320 (a 40x40 map) rate 12 trains by Winograd, rates 24 and 36 by taps
    assert [cpu_speedups.winograd_is_cheaper(conv, 40, 40) for conv in branches] == [
        True, False, False]
    assert issubclass(SlicedConv2d, WinogradConv2d)


# After five steps at learning rate 0.1 a fp32 difference of ~1e-5 can move a pre-activation
# across zero and so change a ReLU's gradient: F(5, 3)'s twice larger rounding did so here for
# a few weights (at most 1.8e-3 of the largest), F(4, 3)'s did not.
TRAJECTORY_TOLERANCE = {4: 1e-4, 5: 5e-3}


@pytest.mark.parametrize(("side", "tile"), [(16, 4), (20, 5)])
def test_training_follows_the_same_trajectory(monkeypatch, side, tile):
    """Five SGD steps of a small network give the same losses and weights with and without
    Winograd (fp32 rounding apart): the speed-up changes no result a run reports."""
    monkeypatch.setattr(cpu_speedups, "winograd_min_channels", lambda: WIDE)
    assert block_side(side, side, 2, WIDE, WIDE) == tile

    def network() -> nn.Module:
        torch.manual_seed(3)
        return nn.Sequential(nn.Conv2d(3, WIDE, 3, padding=1), nn.BatchNorm2d(WIDE), nn.ReLU(),
                             _conv(dilation=2), nn.BatchNorm2d(WIDE), nn.ReLU(),
                             nn.Conv2d(WIDE, 4, 1))

    torch.manual_seed(5)
    images, masks = torch.randn(2, 3, side, side), torch.randint(0, 4, (2, side, side))
    trained = []
    for swap in (True, False):
        model = network()
        if swap:
            assert apply_cpu_speedups(model) == 1
        calls = _counting(monkeypatch)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        losses = []
        for _ in range(5):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(images), masks)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert len(calls) == (5 if swap else 0)
        trained.append((losses, model.state_dict()))
    (ours, our_state), (plain, plain_state) = trained
    assert ours == pytest.approx(plain, rel=1e-5)
    assert plain[-1] < plain[0]  # it learns, so the comparison means something
    for key, value in plain_state.items():
        if value.is_floating_point():
            assert _relative_error(our_state[key], value) < TRAJECTORY_TOLERANCE[tile], key


def test_a_second_derivative_is_refused_not_wrong(monkeypatch):
    """Both backwards keep tensors computed without a graph, so a second derivative through them
    would silently miss terms: asking for one is an error instead."""
    monkeypatch.setattr(cpu_speedups, "tap_limit", lambda: 1.0)
    calls = _counting(monkeypatch)
    # Winograd, then taps (the count of Winograd calls so far stays at one)
    for conv, winograd in ((_conv(), 1), (_conv(dilation=12), 1)):
        apply_cpu_speedups(conv)
        x = torch.randn(1, WIDE, 20, 20, requires_grad=True)
        (grad,) = torch.autograd.grad(conv(x).square().sum(), x, create_graph=True)
        assert len(calls) == winograd
        with pytest.raises(RuntimeError, match="once_differentiable"):
            grad.sum().backward()
