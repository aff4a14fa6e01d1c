"""Run exported files: ONNX Runtime and TorchScript wrappers called like a seglab model.

An export (see :mod:`seglab.export`) takes a *normalised* float32 ``[N, 3, H, W]`` batch named
``input`` and answers the logits ``out`` ``[N, C, H, W]``; its seglab config (spec, classes,
normalisation, inference settings, export settings) travels inside the file, as ONNX
``metadata_props`` (key :data:`CONFIG_KEY`) or a TorchScript extra file
(:data:`TORCHSCRIPT_CONFIG_FILE`).

A file seglab did not write (``external=True``, used by the loader) is read too: its first
input, and its output named ``out`` or else its first output (a TorchScript dict output gives
its ``"out"``, a tuple its first item); what it does not say (normalisation, classes) comes
from :class:`~seglab.artifacts.settings.ModelSettings`, merged by the loader.

ONNX files run on an ONNX Runtime execution provider chosen by :func:`resolve_provider`
(``cpu``, ``cuda``, ``tensorrt``, ``openvino``, ... or a full provider name); which ones this
installation has is :func:`available_providers`.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from seglab.artifacts.model import InferenceModel, InferenceSettings, saved_classmap
from seglab.errors import ConfigError, ModelError

CONFIG_KEY = "seglab_config"
TORCHSCRIPT_CONFIG_FILE = "seglab_config.json"
INPUT_NAME = "input"
OUTPUT_NAME = "out"
ONNX_SUFFIX = ".onnx"
TORCHSCRIPT_SUFFIXES = (".pt", ".ts", ".torchscript")
CPU_PROVIDER = "CPUExecutionProvider"
# Short names users type -> ONNX Runtime's provider names (and the package that brings each).
PROVIDER_ALIASES = {
    "cpu": ("CPUExecutionProvider", "onnxruntime"),
    "cuda": ("CUDAExecutionProvider", "onnxruntime-gpu"),
    "tensorrt": ("TensorrtExecutionProvider", "onnxruntime-gpu with TensorRT"),
    "openvino": ("OpenVINOExecutionProvider", "onnxruntime-openvino"),
    "dml": ("DmlExecutionProvider", "onnxruntime-directml"),
    "coreml": ("CoreMLExecutionProvider", "onnxruntime on macOS"),
    "rocm": ("ROCMExecutionProvider", "onnxruntime-rocm"),
}


def available_providers() -> list[str]:
    """ONNX Runtime execution providers this installation can use (empty without onnxruntime)."""
    try:
        import onnxruntime as ort  # lazy: the optional export extra, absent in a base install
    except ImportError:
        return []
    return list(ort.get_available_providers())


def resolve_provider(provider: str | None) -> list[str]:
    """The provider list for a session: ``provider`` first, then the CPU for unsupported nodes.

    ``provider`` is a short name (``cpu``, ``cuda``, ``tensorrt``, ``openvino``, ``dml``,
    ``coreml``, ``rocm``, any case) or a full ONNX Runtime name (``CUDAExecutionProvider``);
    None means the CPU.

    Raises:
        ConfigError: unknown, or not available in this installation (names what is).
    """
    if provider is None or not str(provider).strip():
        provider = "cpu"
    key = str(provider).strip()
    name, package = PROVIDER_ALIASES.get(key.lower(), (key, None))
    known = {full.lower(): full for full, _ in PROVIDER_ALIASES.values()}
    name = known.get(name.lower(), name)
    available = available_providers()
    if not available:
        raise ConfigError(
            f"ONNX Runtime is not installed, so provider {key!r} cannot run: install "
            "seglab's export extra (onnx, onnxruntime)"
        )
    if name not in available:
        hint = f" (it comes with {package})" if package else ""
        if key.lower() not in PROVIDER_ALIASES and not name.endswith("ExecutionProvider"):
            hint = f"; short names: {', '.join(PROVIDER_ALIASES)}"
        raise ConfigError(
            f"ONNX Runtime execution provider {name!r} (from {key!r}) is not available here"
            f"{hint}; available: {', '.join(available)}"
        )
    return [name] if name == CPU_PROVIDER else [name, CPU_PROVIDER]


def read_config(raw: str | None, path: Path, where: str) -> dict[str, Any]:
    """The embedded seglab config, checked for what the runtimes need.

    Raises:
        ModelError: missing, not JSON, not an object, or without a usable normalisation.
    """
    if raw is None or not raw.strip():
        raise ModelError(f"{path} has no {where}: not a seglab export (export it with "
                         "seglab export)")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: its {where} is not valid JSON ({exc}); re-export the "
                         "model with seglab export") from None
    if not isinstance(config, dict):
        raise ModelError(f"{path}: its {where} must be a JSON object, got "
                         f"{type(config).__name__}")
    norm = config.get("normalization")
    values = [norm.get(k) for k in ("mean", "std")] if isinstance(norm, dict) else [None, None]
    if not all(isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v)
               for v in values) or len(values[0]) != len(values[1]):
        raise ModelError(
            f"{path}: its {where} lacks the input normalisation (\"normalization\": "
            f"{{\"mean\": [one number per band], \"std\": [as many]}}), got {norm!r}; the "
            "model cannot be fed without it"
        )
    if any(v <= 0 for v in values[1]):
        raise ModelError(f"{path}: its {where} has a non-positive std {values[1]}")
    export = config.get("export")
    if not isinstance(export, dict) or not isinstance(export.get("input_size"), list):
        raise ModelError(f"{path}: its {where} lacks export.input_size: re-export it with "
                         "seglab export")
    return config


class _ExportedSegmenter:
    """Shared parts: the embedded config and per-image calls for a fixed batch of 1."""

    config: dict[str, Any]
    device = torch.device("cpu")
    embedded = True  # False: a file seglab did not write; the loader completes ``config``
    reverse_channels = False  # True: the model reads BGR, the pipeline hands it RGB

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
        bands = len(self.mean)
        if x.ndim != 4 or x.shape[1] != bands:
            raise ModelError(
                f"{self.path}: expects a [N, {bands}, H, W] batch, got {tuple(x.shape)}"
            )
        if not self.dynamic and tuple(x.shape[2:]) != self.input_size:
            height, width = self.input_size
            raise ModelError(
                f"{self.path} was exported for {height}x{width} inputs, got "
                f"{x.shape[2]}x{x.shape[3]}: resize first (Predictor does) or export --dynamic"
            )

    @property
    def batch(self) -> int:
        """The batch a fixed-size graph takes (1 unless exported with another)."""
        return int(self.config["export"].get("batch", 1))

    def __call__(self, x: Tensor) -> dict[str, Tensor]:
        self._check_shape(x)
        x = x.detach().float().cpu()
        if self.reverse_channels:
            x = x.flip(1).contiguous()
        if self.dynamic or (self.batch > 1 and len(x) == self.batch):
            return {"out": self._run(x)}
        if self.batch > 1:
            raise ModelError(f"{self.path} was exported for batches of {self.batch}, got "
                             f"{len(x)}: export --dynamic for any batch")
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
                 threads: int | None = None, provider: str | None = None, *,
                 external: bool = False) -> None:
        import onnxruntime as ort  # lazy: the optional export extra, absent in a base install

        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"ONNX file not found: {self.path}")
        if providers is None:
            providers = resolve_provider(provider)
        options = ort.SessionOptions()
        options.log_severity_level = 4  # failures are raised as ModelError, not logged twice
        if threads:
            options.intra_op_num_threads = threads
        if os.environ.get("OMP_WAIT_POLICY", "PASSIVE").upper() != "ACTIVE":
            # Idle threads sleep instead of spinning, like seglab's OpenMP default: on a busy
            # 2-core CPU spinning made LR-ASPP at 360x480 1.6x slower (371 vs 233 ms).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options,
                                                providers=list(providers))
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise ModelError(f"{self.path}: ONNX Runtime cannot load it: {exc}") from exc
        self.providers = list(self.session.get_providers())
        raw = self.session.get_modelmeta().custom_metadata_map.get(CONFIG_KEY)
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_name = OUTPUT_NAME if OUTPUT_NAME in outputs else outputs[0]
        if external and (raw is None or not raw.strip()):
            self.embedded = False
            self.config = {"export": _graph_export(first.shape, "onnx")}
        else:
            self.config = read_config(raw, self.path, f"{CONFIG_KEY} metadata")

    def _run(self, x: Tensor) -> Tensor:
        try:
            (logits,) = self.session.run([self.output_name], {self.input_name: x.numpy()})
        except Exception as exc:  # onnxruntime's errors are untyped
            raise ModelError(
                f"{self.path}: ONNX Runtime failed on a {tuple(x.shape)} batch: {exc}"
            ) from exc
        return torch.from_numpy(logits)

    def __repr__(self) -> str:
        name = (self.spec or {}).get("name", "model")
        return (f"OnnxSegmenter({str(self.path)!r}, model={name!r}, "
                f"provider={self.providers[0]!r})")


class TorchScriptSegmenter(_ExportedSegmenter):
    """A traced TorchScript file from :func:`export_model`, called like :class:`OnnxSegmenter`."""

    def __init__(self, path: str | os.PathLike, *, external: bool = False) -> None:
        self.path = Path(path)
        extra = {TORCHSCRIPT_CONFIG_FILE: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation notice
                self.module = torch.jit.load(str(self.path), map_location="cpu",
                                             _extra_files=extra)
        except (RuntimeError, OSError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(
                f"{self.path}: cannot load TorchScript file ({reason}); seglab reads .pt files "
                "written by seglab export, a model folder or a .ckpt"
            ) from exc
        raw = extra[TORCHSCRIPT_CONFIG_FILE]
        raw = raw.decode() if isinstance(raw, bytes) else raw
        if external and not raw.strip():
            self.embedded = False
            self.config = {"export": _graph_export(None, "torchscript")}
        else:
            self.config = read_config(raw, self.path, TORCHSCRIPT_CONFIG_FILE)
        self.module.eval()

    def _run(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return first_tensor(self.module(x), self.path)


def first_tensor(output: Any, source: Any) -> Tensor:
    """The logits in a model's answer: a tensor, a dict's ``"out"``, a tuple's first item."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, dict) and isinstance(output.get(OUTPUT_NAME), Tensor):
        return output[OUTPUT_NAME]
    if isinstance(output, list | tuple) and output and isinstance(output[0], Tensor):
        return output[0]
    keys = f" (keys {', '.join(map(str, output))})" if isinstance(output, dict) else ""
    raise ModelError(
        f"{source} answers {type(output).__name__}{keys}, not logits: its forward must return "
        'a [N, C, H, W] tensor or {"out": logits}'
    )


def _graph_export(shape: Sequence[Any] | None, format: str) -> dict[str, Any]:  # noqa: A002
    """The ``export`` config of a file seglab did not write, read from its input's shape."""
    dims = list(shape) if shape is not None else []
    fixed = len(dims) == 4 and all(isinstance(d, int) and d > 0 for d in dims[2:])
    export: dict[str, Any] = {"format": format, "input_size": [int(d) for d in dims[2:]]
                              if fixed else [], "dynamic": not fixed}
    if fixed and isinstance(dims[0], int) and dims[0] > 1:
        export["batch"] = int(dims[0])
    if len(dims) == 4 and isinstance(dims[1], int):
        export["bands"] = int(dims[1])
    return export


def load_onnx_model(
    path: str | os.PathLike, providers: Sequence[str] | None = None,
    provider: str | None = None,
) -> InferenceModel:
    """An exported ``.onnx`` as an :class:`InferenceModel` (for ``Predictor``).

    ``provider``: an execution provider for :func:`resolve_provider` (default the CPU);
    ``providers`` an explicit ONNX Runtime provider list instead.
    """
    segmenter = OnnxSegmenter(path, providers=providers, provider=provider)
    return _as_inference_model(segmenter, onnx_classes(segmenter))


def onnx_classes(segmenter: OnnxSegmenter) -> int | None:
    """The class count an ONNX graph's output declares (None when that axis is free)."""
    outputs = {o.name: o for o in segmenter.session.get_outputs()}
    shape = outputs[segmenter.output_name].shape
    channels = shape[1] if len(shape) > 1 else None
    return channels if isinstance(channels, int) else None


def _as_inference_model(segmenter: _ExportedSegmenter, channels: int | None) -> InferenceModel:
    num_classes = channels if channels is not None else (segmenter.spec or {}).get("num_classes")
    if num_classes is None:
        raise ModelError(f"{segmenter.path}: the embedded config does not say the class count")
    return InferenceModel(
        model=segmenter,
        classmap=saved_classmap(segmenter.classes, int(num_classes)),
        inference=InferenceSettings.from_saved(segmenter.mean, segmenter.std, "rgb",
                                               segmenter.config.get("inference")),
        source=segmenter.path,
        spec=segmenter.spec,
    )
