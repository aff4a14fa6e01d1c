"""Export a trained model to ONNX or TorchScript, check it against eager PyTorch, run it back.

The exported graph has one input, ``input``: a *normalised* float32 ``[N, 3, H, W]`` batch
(``(pixels / 255 - mean) / std`` with the model's own mean/std), and one output, ``out``: the
class logits ``[N, C, H, W]`` at the input's size. Auxiliary heads are dropped. Without
``dynamic`` every axis is fixed to the export size (batch 1); with it batch, height and width
are free (ONNX only).

The model's config (spec, classes, normalisation, inference settings) travels inside the file:
as ONNX ``metadata_props`` (key ``seglab_config``, JSON) or as a TorchScript extra file
(``seglab_config.json``), so an exported file alone is enough for :class:`seglab.Predictor`.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from seglab.errors import ConfigError, ModelError
from seglab.io_utils import atomic_path

FORMATS = ("onnx", "torchscript")
CONFIG_KEY = "seglab_config"
TORCHSCRIPT_CONFIG_FILE = "seglab_config.json"
INPUT_NAME = "input"
OUTPUT_NAME = "out"
DEFAULT_INPUT_SIZE = (512, 512)
# The parity gate: an export that changes more predicted pixels than this is not a faithful copy.
MIN_AGREEMENT = 0.999


class LogitsOnly(nn.Module):
    """The model's ``"out"`` logits as a plain tensor (exporters want tensors, not dicts)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)["out"]


# --- loading what to export ------------------------------------------------------------------


def _source_config(source: Any) -> tuple[nn.Module, dict[str, Any]]:
    """(eval-mode CPU model, config to embed) for a module, model/run folder or ``.ckpt``."""
    from seglab.pretrained import DEFAULT_MEAN, DEFAULT_STD

    if isinstance(source, nn.Module):
        spec = getattr(source, "seglab_spec", None)
        config: dict[str, Any] = {
            "model": spec if isinstance(spec, dict) else {"name": type(source).__name__},
            "classes": None,
            "normalization": {"mean": list(DEFAULT_MEAN), "std": list(DEFAULT_STD)},
            "inference": {},
        }
        return source.cpu().eval(), config
    from seglab.predict import load_inference_model

    if Path(source).suffix.lower() == ".onnx":
        raise ConfigError(f"{source} is already an exported ONNX file: give the model or run")
    loaded = load_inference_model(source, "cpu")
    config = {
        "model": loaded.spec,
        "classes": loaded.classmap.to_dict(),
        "normalization": {"mean": [float(v) for v in loaded.mean],
                          "std": [float(v) for v in loaded.std]},
        "inference": dict(loaded.settings),
    }
    return loaded.model.eval(), config


def _model_name(config: dict[str, Any]) -> str:
    return str((config.get("model") or {}).get("name", "model"))


def _default_size(config: dict[str, Any]) -> tuple[int, int]:
    settings = config.get("inference") or {}
    size = settings.get("crop") if settings.get("mode") == "slide" else settings.get("size")
    if size is None:
        return DEFAULT_INPUT_SIZE
    size = [size] if isinstance(size, int) else list(size)
    return int(size[0]), int(size[-1])


# --- parity inputs ---------------------------------------------------------------------------


def parity_images(input_size: Sequence[int], count: int = 2) -> tuple[Tensor, str]:
    """uint8 ``[count, 3, H, W]`` CamVid-11 test images resized to ``input_size``, or random.

    Returns the batch and where it came from (``"camvid11 test images"`` or ``"random"``).
    """
    from seglab.paths import data_root

    height, width = int(input_size[0]), int(input_size[-1])
    root = data_root()
    folder = root / "camvid11" / "test" if root is not None else None
    files = sorted(folder.glob("*.png"))[:count] if folder and folder.is_dir() else []
    if len(files) == count:
        from PIL import Image

        images = []
        for file in files:
            with Image.open(file) as image:
                resized = image.convert("RGB").resize((width, height), Image.BILINEAR)
            images.append(torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1))
        return torch.stack(images), "camvid11 test images"
    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (count, 3, height, width), generator=generator)
    return batch.to(torch.uint8), "random"


def normalised(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Float batch as the exported graph expects it: ``(images / 255 - mean) / std``."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean_t) / std_t


def parity(reference: Tensor, exported: Tensor) -> dict[str, float]:
    """Max |logit difference| and the share of pixels whose argmax agrees."""
    reference, exported = reference.float(), exported.float()
    if reference.shape != exported.shape:
        raise ModelError(
            f"exported model answers {tuple(exported.shape)}, eager model "
            f"{tuple(reference.shape)}"
        )
    agree = (reference.argmax(1) == exported.argmax(1)).float().mean().item()
    return {"max_abs_diff": (reference - exported).abs().max().item(), "argmax_agreement": agree}


# --- exporting -------------------------------------------------------------------------------


def export_model(
    source: nn.Module | str | os.PathLike,
    format: str = "onnx",  # noqa: A002 - the user-facing name of the option
    out: str | os.PathLike | None = None,
    *,
    dynamic: bool = False,
    input_size: Sequence[int] | None = None,
    opset: int = 17,
    parity_count: int = 2,
) -> dict[str, Any]:
    """Export ``source`` to ``out`` and check it against the eager model.

    Args:
        source: an ``nn.Module`` from :func:`seglab.build_model`, a model folder, a run folder
            or a ``.ckpt`` from ``seglab train``.
        format: ``"onnx"`` or ``"torchscript"`` (traced).
        out: file to write (replaced atomically).
        dynamic: free batch/height/width axes (ONNX only).
        input_size: ``(H, W)`` the graph is traced at (and fixed to without ``dynamic``);
            default: the model's saved inference size, else 512x512.
        opset: ONNX opset.
        parity_count: images for the parity check (CamVid-11 test images when available).

    Returns:
        A JSON-safe report: ``path``, ``format``, ``model``, ``input_size``, ``dynamic``,
        ``bytes``, ``export_seconds`` and ``parity`` (``max_abs_diff``, ``argmax_agreement``,
        ``images``, ``inputs``).

    Raises:
        ModelError: the model cannot be exported (named, with the exporter's reason).
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}: use one of {', '.join(FORMATS)}")
    if out is None:
        raise ConfigError("export needs an output file (out=...)")
    if dynamic and format == "torchscript":
        raise ConfigError(
            "--dynamic applies to ONNX only: a traced TorchScript file is checked at its "
            "input size only"
        )
    model, config = _source_config(source)
    name = _model_name(config)
    size = tuple(int(v) for v in input_size) if input_size is not None else _default_size(config)
    if len(size) == 1:
        size = (size[0], size[0])
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"input_size must be (H, W) with positive values, got {input_size}")
    config["export"] = {
        "format": format,
        "input_size": list(size),
        "dynamic": dynamic,
        "input": "normalised float32 [N, 3, H, W]",
        "output": "logits [N, C, H, W] at input size",
    }
    if format == "onnx":
        config["export"]["opset"] = opset
    if not dynamic:  # the graph only takes this size: Predictor resizes to it
        settings = config["inference"]
        if settings.get("mode") == "slide":
            settings["crop"] = list(size)
        else:
            settings.update(mode="whole", size=list(size))
    from seglab.pretrained import _version

    config["seglab_version"] = _version()
    wrapper = LogitsOnly(model).eval()
    example = torch.zeros(1, 3, *size)
    out = Path(out)
    started = time.perf_counter()
    with atomic_path(out) as tmp:
        if format == "onnx":
            _export_onnx(wrapper, example, tmp, config, name, dynamic, opset)
        else:
            _export_torchscript(wrapper, example, tmp, config, name)
        seconds = time.perf_counter() - started
        check = _check(wrapper, tmp, format, config, size, parity_count, shown_as=out)
    return {
        "path": str(out),
        "format": format,
        "model": name,
        "input_size": list(size),
        "dynamic": dynamic,
        "bytes": out.stat().st_size,
        "export_seconds": round(seconds, 2),
        "parity": check,
    }


def _traced_quietly(name: str, action):
    """Run an exporter with its tracer chatter silenced; any failure names the model."""
    with warnings.catch_warnings():
        # Tracer warnings flag every shape test (all models have them); a branch that really
        # depends on values is caught by the parity gate instead.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation notices
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            with torch.no_grad():
                return action()
        except Exception as exc:  # exporters raise many types; all mean "cannot export"
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"cannot export {name}: {type(exc).__name__}: {reason}") from exc


def _export_onnx(wrapper: nn.Module, example: Tensor, path: Path, config: dict[str, Any],
                 name: str, dynamic: bool, opset: int) -> None:
    import onnx

    axes = {0: "batch", 2: "height", 3: "width"}
    dynamic_axes = {INPUT_NAME: axes, OUTPUT_NAME: axes} if dynamic else None
    _traced_quietly(name, lambda: torch.onnx.export(
        wrapper, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False,
    ))
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = CONFIG_KEY, json.dumps(config)
    onnx.save(proto, str(path))


def _export_torchscript(wrapper: nn.Module, example: Tensor, path: Path,
                        config: dict[str, Any], name: str) -> None:
    traced = _traced_quietly(name, lambda: torch.jit.trace(wrapper, example, check_trace=False))
    extra = {TORCHSCRIPT_CONFIG_FILE: json.dumps(config)}
    _traced_quietly(name, lambda: torch.jit.save(traced, str(path), _extra_files=extra))


def _check(wrapper: nn.Module, path: Path, format: str, config: dict[str, Any],  # noqa: A002
           size: Sequence[int], count: int, shown_as: Path) -> dict[str, Any]:
    """Parity on real images at the export size (and at another size for dynamic axes).

    Refuses (ModelError) an export that changes more than 0.1% of the predicted pixels: the
    usual cause is a forward whose Python control flow depends on tensor values, which a
    trace freezes to the branch the example input took.
    """
    exported = OnnxSegmenter(path) if format == "onnx" else TorchScriptSegmenter(path)
    exported.path = shown_as  # errors name the file being written, not its temporary twin
    sizes = [tuple(size)]
    if config["export"]["dynamic"]:
        sizes.append((size[0] + size[0] // 2 + 1, size[1] + size[1] // 4 + 3))
    norm = config["normalization"]
    report: dict[str, Any] = {}
    for index, check_size in enumerate(sizes):
        images, origin = parity_images(check_size, count)
        x = normalised(images, norm["mean"], norm["std"])
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            reference = torch.cat([wrapper(x[i : i + 1]) for i in range(len(x))])
            try:
                answer = exported(x)["out"]
            except ModelError as exc:
                if index == 0:
                    raise
                raise ModelError(
                    f"cannot export {_model_name(config)} with dynamic axes: traced at "
                    f"{size[0]}x{size[1]}, its graph fails at {check_size[0]}x{check_size[1]} "
                    f"({exc}); export without --dynamic at the size you will run"
                ) from exc
        result = {**parity(reference, answer), "images": len(x), "inputs": origin,
                  "size": list(check_size)}
        if result["argmax_agreement"] < MIN_AGREEMENT and index > 0:
            raise ModelError(
                f"cannot export {_model_name(config)} with dynamic axes: traced at "
                f"{size[0]}x{size[1]}, its graph gives different answers at "
                f"{check_size[0]}x{check_size[1]} (argmax agreement "
                f"{result['argmax_agreement']:.2%}, max |logit diff| "
                f"{result['max_abs_diff']:.3g}) because shape-dependent steps were frozen; "
                "export without --dynamic at the size you will run"
            )
        if result["argmax_agreement"] < MIN_AGREEMENT:
            raise ModelError(
                f"cannot export {_model_name(config)}: the exported graph does not reproduce "
                f"the model at {check_size[0]}x{check_size[1]} (argmax agreement "
                f"{result['argmax_agreement']:.2%}, max |logit diff| "
                f"{result['max_abs_diff']:.3g}); its forward likely branches on tensor values "
                "(data-dependent Python control flow), which tracing freezes"
            )
        if index == 0:
            report.update(result)
        else:
            report["other_size"] = result
    return report


# --- running exported files ------------------------------------------------------------------


class _ExportedSegmenter:
    """Shared parts: the embedded config and per-image calls for a fixed batch of 1."""

    config: dict[str, Any]
    device = torch.device("cpu")

    @property
    def classes(self) -> dict[str, Any] | None:
        return self.config.get("classes")

    @property
    def mean(self) -> list[float]:
        return list(self.config["normalization"]["mean"])

    @property
    def std(self) -> list[float]:
        return list(self.config["normalization"]["std"])

    @property
    def spec(self) -> dict[str, Any] | None:
        return self.config.get("model")

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.config["export"]["input_size"])

    @property
    def dynamic(self) -> bool:
        return bool(self.config["export"].get("dynamic"))

    def _check_shape(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ModelError(f"{self.path}: expects a [N, 3, H, W] batch, got {tuple(x.shape)}")
        if not self.dynamic and tuple(x.shape[2:]) != self.input_size:
            height, width = self.input_size
            raise ModelError(
                f"{self.path} was exported for {height}x{width} inputs, got "
                f"{x.shape[2]}x{x.shape[3]}: resize first (Predictor does) or export --dynamic"
            )

    def __call__(self, x: Tensor) -> dict[str, Tensor]:
        self._check_shape(x)
        x = x.detach().float().cpu()
        if self.dynamic:
            return {"out": self._run(x)}
        return {"out": torch.cat([self._run(x[i : i + 1]) for i in range(len(x))])}

    def _run(self, x: Tensor) -> Tensor:
        raise NotImplementedError


class OnnxSegmenter(_ExportedSegmenter):
    """An exported ``.onnx`` as a model: ``segmenter(x) -> {"out": logits}`` (CPU tensors).

    ``x`` is a normalised float ``[N, 3, H, W]`` batch; a file exported without ``dynamic``
    takes its export size only (batches are run one image at a time). ``config`` is the
    embedded seglab config (``classes``, ``normalization``, ``model``, ``inference``,
    ``export``); ``providers`` are ONNX Runtime execution providers (CPU by default).
    """

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] | None = None,
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"ONNX file not found: {self.path}")
        options = ort.SessionOptions()
        options.log_severity_level = 4  # failures are raised as ModelError, not logged twice
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=list(providers or ["CPUExecutionProvider"])
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise ModelError(f"{self.path}: ONNX Runtime cannot load it: {exc}") from exc
        raw = self.session.get_modelmeta().custom_metadata_map.get(CONFIG_KEY)
        if raw is None:
            raise ModelError(
                f"{self.path} has no {CONFIG_KEY} metadata: export it with seglab export"
            )
        self.config = json.loads(raw)
        self.input_name = self.session.get_inputs()[0].name

    def _run(self, x: Tensor) -> Tensor:
        try:
            (logits,) = self.session.run([OUTPUT_NAME], {self.input_name: x.numpy()})
        except Exception as exc:  # onnxruntime's errors are untyped
            raise ModelError(
                f"{self.path}: ONNX Runtime failed on a {tuple(x.shape)} batch: {exc}"
            ) from exc
        return torch.from_numpy(logits)

    def __repr__(self) -> str:
        return f"OnnxSegmenter({str(self.path)!r}, model={_model_name(self.config)!r})"


class TorchScriptSegmenter(_ExportedSegmenter):
    """A traced TorchScript file from :func:`export_model`, called like :class:`OnnxSegmenter`."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        extra = {TORCHSCRIPT_CONFIG_FILE: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation notice
                self.module = torch.jit.load(str(self.path), map_location="cpu",
                                             _extra_files=extra)
        except (RuntimeError, OSError, ValueError) as exc:
            raise ModelError(f"{self.path}: cannot load TorchScript file: {exc}") from exc
        if not extra[TORCHSCRIPT_CONFIG_FILE]:
            raise ModelError(f"{self.path} has no {TORCHSCRIPT_CONFIG_FILE}: not a seglab export")
        self.config = json.loads(extra[TORCHSCRIPT_CONFIG_FILE])
        self.module.eval()

    def _run(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.module(x)


def load_onnx_model(path: str | os.PathLike, providers: Sequence[str] | None = None):
    """An exported ``.onnx`` as a :class:`seglab.predict.InferenceModel` (for ``Predictor``)."""
    from seglab.predict import InferenceModel, _classmap, _settings

    segmenter = OnnxSegmenter(path, providers=providers)
    channels = segmenter.session.get_outputs()[0].shape[1]
    num_classes = channels if isinstance(channels, int) else (segmenter.spec or {})["num_classes"]
    return InferenceModel(
        model=segmenter,
        classmap=_classmap(segmenter.classes, int(num_classes)),
        mean=segmenter.mean,
        std=segmenter.std,
        source=Path(path),
        spec=segmenter.spec,
        settings=_settings(segmenter.config.get("inference")),
    )
