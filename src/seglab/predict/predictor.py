"""``Predictor``: a trained model for Python code, answering at the images' own resolution.

A ``Predictor`` loads any saved form of a model through :func:`seglab.artifacts.loader.
load_inference_model` (a ``save_pretrained`` folder, a run folder, a Lightning ``.ckpt``, an
exported ``.onnx`` or TorchScript file) with its classes and normalisation, and answers through
the shared inference path (:func:`seglab.engine.inference.predict_logits`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from seglab.artifacts.device import PRECISIONS, resolve_device
from seglab.artifacts.loader import load_inference_model
from seglab.artifacts.settings import ModelSettings, model_settings
from seglab.class_ids import class_ids
from seglab.data.classes import ClassMap
from seglab.data.dataset import read_image
from seglab.engine.inference import predict_logits
from seglab.errors import ConfigError
from seglab.predict.backend import choose
from seglab.predict.compiled import CompiledModel

TTA_SCALES = (0.75, 1.0, 1.25)


class Predictor:
    """Predict class masks with a trained model, at the images' own resolution.

    Args:
        source: a ``save_pretrained`` folder, a run folder (its ``model/`` or best checkpoint),
            a Lightning ``.ckpt`` written by ``seglab train``, any ``.onnx`` / TorchScript
            file, a state dict (with ``model=NAME``) or an ``nn.Module``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... or ``"auto"`` (CUDA when available).
        mode: ``"whole"`` or ``"slide"`` (sliding ``crop`` windows every ``stride`` pixels).
        crop, stride: sliding-window size and step, ``N`` or ``(H, W)``.
        size: model input size ``(H, W)``; images are resized to it and the masks come back
            at the images' size.
        scales: test-time scales (``(0.5,)`` runs at half size and answers at full size).
        flip: add horizontally flipped views (test-time augmentation); ``False`` turns off
            the flip a model was saved with.
        precision: ``"auto"`` (bf16 on a CPU with bf16 hardware, else fp32; bf16 or fp16 on
            CUDA), ``"fp32"``, ``"bf16"``, ``"fp16"``
            (torch models; ONNX Runtime runs the export's own precision).
        batch_size: images per forward pass in :meth:`predict_batch`.
        backend: ``"auto"`` (default): the fastest runtime that gives the same masks: an
            ``.onnx`` source runs in ONNX Runtime; a model folder holding a current ONNX
            export of itself (``seglab export RUN --dynamic --out RUN/model/model.onnx``)
            runs in ONNX Runtime when, on a check image measured once at load, its mask
            agrees with the torch fp32 model's on >= 99.9% of pixels and it is faster than
            torch; otherwise torch with ``precision``, compiled (``torch.compile`` with
            inductor freezing) on a CPU when the workload announced with :meth:`expect`
            saves more than the compile costs and the compiled masks agree (see
            :mod:`seglab.predict.compiled`). ``"torch"``, ``"compile"`` or ``"onnxruntime"``
            force one; :attr:`backend` and :attr:`backend_reason` say what was chosen and
            why (a compile is decided at the first batch).
        provider: ONNX Runtime execution provider (``cpu``, ``cuda``, ``tensorrt``,
            ``openvino``, ... where installed; default: CUDA on a CUDA device when
            available, else CPU). An unavailable one is a ConfigError listing the available.

    ``settings`` (or the keywords ``mean``, ``std``, ``scale``, ``channels``, ``classes``,
    ``num_classes``, ``model``; see :class:`~seglab.artifacts.settings.ModelSettings`) give
    what the model's file does not say; :attr:`notes` says which defaults were used.

    ``mode``, ``crop``, ``stride``, ``size``, ``scales`` and ``flip`` left as None take the
    settings the model was saved with, as ``seglab eval`` does (a model folder's ``inference``
    section, its recipe's ``eval`` section and ``augment.eval_resize``, a file's embedded
    config: :class:`~seglab.artifacts.model.InferenceSettings`), else whole-image inference
    at the image's size, one scale, no flip; :attr:`inference` holds what is used.

    ``predict(image)`` takes a numpy ``uint8 [H, W, 3]`` array (also ``[H, W]`` grey or
    ``[H, W, 4]`` RGBA), a PIL image or a file path and returns a numpy ``int64 [H, W]`` mask;
    a torch ``uint8 [3, H, W]`` tensor gives a torch ``int64 [H, W]`` tensor on its device.
    """

    def __init__(
        self,
        source: str | os.PathLike | torch.nn.Module,
        device: str | torch.device = "cpu",
        mode: str | None = None,
        *,
        crop: int | Sequence[int] | None = None,
        stride: int | Sequence[int] | None = None,
        size: int | Sequence[int] | None = None,
        scales: Sequence[float] | None = None,
        flip: bool | None = None,
        precision: str = "auto",
        batch_size: int = 4,
        backend: str = "auto",
        provider: str | None = None,
        settings: ModelSettings | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        scale: float | None = None,
        channels: str | None = None,
        classes: Any = None,
        num_classes: int | None = None,
        model: str | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS)}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        settings = model_settings(settings, mean=mean, std=std, scale=scale, channels=channels,
                                  classes=classes, num_classes=num_classes, model=model,
                                  mode=mode, crop=crop, stride=stride, size=size,
                                  scales=scales, flip=flip)
        loaded = load_inference_model(source, self.device, provider, settings)
        self.notes = list(loaded.notes)  # defaults used (e.g. generic class names)
        self.inference = loaded.inference  # how every image is run (saved, then given)
        if self.mode == "slide" and self.crop is None:
            raise ConfigError("sliding-window prediction needs a crop size (e.g. crop=512)")
        self.source = loaded.source
        choice = choose(loaded, backend, provider, self.device, self.size)
        self._runtime = choice.model  # what answers; ``model`` stays the torch model itself
        self.model = choice.model.eager if isinstance(choice.model, CompiledModel) else choice.model
        self._backend = choice.backend
        self._reason = choice.reason
        self.provider: str | None = choice.provider
        self.classmap: ClassMap = loaded.classmap
        self.mean = tuple(loaded.mean)
        self.std = tuple(loaded.std)
        self.spec = loaded.spec
        self.precision = precision
        self.batch_size = batch_size

    @property
    def mode(self) -> str:
        """``whole`` or ``slide`` (from :attr:`inference`, as every setting below)."""
        return self.inference.resolved()["mode"]

    @property
    def crop(self) -> Any:
        """Sliding-window size, or None."""
        return self.inference.crop

    @property
    def stride(self) -> Any:
        """Sliding-window step, or None (two thirds of the crop)."""
        return self.inference.stride

    @property
    def size(self) -> Any:
        """Model input size images are resized to, or None (the image's own)."""
        return self.inference.size

    @property
    def scales(self) -> tuple[float, ...]:
        """Test-time scales."""
        return tuple(self.inference.resolved()["scales"])

    @property
    def flip(self) -> bool:
        """Whether mirrored views are added."""
        return self.inference.resolved()["flip"]

    @property
    def backend(self) -> str:
        """The runtime answering: torch, torch.compile, onnxruntime or torchscript."""
        runtime = self._runtime
        if isinstance(runtime, CompiledModel) and runtime.decision != "undecided":
            return "torch.compile" if runtime.decision == "compiled" else "torch"
        return self._backend

    @property
    def backend_reason(self) -> str:
        """Why :attr:`backend` answers (after the first batch, also whether it compiled)."""
        runtime = self._runtime
        if isinstance(runtime, CompiledModel) and runtime.decision != "undecided":
            return f"{self._reason}; {runtime.reason}"
        return self._reason

    def expect(self, images: int) -> None:
        """Announce how many images this predictor is about to answer.

        With ``backend="auto"`` on a CPU, a workload whose estimated time saving exceeds the
        cost of compiling runs compiled (decided at the next first batch, see
        :mod:`seglab.predict.compiled`); without it the model is never compiled.
        """
        if images < 0:
            raise ConfigError(f"expected image count must be >= 0, got {images}")
        if isinstance(self._runtime, CompiledModel):
            self._runtime.workload = images

    @property
    def num_classes(self) -> int:
        return self.classmap.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.classmap.names

    def __repr__(self) -> str:
        name = (self.spec or {}).get("name", "onnx")
        return (
            f"Predictor({name!r}, classes={self.num_classes}, device={str(self.device)!r}, "
            f"mode={self.mode!r}, backend={self.backend!r}, source={str(self.source)!r})"
        )

    def predict(self, image: Any) -> np.ndarray | Tensor:
        """Class-id mask ``[H, W]`` for one image (numpy in -> numpy out, tensor in -> tensor)."""
        chw, as_tensor, device = _as_chw(image)
        mask = class_ids(self.probabilities([chw])[0], 0)
        return _deliver(mask, as_tensor, device)

    def predict_proba(self, image: Any) -> np.ndarray | Tensor:
        """Class probabilities ``float32 [C, H, W]`` for one image (same in/out types)."""
        chw, as_tensor, device = _as_chw(image)
        return _deliver(self.probabilities([chw])[0], as_tensor, device)

    def predict_batch(self, images: Any) -> list[np.ndarray | Tensor] | np.ndarray | Tensor:
        """Masks for many images, batched by size.

        A ``uint8 [N, 3, H, W]`` tensor gives an ``int64 [N, H, W]`` tensor; a numpy
        ``[N, H, W, 3]`` array gives ``[N, H, W]``; a list (sizes may differ) gives a list.
        """
        if isinstance(images, Tensor) and images.ndim == 4:
            masks = [class_ids(p, 0) for p in self.probabilities(list(images))]
            return torch.stack(masks).to(images.device)
        if isinstance(images, np.ndarray) and images.ndim == 4:
            probs = self.probabilities([_as_chw(image)[0] for image in images])
            masks = [class_ids(p, 0).cpu().numpy() for p in probs]
            return np.stack(masks) if masks else np.zeros((0, *images.shape[1:3]), np.int64)
        converted = [_as_chw(image) for image in images]
        probs = self.probabilities([chw for chw, _, _ in converted])
        return [
            _deliver(class_ids(p, 0), as_tensor, device)
            for p, (_, as_tensor, device) in zip(probs, converted, strict=True)
        ]

    def probabilities(self, images: Sequence[Tensor]) -> list[Tensor]:
        """Probabilities ``[C, H, W]`` on the predictor's device for ``uint8 [3, H, W]`` images.

        Images of the same size share forward passes of up to ``batch_size``.
        """
        results: list[Tensor | None] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            by_size.setdefault(tuple(image.shape[-2:]), []).append(index)
        for indices in by_size.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                batch = torch.stack([images[i] for i in chunk]).to(self.device)
                probs = predict_logits(self._runtime, batch, precision=self.precision,
                                       **self.inference.predict_options())
                for i, p in zip(chunk, probs, strict=True):
                    results[i] = p
        return results  # type: ignore[return-value]


def _as_chw(image: Any) -> tuple[Tensor, bool, torch.device | None]:
    """Any supported image -> (uint8 [3, H, W] CPU/device tensor, answer as tensor?, device)."""
    if isinstance(image, Tensor):
        if image.dtype != torch.uint8:
            raise ConfigError(f"image tensor must be uint8 [3, H, W], got dtype {image.dtype}")
        if image.ndim == 2:
            image = image.unsqueeze(0)
        if image.ndim != 3 or image.shape[0] not in (1, 3):
            raise ConfigError(
                f"image tensor must be [3, H, W] (channels first), got {tuple(image.shape)}"
            )
        return image.expand(3, -1, -1), True, image.device
    if isinstance(image, (str, os.PathLike)):
        return read_image(image), False, None
    if not isinstance(image, np.ndarray) and hasattr(image, "convert"):  # a PIL image
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ConfigError(f"image array must be uint8 [H, W, 3], got dtype {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ConfigError(f"image array must be [H, W, 3] (channels last), got {array.shape}")
    chw = torch.from_numpy(np.require(array[..., :3], requirements=["C", "W"])).permute(2, 0, 1)
    return chw, False, None


def _deliver(result: Tensor, as_tensor: bool, device: torch.device | None) -> np.ndarray | Tensor:
    if as_tensor:
        return result.to(device)
    return result.cpu().numpy()
