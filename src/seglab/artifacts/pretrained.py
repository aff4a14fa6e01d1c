"""Save a model as a self-describing folder and rebuild it anywhere, without pickle.

A pretrained folder holds ``config.json`` (seglab version, the model's ``seglab_spec``,
class names/colours, input normalisation, any extra fields) and ``model.safetensors``.
``from_pretrained`` rebuilds the architecture through the registry (without fetching any
initial weights) and loads the tensors.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from seglab import __version__
from seglab.artifacts.hub import resolve_model_source
from seglab.artifacts.model_card import write_model_card
from seglab.artifacts.rundir import MODEL_CONFIG_FILE
from seglab.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from seglab.errors import ModelError
from seglab.io_utils import apply_umask, atomic_dir

CONFIG_FILE = MODEL_CONFIG_FILE
WEIGHTS_FILE = "model.safetensors"
_RESERVED = ("seglab_version", "model", "classes", "normalization")


def _classes_dict(classmap: Any, num_classes: int) -> dict[str, Any] | None:
    if classmap is None:
        return None
    data = classmap if isinstance(classmap, dict) else classmap.to_dict()
    names = data.get("names")
    if names is not None and len(names) != num_classes:
        raise ModelError(
            f"class map has {len(names)} classes but the model predicts {num_classes}"
        )
    return data


def input_bands(spec: dict[str, Any]) -> int:
    """Input channels of a model spec: its ``in_chans`` option, else 3 (RGB)."""
    bands = (spec.get("options") or {}).get("in_chans", 3)
    return bands if isinstance(bands, int) and not isinstance(bands, bool) and bands > 0 else 3


def _stats(values: Sequence[float] | torch.Tensor | None, what: str, bands: int) -> list[float]:
    """Normalisation values, one per input band (ImageNet's for RGB, else 0 / 1 by default).

    ImageNet's by default because every pretrained backbone here expects them."""
    if values is None:
        if bands == 3:
            return list(IMAGENET_MEAN if what == "mean" else IMAGENET_STD)
        return [0.0 if what == "mean" else 1.0] * bands  # no known statistics: bands as given
    out = [float(v) for v in (values.tolist() if isinstance(values, torch.Tensor) else values)]
    problem = check_stats(out, what, bands)
    if problem:
        raise ModelError(f"normalisation {problem}")
    return out


def check_stats(values: Any, what: str, bands: int) -> str | None:
    """What is wrong with normalisation ``values`` for a ``bands``-channel model (None: fine)."""
    if not isinstance(values, list | tuple):
        return f"{what} must be a list of numbers, one per input band, got {values!r}"
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int | float)]
    if bad:
        return f"{what} must hold numbers, got {bad[0]!r} in {list(values)}"
    if len(values) != bands:
        names = " (R, G, B)" if bands == 3 else ""
        return (f"{what} has {len(values)} values, the model takes {bands} input bands: "
                f"give {bands} values{names}")
    if not all(math.isfinite(v) for v in values):
        return f"{what} values must be finite numbers, got {list(values)}"
    if what == "std" and min(values) <= 0:
        return f"std values must be > 0 (the input is divided by them), got {list(values)}"
    return None


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside ``torch.compile`` / DDP wrappers (their state-dict keys are prefixed)."""
    while True:
        if hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        else:
            return model


def _state_for_saving(model: nn.Module) -> dict[str, torch.Tensor]:
    # A private contiguous CPU copy of each tensor: safetensors refuses shared or strided storage.
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def save_pretrained(
    model: nn.Module,
    directory: str | os.PathLike,
    *,
    classmap: Any = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    extra: dict[str, Any] | None = None,
    channels: str = "rgb",
) -> Path:
    """Write ``model`` to ``directory`` (replaced atomically) and return the folder's path.

    ``classmap`` is a ``ClassMap`` (or anything with ``to_dict()``, or its dict); ``mean`` and
    ``std`` are the input normalisation on the 0..1 scale, one value per input band (default:
    ImageNet's for RGB models, mean 0 / std 1 for other band counts); ``extra`` adds JSON-safe
    top-level fields (e.g. metrics, the recipe). ``channels="bgr"`` records a model that reads
    BGR (``mean``/``std`` are then in B, G, R order).
    """
    model = _unwrap(model)
    spec = getattr(model, "seglab_spec", None)
    if not isinstance(spec, dict):
        raise ModelError(
            "model has no seglab_spec: only models built with seglab.build_model can be saved "
            "as weights; save another module with seglab.import_model(module, folder, "
            "seglab.ModelSettings(mean=..., std=..., scale=..., size=(H, W))), which traces it"
        )
    config: dict[str, Any] = {
        "seglab_version": seglab_version(),
        "model": spec,
        "classes": _classes_dict(classmap, spec["num_classes"]),
        "normalization": {"mean": _stats(mean, "mean", input_bands(spec)),
                          "std": _stats(std, "std", input_bands(spec))},
    }
    if channels != "rgb":
        if channels != "bgr":
            raise ModelError(f"channels must be rgb or bgr, got {channels!r}")
        config["normalization"]["channels"] = channels
    for key, value in (extra or {}).items():
        if key in _RESERVED:
            raise ModelError(f"extra field {key!r} would overwrite a reserved config field")
        config[key] = value
    try:
        text = json.dumps(config, indent=2)
    except TypeError as exc:
        raise ModelError(f"config for {directory} is not JSON-safe: {exc}") from exc
    with atomic_dir(directory) as tmp:
        (tmp / CONFIG_FILE).write_text(text + "\n")
        save_file(_state_for_saving(model), str(tmp / WEIGHTS_FILE),
                  metadata={"format": "pt", "seglab_model": spec["name"]})
        apply_umask(tmp / WEIGHTS_FILE)  # safetensors writes 0600 whatever the umask
        write_model_card(tmp, config)  # README.md; fit rewrites it once test metrics exist
    return Path(directory)


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``config.json`` of a pretrained folder (ModelError naming the field)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(f"pretrained model folder {directory} does not exist")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise ModelError(f"{directory} is not a seglab model folder: {CONFIG_FILE} is missing")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ModelError(f"{path} is not UTF-8 text (byte {exc.start}): not a seglab "
                         "config.json") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}") from None
    spec = config.get("model") if isinstance(config, dict) else None
    if not isinstance(spec, dict) or not {"name", "num_classes", "options"} <= set(spec):
        raise ModelError(f"{path} has no valid 'model' entry (name, num_classes, options)")
    problem = _config_problem(config, spec)
    if problem:
        raise ModelError(f"{path}: {problem}")
    return config


def _config_problem(config: dict[str, Any], spec: dict[str, Any]) -> str | None:
    """The first thing wrong in a parsed config.json (None when it is usable)."""
    num_classes = spec["num_classes"]
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        return f"model.num_classes must be a positive integer, got {num_classes!r}"
    if not isinstance(spec["options"], dict):
        return f"model.options must be a mapping, got {spec['options']!r}"
    norm = config.get("normalization")
    if norm is not None:
        if not isinstance(norm, dict):
            return f"normalization must be a mapping with mean and std, got {norm!r}"
        for what in ("mean", "std"):
            if what in norm and (problem := check_stats(norm[what], what, input_bands(spec))):
                return f"normalization {problem}"
    classes = config.get("classes")
    if classes is not None:
        names = classes.get("names") if isinstance(classes, dict) else None
        if not isinstance(names, list):
            return f"classes must be a mapping with a 'names' list, got {classes!r}"
        if len(names) != num_classes:
            return (f"classes lists {len(names)} class names but the model predicts "
                    f"{num_classes} classes")
    return _inference_problem(config.get("inference"))


def _is_size(value: Any) -> bool:
    def positive(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    if isinstance(value, list | tuple):
        return len(value) == 2 and all(positive(v) for v in value)
    return positive(value)


def _inference_problem(inference: Any) -> str | None:
    """What is wrong with saved inference settings (``size``, ``mode``, ``crop``, ``stride``)."""
    if inference is None:
        return None
    if not isinstance(inference, dict):
        return f"inference must be a mapping of settings, got {inference!r}"
    for key in ("size", "crop", "stride"):
        value = inference.get(key)
        if value is not None and not _is_size(value):
            return (f"inference.{key} must be a positive integer or [height, width] of "
                    f"positive integers, got {json.dumps(value)}")
    mode = inference.get("mode")
    if mode is not None and mode not in ("whole", "slide"):
        return f"inference.mode must be 'whole' or 'slide', got {mode!r}"
    return None


def from_pretrained(directory: str | os.PathLike,
                    map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved in ``directory`` (a folder, or a Hub repo id ``org/name``);
    returns ``(model in eval mode, config)``."""
    # lazy: seglab.models imports every model module (4.6 s on this loaded 2-core machine);
    # saving, reading a config and `seglab import` never need it.
    from seglab.models.registry import rebuild_spec
    from seglab.models.weights import aligned, load_matching

    directory = Path(resolve_model_source(directory))  # a Hub repo id: its local snapshot
    config = read_config(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelError(f"{directory} has a {CONFIG_FILE} but no {WEIGHTS_FILE}")
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"cannot read {weights} (corrupt or truncated?): {exc}") from exc
    state = aligned(state)
    # Build on the meta device and adopt the loaded tensors: no random initialisation of
    # weights about to be overwritten (about a second saved for a ResNet-101 model).
    with torch.device("meta"):
        model = rebuild_spec(config["model"])
    load_matching(model, state, source=str(weights), assign=True)
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.is_meta for t in tensors):  # a buffer the file does not hold: build for real
        model = rebuild_spec(config["model"])
        load_matching(model, state, source=str(weights))
    model.to(map_location)
    model.eval()
    return model, config


def seglab_version() -> str:
    """The installed seglab version (written into every saved model and export)."""
    return __version__
