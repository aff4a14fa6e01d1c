"""Use a trained model: ``Predictor`` for Python code, ``predict_paths`` for files and videos.

A ``Predictor`` loads any saved form of a model (a ``save_pretrained`` folder, a run folder, a
Lightning ``.ckpt`` or an exported ``.onnx``) together with its classes and normalisation, and
answers at the original resolution through the shared inference path
(:func:`seglab.engine.inference.predict_logits`). ``predict_paths`` runs it over image files,
folders, globs and videos, writes masks / colour masks / overlays / probability maps
atomically, and reports unreadable files instead of stopping at the first one.
"""

from __future__ import annotations

import functools
import glob
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from seglab.data.classes import ClassMap
from seglab.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from seglab.errors import ConfigError, DataError, ModelError, SeglabError
from seglab.io_utils import atomic_path

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})
SAVE_KINDS = ("mask", "color", "overlay", "proba")
DEFAULT_SAVE = ("mask", "color", "overlay")
TTA_SCALES = (0.75, 1.0, 1.25)


# --- the Python API --------------------------------------------------------------------------


class Predictor:
    """Predict class masks with a trained model, at the images' own resolution.

    Args:
        source: a ``save_pretrained`` folder, a run folder (its ``model/`` or best checkpoint),
            a Lightning ``.ckpt`` written by ``seglab train``, or an exported ``.onnx`` file.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... or ``"auto"`` (CUDA when available).
        mode: ``"whole"`` or ``"slide"`` (sliding ``crop`` windows every ``stride`` pixels).
        crop, stride: sliding-window size and step, ``N`` or ``(H, W)``.
        size: model input size ``(H, W)``; images are resized to it and the masks come back
            at the images' size.
        scales: test-time scales (``(0.5,)`` runs at half size and answers at full size).
        flip: add horizontally flipped views (test-time augmentation).
        precision: ``"auto"`` (bf16 on CPU, fp16 on CUDA), ``"fp32"``, ``"bf16"``, ``"fp16"``.
        batch_size: images per forward pass in :meth:`predict_batch`.

    ``mode``, ``crop``, ``stride`` and ``size`` left as None take the settings the model was
    evaluated with (its recipe's ``eval`` section and ``augment.eval_resize``), else whole-image
    inference at the image's size.

    ``predict(image)`` takes a numpy ``uint8 [H, W, 3]`` array (also ``[H, W]`` grey or
    ``[H, W, 4]`` RGBA), a PIL image or a file path and returns a numpy ``int64 [H, W]`` mask;
    a torch ``uint8 [3, H, W]`` tensor gives a torch ``int64 [H, W]`` tensor on its device.
    """

    def __init__(
        self,
        source: str | os.PathLike,
        device: str | torch.device = "cpu",
        mode: str | None = None,
        *,
        crop: int | Sequence[int] | None = None,
        stride: int | Sequence[int] | None = None,
        size: int | Sequence[int] | None = None,
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        precision: str = "auto",
        batch_size: int = 4,
    ) -> None:
        from seglab.engine.inference import MODES, PRECISIONS

        if mode is not None and mode not in MODES:
            raise ConfigError(f"unknown inference mode {mode!r}: use one of {', '.join(MODES)}")
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS)}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        loaded = load_inference_model(source, self.device)
        saved = loaded.settings
        self.mode = mode or saved.get("mode") or "whole"
        self.crop = crop if crop is not None else saved.get("crop")
        self.stride = stride if stride is not None else saved.get("stride")
        self.size = size if size is not None else saved.get("size")
        if self.mode == "slide" and self.crop is None:
            raise ConfigError("sliding-window prediction needs a crop size (e.g. crop=512)")
        self.source = loaded.source
        self.model = loaded.model
        self.classmap: ClassMap = loaded.classmap
        self.mean = tuple(loaded.mean)
        self.std = tuple(loaded.std)
        self.spec = loaded.spec
        self.scales = tuple(scales)
        self.flip = flip
        self.precision = precision
        self.batch_size = batch_size

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
            f"mode={self.mode!r}, source={str(self.source)!r})"
        )

    def predict(self, image: Any) -> np.ndarray | Tensor:
        """Class-id mask ``[H, W]`` for one image (numpy in -> numpy out, tensor in -> tensor)."""
        chw, as_tensor, device = _as_chw(image)
        mask = self.probabilities([chw])[0].argmax(0)
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
            masks = [p.argmax(0) for p in self.probabilities(list(images))]
            return torch.stack(masks).to(images.device)
        if isinstance(images, np.ndarray) and images.ndim == 4:
            probs = self.probabilities([_as_chw(image)[0] for image in images])
            masks = [p.argmax(0).cpu().numpy() for p in probs]
            return np.stack(masks) if masks else np.zeros((0, *images.shape[1:3]), np.int64)
        converted = [_as_chw(image) for image in images]
        probs = self.probabilities([chw for chw, _, _ in converted])
        return [
            _deliver(p.argmax(0), as_tensor, device)
            for p, (_, as_tensor, device) in zip(probs, converted, strict=True)
        ]

    def probabilities(self, images: Sequence[Tensor]) -> list[Tensor]:
        """Probabilities ``[C, H, W]`` on the predictor's device for ``uint8 [3, H, W]`` images.

        Images of the same size share forward passes of up to ``batch_size``.
        """
        from seglab.engine.inference import predict_logits

        results: list[Tensor | None] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            by_size.setdefault(tuple(image.shape[-2:]), []).append(index)
        for indices in by_size.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                batch = torch.stack([images[i] for i in chunk]).to(self.device)
                probs = predict_logits(
                    self.model,
                    batch,
                    mean=self.mean,
                    std=self.std,
                    mode=self.mode,
                    crop=self.crop,
                    stride=self.stride,
                    scales=self.scales,
                    flip=self.flip,
                    precision=self.precision,
                    size=self.size,
                )
                for i, p in zip(chunk, probs, strict=True):
                    results[i] = p
        return results  # type: ignore[return-value]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; other names are checked, not trusted."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {device!r}: use cpu, cuda, cuda:N or auto") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available here")
    return resolved


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
        from seglab.data.dataset import read_image

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


# --- loading any saved form of a model -------------------------------------------------------


@dataclass
class InferenceModel:
    """A model ready for :func:`predict_logits`, with what is needed to read its answers.

    ``settings`` holds the inference settings saved with the model (``size``, ``mode``,
    ``crop``, ``stride``), empty when none were saved.
    """

    model: Callable[[Tensor], dict[str, Tensor]]
    classmap: ClassMap
    mean: Sequence[float]
    std: Sequence[float]
    source: Path
    spec: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)


def load_inference_model(
    source: str | os.PathLike, device: str | torch.device = "cpu"
) -> InferenceModel:
    """Load a model folder, run folder, ``.ckpt`` or ``.onnx`` in eval mode on ``device``.

    A run folder gives its ``model/`` (the best weights) or else ``checkpoints/best.ckpt``
    (then ``last.ckpt``).
    """
    device = torch.device(device)
    path = Path(source).expanduser()
    if not path.exists():
        raise ConfigError(f"model not found: {path} (give a run folder, model folder or file)")
    if path.is_dir():
        if (path / "config.json").is_file():
            return _load_pretrained(path, device)
        if (path / "model" / "config.json").is_file():
            return _load_pretrained(path / "model", device)
        for name in ("best.ckpt", "last.ckpt"):
            if (path / "checkpoints" / name).is_file():
                return _load_checkpoint(path / "checkpoints" / name, device)
        raise ConfigError(
            f"{path} is neither a model folder (config.json) nor a run folder "
            "(model/ or checkpoints/best.ckpt)"
        )
    suffix = path.suffix.lower()
    if suffix == ".ckpt":
        return _load_checkpoint(path, device)
    if suffix == ".onnx":
        from seglab.export import load_onnx_model

        return load_onnx_model(path)
    raise ConfigError(
        f"{path}: unknown model file type {suffix!r} (expected a folder, a .ckpt or an .onnx)"
    )


def _load_pretrained(folder: Path, device: torch.device) -> InferenceModel:
    from seglab.pretrained import from_pretrained

    model, config = from_pretrained(folder, map_location=device)
    model = model.to(device).eval()
    spec = getattr(model, "seglab_spec", None) or config["model"]
    norm = config.get("normalization") or {}
    return InferenceModel(
        model=model,
        classmap=_classmap(config.get("classes"), int(spec["num_classes"])),
        mean=norm.get("mean", IMAGENET_MEAN),
        std=norm.get("std", IMAGENET_STD),
        source=folder,
        spec=spec,
        settings=_settings(config.get("inference")),
    )


def _load_checkpoint(path: Path, device: torch.device) -> InferenceModel:
    """A Lightning checkpoint of ``seglab.engine``'s module, read without unpickling objects."""
    import pickle

    from seglab.models.registry import rebuild_spec
    from seglab.models.weights import load_matching

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ModelError(
            f"{path}: cannot read checkpoint (corrupt, or not plain data): {exc}"
        ) from exc
    try:
        hparams = checkpoint["hyper_parameters"]
        recipe, classes = hparams["recipe"], hparams["classmap"]
        model_cfg = recipe["model"]
        state = checkpoint["state_dict"]
    except (KeyError, TypeError) as exc:
        raise ModelError(
            f"{path} is not a seglab training checkpoint (missing {exc}); give a run folder, "
            "a model folder or a .ckpt written by seglab train"
        ) from None
    classmap = ClassMap.from_dict(classes)
    spec = {
        "name": model_cfg["name"],
        "num_classes": classmap.num_classes,
        "options": dict(model_cfg.get("options") or {}),
    }
    model = rebuild_spec(spec)  # initial-weight options dropped: nothing is downloaded
    prefix = "model."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    load_matching(model, weights, source=str(path))
    data = recipe.get("data") or {}
    augment = recipe.get("augment") or {}
    evaluation = recipe.get("eval") or {}
    return InferenceModel(
        model=model.to(device).eval(),
        classmap=classmap,
        mean=data.get("mean") or IMAGENET_MEAN,
        std=data.get("std") or IMAGENET_STD,
        source=path,
        spec=model.seglab_spec,
        settings=_settings({"size": augment.get("eval_resize"), **evaluation}),
    )


def _classmap(classes: dict[str, Any] | None, num_classes: int) -> ClassMap:
    # A model saved without a class table still needs names and colours to draw its masks.
    if classes:
        return ClassMap.from_dict(classes)
    return ClassMap.from_names([f"class_{i}" for i in range(num_classes)])


def _settings(saved: dict[str, Any] | None) -> dict[str, Any]:
    """The saved inference settings Predictor honours, without empty values."""
    keys = ("size", "mode", "crop", "stride")
    return {k: saved[k] for k in keys if saved and saved.get(k) is not None}


# --- files, folders, globs and videos --------------------------------------------------------


@dataclass(frozen=True)
class InputFile:
    """One input and the name its outputs get (relative path without suffix)."""

    path: Path
    name: str
    is_video: bool


@dataclass
class PredictSummary:
    """What ``predict_paths`` did: one entry per input written, and the inputs it skipped."""

    out_dir: Path
    items: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        images = sum(1 for item in self.items if item["kind"] == "image")
        frames = sum(item.get("frames", 0) for item in self.items)
        return {
            "out_dir": str(self.out_dir),
            "num_images": images,
            "num_videos": len(self.items) - images,
            "num_video_frames": frames,
            "num_failed": len(self.failed),
            "seconds": round(self.seconds, 3),
            "items": self.items,
            "failed": self.failed,
        }


def collect_inputs(
    inputs: Iterable[str | os.PathLike], exclude: str | os.PathLike | None = None
) -> list[InputFile]:
    """Expand files, folders (recursively) and globs into a sorted, de-duplicated input list.

    Unsupported files inside folders are ignored; an input that names nothing is an error.
    Files under ``exclude`` (the output folder, when it lies inside an input folder) are
    skipped, so a second run does not predict its own outputs.
    """
    skip = Path(exclude).resolve() if exclude is not None else None
    found: list[InputFile] = []
    seen: set[Path] = set()
    names: set[str] = set()

    def add(path: Path, name: str) -> None:
        resolved = path.resolve()
        if resolved in seen or (skip is not None and resolved.is_relative_to(skip)):
            return
        seen.add(resolved)
        unique, counter = name, 1
        while unique in names:  # same file name from two folders: keep both
            unique, counter = f"{name}_{counter}", counter + 1
        names.add(unique)
        found.append(InputFile(path, unique, path.suffix.lower() in VIDEO_SUFFIXES))

    for raw in inputs:
        text = os.fspath(raw)
        path = Path(text).expanduser()
        if path.is_dir():
            files = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and _supported(p)
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not files:
                raise ConfigError(f"folder {path} holds no images or videos")
            for file in files:
                add(file, file.relative_to(path).with_suffix("").as_posix())
        elif path.is_file():
            if not _supported(path):
                raise ConfigError(f"{path}: not an image or video file (suffix {path.suffix!r})")
            add(path, path.stem)
        elif glob.has_magic(text):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            files = [m for m in matches if m.is_file() and _supported(m)]
            if not files:
                raise ConfigError(f"pattern {text!r} matches no images or videos")
            for file in files:
                add(file, file.stem)
        else:
            raise ConfigError(f"input not found: {path}")
    return found


def _supported(path: Path) -> bool:
    suffix = path.suffix.lower()
    return suffix in IMAGE_SUFFIXES or suffix in VIDEO_SUFFIXES


def parse_save(save: str | Iterable[str]) -> tuple[str, ...]:
    """``"mask,color"`` -> ``("mask", "color")``, checked against :data:`SAVE_KINDS`."""
    kinds = [s.strip() for s in (save.split(",") if isinstance(save, str) else save)]
    kinds = [k for k in kinds if k]
    unknown = [k for k in kinds if k not in SAVE_KINDS]
    if unknown or not kinds:
        raise ConfigError(
            f"cannot save {', '.join(unknown) or 'nothing'}: choose from {', '.join(SAVE_KINDS)}"
        )
    return tuple(dict.fromkeys(kinds))


def predict_paths(
    predictor: Predictor,
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    save: str | Iterable[str] = DEFAULT_SAVE,
    alpha: float = 0.5,
    progress: bool = True,
) -> PredictSummary:
    """Predict every image and video in ``inputs`` and write the results under ``out_dir``.

    Layout: ``mask/<name>.png`` (8-bit class ids, 16-bit above 256 classes),
    ``color/<name>.png`` (dataset palette), ``overlay/<name>.png`` (mask over the image with
    ``alpha``), ``proba/<name>.npz`` (``proba``: float16 ``[C, H, W]``, ``classes``), and
    ``video/<name>.mp4`` (overlay video) for each video. ``<name>`` keeps the path relative to
    an input folder. Unreadable files are listed in ``summary.failed`` and skipped.
    """
    kinds = parse_save(save)
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must lie in 0..1, got {alpha}")
    files = collect_inputs(inputs, exclude=out_dir)
    summary = PredictSummary(Path(out_dir))
    started = time.perf_counter()
    images = [f for f in files if not f.is_video]
    videos = [f for f in files if f.is_video]
    writer = _OutputWriter(predictor.classmap, summary.out_dir, kinds, alpha)
    with _progress_bar(progress) as bar, ThreadPoolExecutor(max_workers=2) as pool:
        if images:
            task = bar.add_task("images", total=len(images))
            for item, result in _predict_images(predictor, images, pool):
                if isinstance(result, SeglabError):
                    summary.failed.append({"input": str(item.path), "error": str(result)})
                else:
                    image, probs = result
                    summary.items.append(writer.write_image(item, image, probs, pool))
                bar.advance(task)
            writer.wait()
        for video in videos:
            task = bar.add_task(f"video {video.path.name}", total=_frame_count(video.path))
            try:
                summary.items.append(
                    _predict_video(predictor, video, writer, functools.partial(bar.advance, task))
                )
            except SeglabError as exc:
                summary.failed.append({"input": str(video.path), "error": str(exc)})
    summary.seconds = time.perf_counter() - started
    return summary


def _predict_images(
    predictor: Predictor, images: Sequence[InputFile], pool: ThreadPoolExecutor
) -> Iterator[tuple[InputFile, tuple[Tensor, Tensor] | SeglabError]]:
    """Decode ahead in threads, batch consecutive same-size images, yield per-image results."""
    from seglab.data.dataset import read_image

    pending: deque[tuple[InputFile, Future]] = deque()
    queue = iter(images)
    lookahead = 2 * predictor.batch_size

    def refill() -> None:
        while len(pending) < lookahead:
            item = next(queue, None)
            if item is None:
                return
            pending.append((item, pool.submit(read_image, item.path)))

    batch: list[tuple[InputFile, Tensor]] = []

    def flush() -> Iterator[tuple[InputFile, tuple[Tensor, Tensor]]]:
        probs = predictor.probabilities([image for _, image in batch])
        for (item, image), p in zip(batch, probs, strict=True):
            yield item, (image, p)
        batch.clear()

    refill()
    while pending:
        item, future = pending.popleft()
        refill()
        try:
            image = future.result()
        except SeglabError as exc:
            yield item, exc
            continue
        if batch and (
            tuple(image.shape) != tuple(batch[0][1].shape) or len(batch) >= predictor.batch_size
        ):
            yield from flush()
        batch.append((item, image))
    if batch:
        yield from flush()


class _OutputWriter:
    """Writes the selected outputs of one prediction, in worker threads, atomically."""

    def __init__(
        self, classmap: ClassMap, out_dir: Path, kinds: Sequence[str], alpha: float
    ) -> None:
        self.classmap = classmap
        self.palette = classmap.palette()
        self.out_dir = out_dir
        self.kinds = kinds
        self.alpha = alpha
        self._futures: deque[Future] = deque()
        self._max_pending = 8  # bounds memory when encoding is slower than inference

    def write_image(
        self, item: InputFile, image: Tensor, probs: Tensor, pool: ThreadPoolExecutor
    ) -> dict[str, Any]:
        mask = probs.argmax(0).cpu().numpy()
        proba = probs.to(torch.float16).cpu().numpy() if "proba" in self.kinds else None
        outputs = {kind: self.path(kind, item.name) for kind in self.kinds}
        rgb = image.permute(1, 2, 0).numpy()
        while len(self._futures) >= self._max_pending:
            self._settle(self._futures.popleft())
        self._futures.append(pool.submit(self._write, outputs, rgb, mask, proba))
        return {
            "input": str(item.path),
            "kind": "image",
            "size": [int(mask.shape[0]), int(mask.shape[1])],
            "outputs": {kind: str(path) for kind, path in outputs.items()},
            "class_shares": class_shares(mask, self.classmap),
        }

    def path(self, kind: str, name: str) -> Path:
        suffix = {"mask": ".png", "color": ".png", "overlay": ".png", "proba": ".npz"}[kind]
        return self.out_dir / kind / f"{name}{suffix}"

    def _write(
        self, outputs: dict[str, Path], rgb: np.ndarray, mask: np.ndarray, proba: np.ndarray | None
    ) -> None:
        from seglab.viz import colorize, overlay

        for kind, path in outputs.items():
            if kind == "mask":
                _write_png(
                    path, mask.astype(np.uint8 if self.palette.shape[0] <= 256 else np.uint16)
                )
            elif kind == "color":
                _write_png(path, colorize(mask, self.palette, self.classmap.ignore_index))
            elif kind == "overlay":
                _write_png(path, overlay(rgb, mask, self.palette, self.alpha))
            elif kind == "proba":
                with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                    np.savez_compressed(
                        handle, proba=proba, classes=np.asarray(self.classmap.names)
                    )

    def wait(self) -> None:
        """Finish every pending write; the first failure is raised (not a bad input)."""
        while self._futures:
            self._settle(self._futures.popleft())

    @staticmethod
    def _settle(future: Future) -> None:
        try:
            future.result()
        except OSError as exc:  # disk full, permissions: stop, this is no bad input
            raise SeglabError(f"cannot write {exc.filename or 'an output'}: {exc}") from exc


def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def class_shares(mask: np.ndarray, classmap: ClassMap) -> dict[str, float]:
    """Share of pixels per class name (all classes, summing to 1 over predicted pixels)."""
    counts = np.bincount(mask.ravel(), minlength=classmap.num_classes)[: classmap.num_classes]
    return _shares(counts, classmap)


def _shares(counts: np.ndarray, classmap: ClassMap) -> dict[str, float]:
    total = max(int(counts.sum()), 1)
    return {name: round(int(c) / total, 6) for name, c in zip(classmap.names, counts, strict=True)}


# --- video -----------------------------------------------------------------------------------


def _frame_count(path: Path) -> int | None:
    import av

    try:
        with av.open(str(path)) as container:
            frames = container.streams.video[0].frames if container.streams.video else 0
    except (av.error.FFmpegError, OSError):
        return None
    return frames or None


def _predict_video(
    predictor: Predictor,
    item: InputFile,
    writer: _OutputWriter,
    advance: Callable[[int], None],
) -> dict[str, Any]:
    """Overlay video ``video/<name>.mp4`` with the same size, frame count and frame rate."""
    import av

    target = writer.out_dir / "video" / f"{item.name}.mp4"
    counts = np.zeros(predictor.num_classes, dtype=np.int64)
    frames = 0
    try:
        with av.open(str(item.path)) as source:
            if not source.streams.video:
                raise DataError(f"{item.path}: no video stream")
            stream = source.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or 30
            with atomic_path(target) as tmp, av.open(str(tmp), "w", format="mp4") as sink:
                encoder = None
                batch: list[np.ndarray] = []

                def flush() -> None:
                    nonlocal encoder, frames
                    tensors = [torch.from_numpy(f).permute(2, 0, 1) for f in batch]
                    for rgb, probs in zip(batch, predictor.probabilities(tensors), strict=True):
                        mask = probs.argmax(0).cpu().numpy()
                        counts[:] += np.bincount(mask.ravel(), minlength=len(counts))[: len(counts)]
                        blended = _overlay(rgb, mask, writer)
                        if encoder is None:
                            encoder = _video_encoder(sink, rate, rgb.shape[1], rgb.shape[0])
                        frame = av.VideoFrame.from_ndarray(blended, format="rgb24")
                        for packet in encoder.encode(frame):
                            sink.mux(packet)
                    frames += len(batch)
                    advance(len(batch))
                    batch.clear()

                for frame in source.decode(stream):
                    batch.append(frame.to_ndarray(format="rgb24"))
                    if len(batch) >= predictor.batch_size:
                        flush()
                if batch:
                    flush()
                if encoder is None:
                    raise DataError(f"{item.path}: the video has no frames")
                for packet in encoder.encode():
                    sink.mux(packet)
    except av.error.FFmpegError as exc:
        raise DataError(f"{item.path}: cannot decode video ({exc})") from exc
    return {
        "input": str(item.path),
        "kind": "video",
        "frames": frames,
        "fps": float(rate),
        "outputs": {"video": str(target)},
        "class_shares": _shares(counts, predictor.classmap),
    }


def _overlay(rgb: np.ndarray, mask: np.ndarray, writer: _OutputWriter) -> np.ndarray:
    from seglab.viz import overlay

    return overlay(rgb, mask, writer.palette, writer.alpha, writer.classmap.ignore_index)


def _video_encoder(sink: Any, rate: Any, width: int, height: int) -> Any:
    import av

    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    stream = sink.add_stream(codec, rate=rate)
    stream.width, stream.height = width, height
    # 4:2:0 (what every player reads) needs even sizes; odd sizes keep full chroma instead.
    stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    return stream


# --- progress --------------------------------------------------------------------------------


class _NoProgress:
    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def advance(self, *args: Any, **kwargs: Any) -> None:
        return None


def _progress_bar(enabled: bool) -> Any:
    if not enabled:
        return _NoProgress()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from seglab.cli.output import err_console

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )
