"""Turn uint8 images into class probabilities: whole image, sliding window, multi-scale + flip.

One function, :func:`predict_logits`, used by evaluation, ``seglab predict``, ``Predictor`` and
the comparison report, so every number and every picture comes from the same inference path.
Normalisation, channels_last and autocast happen here, on the model's device.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seglab.artifacts.device import PRECISIONS as PRECISIONS  # re-exported for callers
from seglab.artifacts.device import autocast_dtype
from seglab.artifacts.model import MODES as MODES  # re-exported for callers
from seglab.data.transforms import normalize
from seglab.errors import ConfigError
from seglab.models.cpu_speedups import apply_cpu_speedups

SizeLike = int | Sequence[int]


def predict_logits(
    model: Callable[[Tensor], dict[str, Tensor]],
    images: Tensor,
    *,
    mean: Sequence[float] | Tensor,
    std: Sequence[float] | Tensor,
    mode: str = "whole",
    crop: SizeLike | None = None,
    stride: SizeLike | None = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    precision: str = "auto",
    size: SizeLike | None = None,
    window_batch: int = 4,
) -> Tensor:
    """Class probabilities ``[N, C, H, W]`` (float32, softmax) for a uint8 batch ``[N, 3, H, W]``.

    Args:
        model: anything called as ``model(x) -> {"out": logits}`` with a normalised float batch:
            an ``nn.Module`` from the registry or an exported-runtime wrapper. The caller puts
            it in eval mode; an ``nn.Module`` is switched to channels_last and given the exact
            CPU speed-ups of :mod:`seglab.models.cpu_speedups` in place (idempotent).
        images: uint8 batch on any device; it is moved to the model's device.
        mean, std: per-channel normalisation on the 0..1 scale (e.g. ImageNet's).
        mode: ``"whole"`` (one forward per image) or ``"slide"`` (overlapping ``crop`` windows
            every ``stride`` pixels, probabilities averaged where windows overlap; windows at
            the border are shifted inside the image, so nothing is padded).
        crop: window size ``H`` or ``(H, W)``; required for ``"slide"``.
        stride: window step; defaults to two thirds of ``crop``.
        scales: test-time scales; each view is resized back to the input size.
        flip: also run the horizontally flipped image and flip its prediction back.
        precision: ``"auto"`` (bf16 autocast where the hardware has it, else fp16 on a GPU and
            fp32 on a CPU: the one choice in
            :func:`seglab.artifacts.device.autocast_dtype`), ``"bf16"``, ``"fp16"`` or
            ``"fp32"`` (no autocast). Applies to ``nn.Module`` models only.
        size: model input size ``H`` or ``(H, W)``: images are resized to it first (e.g. the
            ``eval_resize`` a model was trained for) and scales apply to it; the answer still
            comes back at the images' own size.
        window_batch: sliding windows per forward pass (bounds memory).

    Returns:
        Softmax probabilities averaged over all views, at the input's size, on the model's
        device. ``argmax(1)`` gives the predicted mask.
    """
    if images.ndim != 4:  # any band count: normalize checks it against mean/std
        raise ConfigError(f"images must be a [N, C, H, W] batch, got shape {tuple(images.shape)}")
    if images.dtype != torch.uint8:
        raise ConfigError(f"images must be uint8 (0..255), got {images.dtype}")
    if mode not in MODES:
        raise ConfigError(f"unknown inference mode {mode!r}: use one of {', '.join(MODES)}")
    scales = tuple(float(s) for s in scales)
    if not scales or any(not math.isfinite(s) or s <= 0 for s in scales):
        raise ConfigError(f"scales must be positive numbers, got {scales}")
    if window_batch < 1:
        raise ConfigError(f"window_batch must be >= 1, got {window_batch}")
    crop_hw = stride_hw = None
    if mode == "slide":
        if crop is None:
            raise ConfigError("sliding-window inference needs a crop size (e.g. crop=512)")
        crop_hw = _pair(crop, "crop")
        stride_hw = _pair(stride, "stride") if stride is not None else _default_stride(crop_hw)
        if stride_hw[0] > crop_hw[0] or stride_hw[1] > crop_hw[1]:
            raise ConfigError(
                f"stride {stride_hw} is larger than crop {crop_hw}: pixels between windows "
                "would never be predicted"
            )

    base_size = _pair(size, "size") if size is not None else None

    device = _model_device(model, images.device)
    if isinstance(model, nn.Module):
        model.to(memory_format=torch.channels_last)
        apply_cpu_speedups(model)
    dtype = autocast_dtype(precision, device)
    if not isinstance(model, nn.Module):
        dtype = None  # runtime wrappers (ONNX) run their own graph at its own precision
    height, width = images.shape[-2:]
    x = normalize(images.to(device, non_blocking=True), mean, std)
    base_size = base_size or (height, width)

    def forward(batch: Tensor) -> Tensor:
        return _softmax_forward(model, batch, dtype)

    total: Tensor | None = None
    views = 0
    with torch.no_grad():
        for scale in scales:
            scaled = _resize(x, _scaled_size(base_size, scale))
            for flipped in (False, True) if flip else (False,):
                view = scaled.flip(-1) if flipped else scaled
                if mode == "whole":
                    probs = forward(view)
                else:
                    probs = _slide(forward, view, crop_hw, stride_hw, window_batch)
                if flipped:
                    probs = probs.flip(-1)
                probs = _resize(probs, (height, width))
                total = probs if total is None else total.add_(probs)
                views += 1
    assert total is not None
    return total.div_(views)


def _softmax_forward(model: Callable, batch: Tensor, dtype: torch.dtype | None) -> Tensor:
    """Run the model on a normalised batch and return float32 probabilities at batch size."""
    if isinstance(model, nn.Module):
        batch = batch.contiguous(memory_format=torch.channels_last)
    with _autocast(batch.device, dtype):
        output = model(batch)
    logits = output["out"] if isinstance(output, dict) else output
    if not isinstance(logits, Tensor):
        logits = torch.as_tensor(logits)
    logits = logits.to(batch.device).float()
    if logits.ndim != 4 or logits.shape[0] != batch.shape[0]:
        raise ConfigError(
            f"model output 'out' must be [N, C, H, W] logits, got shape {tuple(logits.shape)}"
        )
    # Models should answer at input size; resize the few that do not (exported fixed heads).
    logits = _resize(logits, tuple(batch.shape[-2:]))
    return logits.softmax(1)


def _slide(
    forward: Callable[[Tensor], Tensor],
    x: Tensor,
    crop: tuple[int, int],
    stride: tuple[int, int],
    window_batch: int,
) -> Tensor:
    """Average window probabilities over the image; windows stay inside it (no padding)."""
    n, _, height, width = x.shape
    windows = list(_windows(height, width, crop, stride))
    total: Tensor | None = None
    counts = torch.zeros((1, 1, height, width), device=x.device)
    # Windows share one size, so several of them go through the model as one batch.
    for start in range(0, len(windows), window_batch):
        group = windows[start : start + window_batch]
        tiles = torch.cat([x[:, :, t : t + h, s : s + w] for t, s, h, w in group])
        probs = forward(tiles)
        if total is None:
            total = x.new_zeros((n, probs.shape[1], height, width), dtype=torch.float32)
        for index, (t, s, h, w) in enumerate(group):
            total[:, :, t : t + h, s : s + w] += probs[index * n : (index + 1) * n]
            counts[:, :, t : t + h, s : s + w] += 1
    assert total is not None
    return total / counts


def _windows(
    height: int, width: int, crop: tuple[int, int], stride: tuple[int, int]
) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(top, left, h, w)`` windows covering the image; the last ones end at its edge."""
    h = min(crop[0], height)
    w = min(crop[1], width)
    rows = _starts(height, h, stride[0])
    cols = _starts(width, w, stride[1])
    for top in rows:
        for left in cols:
            yield top, left, h, w


def _starts(length: int, window: int, step: int) -> list[int]:
    count = max(math.ceil((length - window) / step), 0) + 1
    return [min(i * step, length - window) for i in range(count)]


def _pair(value: SizeLike, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        pair = (value, value)
    else:
        pair = tuple(int(v) for v in value)
        if len(pair) != 2:
            raise ConfigError(f"{name} must be one size or (height, width), got {value!r}")
    if pair[0] < 1 or pair[1] < 1:
        raise ConfigError(f"{name} must be positive, got {value!r}")
    return pair  # type: ignore[return-value]


def _default_stride(crop: tuple[int, int]) -> tuple[int, int]:
    # Two thirds of the window: every pixel is seen by at least one window away from its border.
    return (max(1, math.ceil(crop[0] * 2 / 3)), max(1, math.ceil(crop[1] * 2 / 3)))


def _scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrinking = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrinking)


def _model_device(model: object, fallback: torch.device) -> torch.device:
    if isinstance(model, nn.Module):
        for tensor in model.parameters():
            return tensor.device
        for tensor in model.buffers():
            return tensor.device
    # Runtime wrappers (ONNX) may say where they want their inputs.
    return torch.device(getattr(model, "device", fallback))


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
