"""seglab.engine.inference: whole, sliding window, multi-scale + flip TTA, precision."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from seglab.engine.inference import _starts, predict_logits
from seglab.errors import ConfigError

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class ConvNet(nn.Module):
    """Toy segmentor with spatial context (3x3 convs), logits at input size."""

    def __init__(self, num_classes: int = 5, kernel: int = 3) -> None:
        super().__init__()
        pad = kernel // 2
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, kernel, padding=pad),
            nn.ReLU(),
            nn.Conv2d(8, num_classes, kernel, padding=pad),
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.body(x)}


class SymmetricConvNet(ConvNet):
    """Flip-equivariant: kernels are mirrored left-right, so model(flip(x)) == flip(model(x))."""

    def __init__(self) -> None:
        super().__init__()
        with torch.no_grad():
            for conv in (self.body[0], self.body[2]):
                conv.weight.copy_((conv.weight + conv.weight.flip(-1)) / 2)


class HalfResolution(nn.Module):
    """Answers at half the input size, like some exported heads: the caller must resize."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.head(x[:, :, ::2, ::2])}


def _images(n: int = 2, h: int = 37, w: int = 53, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=gen)


def _manual_probs(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return model((images.float() / 255 - mean) / std)["out"].softmax(1)


@pytest.fixture()
def model() -> nn.Module:
    torch.manual_seed(0)
    return ConvNet().eval()


def test_whole_fp32_matches_a_plain_forward(model):
    images = _images()
    probs = predict_logits(model, images, mean=MEAN, std=STD, precision="fp32")
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs, _manual_probs(model, images), atol=1e-5, rtol=1e-5)


def test_slide_with_crop_covering_the_image_equals_whole(model):
    images = _images(h=37, w=53)
    whole = predict_logits(model, images, mean=MEAN, std=STD, precision="fp32")
    for crop in ((37, 53), (64, 64), 100):
        slide = predict_logits(
            model, images, mean=MEAN, std=STD, mode="slide", crop=crop, precision="fp32"
        )
        torch.testing.assert_close(slide, whole, atol=1e-6, rtol=1e-6)


def test_slide_averages_overlapping_windows_exactly_for_a_per_pixel_model():
    # A 1x1 model sees no context, so any window layout must reproduce the whole-image answer:
    # this checks that every pixel is covered and overlaps are divided by their count.
    torch.manual_seed(1)
    per_pixel = ConvNet(kernel=1).eval()
    images = _images(h=41, w=67)
    whole = predict_logits(per_pixel, images, mean=MEAN, std=STD, precision="fp32")
    for crop, stride in (((16, 16), (10, 10)), ((20, 30), None), ((16, 16), (16, 16)), (7, 3)):
        slide = predict_logits(
            per_pixel,
            images,
            mean=MEAN,
            std=STD,
            mode="slide",
            crop=crop,
            stride=stride,
            precision="fp32",
            window_batch=3,
        )
        torch.testing.assert_close(slide, whole, atol=1e-5, rtol=1e-5)


def test_slide_with_context_differs_from_whole_but_stays_a_distribution(model):
    images = _images(h=40, w=40)
    whole = predict_logits(model, images, mean=MEAN, std=STD, precision="fp32")
    slide = predict_logits(
        model, images, mean=MEAN, std=STD, mode="slide", crop=16, stride=8, precision="fp32"
    )
    # Window borders cut the 3x3 context, so the answers differ near them...
    assert not torch.allclose(slide, whole)
    # ...but stay probabilities.
    torch.testing.assert_close(slide.sum(1), torch.ones(2, 40, 40))


def test_flip_tta_is_a_no_op_for_a_flip_equivariant_model():
    torch.manual_seed(2)
    symmetric = SymmetricConvNet().eval()
    images = _images(h=33, w=47)
    plain = predict_logits(symmetric, images, mean=MEAN, std=STD, precision="fp32")
    flipped = predict_logits(symmetric, images, mean=MEAN, std=STD, flip=True, precision="fp32")
    torch.testing.assert_close(flipped, plain, atol=1e-5, rtol=1e-5)


def test_flip_tta_averages_the_mirrored_prediction(model):
    images = _images(h=33, w=47)
    expected = (_manual_probs(model, images) + _manual_probs(model, images.flip(-1)).flip(-1)) / 2
    got = predict_logits(model, images, mean=MEAN, std=STD, flip=True, precision="fp32")
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, _manual_probs(model, images), atol=1e-3)


@pytest.mark.parametrize("mode", ["whole", "slide"])
@pytest.mark.parametrize("size", [(31, 45), (17, 9), (1, 1)])
def test_output_has_the_input_size_at_odd_sizes_and_sums_to_one(model, mode, size):
    images = _images(n=3, h=size[0], w=size[1])
    probs = predict_logits(
        model,
        images,
        mean=MEAN,
        std=STD,
        mode=mode,
        crop=(16, 20),
        scales=(0.75, 1.0, 1.5),
        flip=True,
    )
    assert probs.shape == (3, 5, *size)
    assert probs.dtype == torch.float32
    assert torch.isfinite(probs).all()
    assert probs.min() >= 0
    torch.testing.assert_close(probs.sum(1), torch.ones(3, *size), atol=1e-5, rtol=1e-5)


def test_multi_scale_averages_each_scale_resized_back(model):
    images = _images(n=1, h=32, w=48)
    one = predict_logits(model, images, mean=MEAN, std=STD, scales=(1.0,), precision="fp32")
    half = predict_logits(model, images, mean=MEAN, std=STD, scales=(0.5,), precision="fp32")
    both = predict_logits(model, images, mean=MEAN, std=STD, scales=(1.0, 0.5), precision="fp32")
    torch.testing.assert_close(both, (one + half) / 2, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(one, half, atol=1e-3)


def test_size_runs_the_model_at_its_input_size_and_answers_at_the_image_size():
    class SizeSpy(ConvNet):
        seen: list[tuple[int, int]] = []

        def forward(self, x):
            self.seen.append(tuple(x.shape[-2:]))
            return super().forward(x)

    torch.manual_seed(3)
    spy = SizeSpy().eval()
    images = _images(n=1, h=45, w=61)
    probs = predict_logits(spy, images, mean=MEAN, std=STD, size=(32, 40), scales=(1.0, 0.5))
    assert spy.seen == [(32, 40), (16, 20)]
    assert probs.shape == (1, 5, 45, 61)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 45, 61))


def test_bf16_autocast_on_cpu_stays_close_to_fp32(model):
    images = _images(h=32, w=32)
    fp32 = predict_logits(model, images, mean=MEAN, std=STD, precision="fp32")
    auto = predict_logits(model, images, mean=MEAN, std=STD, precision="auto")
    assert auto.dtype == torch.float32
    assert (auto - fp32).abs().max() < 0.05
    assert (auto.argmax(1) == fp32.argmax(1)).float().mean() > 0.95


def test_model_is_switched_to_channels_last(model):
    predict_logits(model, _images(n=1, h=8, w=8), mean=MEAN, std=STD)
    weight = model.body[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last)


def test_low_resolution_outputs_are_resized_to_the_input():
    images = _images(n=2, h=21, w=30)
    probs = predict_logits(HalfResolution().eval(), images, mean=MEAN, std=STD)
    assert probs.shape == (2, 4, 21, 30)


def test_any_callable_returning_out_works_like_a_runtime_wrapper(model):
    class Wrapper:  # the shape of an ONNX Runtime session wrapper: not an nn.Module
        def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            assert x.dtype == torch.float32
            with torch.no_grad():
                return {"out": model(x.contiguous())["out"].numpy()}

    images = _images(h=29, w=35)
    got = predict_logits(Wrapper(), images, mean=MEAN, std=STD, mode="slide", crop=16, flip=True)
    expected = predict_logits(
        model, images, mean=MEAN, std=STD, mode="slide", crop=16, flip=True, precision="fp32"
    )
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "tiles"}, "unknown inference mode"),
        ({"mode": "slide"}, "needs a crop size"),
        ({"mode": "slide", "crop": 8, "stride": 9}, "larger than crop"),
        ({"mode": "slide", "crop": (8, 8, 8)}, "crop must be"),
        ({"mode": "slide", "crop": 0}, "crop must be positive"),
        ({"scales": (1.0, -0.5)}, "scales must be positive"),
        ({"precision": "int8"}, "unknown precision"),
        ({"size": (0, 8)}, "size must be positive"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(model, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        predict_logits(model, _images(n=1, h=8, w=8), mean=MEAN, std=STD, **kwargs)


def test_bad_images_are_refused(model):
    with pytest.raises(ConfigError, match="uint8"):
        predict_logits(model, torch.zeros(1, 3, 8, 8), mean=MEAN, std=STD)
    with pytest.raises(ConfigError, match=r"\[N, C, H, W\]"):
        predict_logits(model, torch.zeros(3, 8, 8, dtype=torch.uint8), mean=MEAN, std=STD)
    with pytest.raises(ConfigError, match="4 channels but mean has 3 values"):
        predict_logits(model, torch.zeros(1, 4, 8, 8, dtype=torch.uint8), mean=MEAN, std=STD)


@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 300), window=st.integers(1, 300), step=st.integers(1, 300))
def test_window_starts_cover_the_whole_length(length, window, step):
    window = min(window, length)
    step = min(step, window)
    starts = _starts(length, window, step)
    assert starts[0] == 0
    assert starts[-1] + window == length
    assert all(0 <= b - a <= step for a, b in zip(starts, starts[1:], strict=False))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fp16_autocast_follows_the_model_device(model):
    model = model.cuda()
    images = _images(h=64, w=96)  # CPU uint8: moved to the model's device inside
    fp32 = predict_logits(model, images, mean=MEAN, std=STD, precision="fp32")
    auto = predict_logits(model, images, mean=MEAN, std=STD, mode="slide", crop=64, flip=True)
    assert fp32.device.type == auto.device.type == "cuda"
    assert auto.dtype == torch.float32
    plain = predict_logits(model, images, mean=MEAN, std=STD, precision="fp16")
    assert (plain - fp32).abs().max() < 0.02
    torch.testing.assert_close(auto.sum(1), torch.ones(2, 64, 96, device="cuda"))
