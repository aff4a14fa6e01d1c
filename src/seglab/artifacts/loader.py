"""The one loader of saved models: any saved form -> :class:`InferenceModel` (mmseg's init_model).

Accepted sources:

- a ``save_pretrained`` folder (``config.json`` + ``model.safetensors``);
- a run folder: its ``model/``, else ``checkpoints/best.ckpt``, else ``last.ckpt``;
- a Lightning ``.ckpt`` written by ``seglab train`` (read as plain data, nothing unpickled);
- an exported ``.onnx`` (ONNX Runtime) or TorchScript file (``.pt``, ``.ts``, ``.torchscript``),
  whether seglab wrote it or not (first input; output ``out``, else the first);
- a folder written by ``seglab import`` around such a file (its ``config.json`` has ``runtime``);
- a state dict (``.pth``, ``.pt``, ``.safetensors``; read with ``weights_only``) loaded
  into the registry model ``settings.model``;
- from Python, an ``nn.Module`` returning a tensor, a dict with ``"out"`` or a tuple.

What a file does not say (normalisation, channel order, classes, size, class count) comes from
:class:`~seglab.artifacts.settings.ModelSettings`, which also overrides what it says. A model
that says nothing about its normalisation and gets none is refused (never ImageNet's silently);
a default that is used (RGB order, generic class names) is said in ``InferenceModel.notes``.

Evaluation, predict, export, bench, compare and import all load through
:func:`load_inference_model`, so what a folder or file is gets decided here only.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seglab.artifacts import rundir
from seglab.artifacts.adapted import AdaptedModule
from seglab.artifacts.device import resolve_device
from seglab.artifacts.hub import resolve_model_source
from seglab.artifacts.model import (
    InferenceModel,
    InferenceSettings,
    recipe_inference,
    saved_classmap,
)
from seglab.artifacts.pretrained import (
    from_pretrained,
    input_bands,
    read_config,
)
from seglab.artifacts.runtimes import (
    ONNX_SUFFIX,
    TORCHSCRIPT_SUFFIXES,
    OnnxSegmenter,
    TorchScriptSegmenter,
    onnx_classes,
)
from seglab.artifacts.settings import (
    NO_SETTINGS,
    ModelSettings,
    missing_normalization,
    model_order_to_rgb,
    resolve_classmap,
)
from seglab.data.classes import ClassMap, read_class_table
from seglab.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from seglab.errors import ConfigError, ModelError, SeglabError
from seglab.models.registry import (
    WEIGHT_OPTIONS,
    build_model,
    model_info,
    rebuild_spec,
    split_model_entry,
)
from seglab.models.weights import load_matching, read_state_dict

STATE_DICT_SUFFIXES = (".pth", ".pt", ".safetensors")
PROBE_SIZE = (64, 64)  # input used to learn a model's class count when nothing says it


def load_inference_model(
    source: str | os.PathLike | nn.Module, device: str | torch.device = "cpu",
    provider: str | None = None, settings: ModelSettings | None = None,
) -> InferenceModel:
    """Load a model folder, run folder, ``.ckpt``, ONNX, TorchScript or state-dict file, or an
    ``nn.Module``, for inference.

    The model is in eval mode on ``device`` (``"auto"`` allowed; exported files answer CPU
    tensors). An ``.onnx`` runs on the ONNX Runtime execution ``provider`` (``cpu``,
    ``cuda``, ``tensorrt``, ``openvino``, ...; default the CPU). ``settings`` give what the
    file does not say and override what it says (see :mod:`seglab.artifacts.settings`). The
    result carries the classes, normalisation, channel order, saved inference settings, notes
    on defaults used and, when one was saved, the training recipe.

    Raises:
        ConfigError: ``source`` does not exist, is not a kind of saved model seglab knows, or
            lacks a setting that changes results (the error names the option).
        ModelError: the file is a known kind but cannot be read.
    """
    settings = settings or NO_SETTINGS
    device = resolve_device(device)
    if isinstance(source, nn.Module):
        return _load_module(source, device, settings)
    path = Path(resolve_model_source(source)).expanduser()  # a Hub repo id: its snapshot
    if not path.exists():
        raise ConfigError(f"model not found: {path} (give a run folder, model folder or file)")
    if path.is_dir():
        if rundir.is_model_dir(path):
            return _load_pretrained(path, device, settings, provider)
        saved = rundir.model_source(path)
        if saved is None:
            raise ConfigError(
                f"{path} is neither a model folder ({rundir.MODEL_CONFIG_FILE}) nor a run "
                f"folder ({rundir.MODEL_DIR}/ or {rundir.CHECKPOINT_DIR}/"
                f"{rundir.BEST}{rundir.CHECKPOINT_SUFFIX})"
            )
        return load_inference_model(saved, device, provider, settings)
    suffix = path.suffix.lower()
    if suffix == rundir.CHECKPOINT_SUFFIX:
        return apply_settings(_load_checkpoint(path, device), settings)
    if suffix == ONNX_SUFFIX or (suffix in TORCHSCRIPT_SUFFIXES and is_torchscript(path)):
        return load_runtime_file(path, settings, provider)
    if suffix in STATE_DICT_SUFFIXES:
        return _load_state_dict(path, device, settings)
    known = ", ".join(dict.fromkeys((rundir.CHECKPOINT_SUFFIX, ONNX_SUFFIX, *TORCHSCRIPT_SUFFIXES,
                                     *STATE_DICT_SUFFIXES)))
    raise ConfigError(
        f"{path}: unknown model file type {suffix!r} (expected a folder or one of {known})"
    )


def is_torchscript(path: Path) -> bool:
    """True for a TorchScript archive (it holds compiled ``code/``), False for ``torch.save``."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False  # an old-format torch.save pickle, or not a torch file at all
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def load_runtime_file(path: Path, settings: ModelSettings = NO_SETTINGS,
                      provider: str | None = None,
                      saved: dict[str, Any] | None = None) -> InferenceModel:
    """An ONNX or TorchScript file, seglab's export or not, completed by ``settings``.

    ``saved`` is the ``config.json`` of an imported model folder around the file (its
    normalisation, classes and inference settings stand in for an embedded config).
    """
    if path.suffix.lower() == ONNX_SUFFIX:
        segmenter = OnnxSegmenter(path, provider=provider, external=True)
        num_classes = onnx_classes(segmenter)
    else:
        segmenter = TorchScriptSegmenter(path, external=True)
        num_classes = None
    config = segmenter.config
    for key in ("model", "classes", "normalization", "inference"):
        if saved and saved.get(key) is not None:
            config[key] = saved[key]
    norm = config.get("normalization")
    if not segmenter.embedded and saved is None and not settings.normalization_given:
        if settings.mean is None and settings.std is None:
            raise missing_normalization(path)
    if num_classes is None:
        num_classes = (config.get("model") or {}).get("num_classes") or settings.num_classes
    model_order = _model_order(norm, settings, path)
    segmenter.reverse_channels = model_order[2] == "bgr"
    config["normalization"] = {"mean": model_order[0], "std": model_order[1]}
    bands = segmenter.config["export"].get("bands")
    if bands is not None and bands != len(model_order[0]):
        raise ConfigError(f"{path} takes {bands} input channels but the normalisation has "
                          f"{len(model_order[0])} values (--mean/--std: one per channel)")
    if num_classes is None:
        num_classes = _probe_classes(segmenter, len(model_order[0]), settings, path)
    export = segmenter.config["export"]
    # A fixed-size graph takes its export size only: the size to resize to, unless saved.
    fixed = {"size": list(export["input_size"])} if (not export.get("dynamic")
                                                     and export.get("input_size")) else None
    loaded = InferenceModel(
        model=segmenter,
        classmap=saved_classmap(config.get("classes"), int(num_classes)),
        inference=_inference(model_order, config.get("inference"), fixed),
        source=path,
        spec=config.get("model") or {"name": path.stem, "num_classes": int(num_classes),
                                     "options": {}},
        notes=[] if config.get("classes") else _generic_classes_note(num_classes),
    )
    if not segmenter.embedded and saved is None and settings.channels is None:
        loaded.notes.insert(0, CHANNELS_NOTE)
    return _apply_rest(loaded, settings)


def _inference(model_order: tuple[list[float], list[float], str],
               *saved: dict[str, Any] | None) -> InferenceSettings:
    """The settings from (mean, std, channels) in the model's order and saved sections."""
    mean, std, channels = model_order
    return InferenceSettings.from_saved(model_order_to_rgb(mean, channels),
                                        model_order_to_rgb(std, channels), channels, *saved)


def _model_order(norm: Any, settings: ModelSettings,
                 source: Any) -> tuple[list[float], list[float], str]:
    """(mean, std, channels): the saved values (model order, 0..1) overridden by settings."""
    saved = norm if isinstance(norm, dict) else {}
    mean = settings.unit_mean() or saved.get("mean")
    std = settings.unit_std() or saved.get("std")
    if mean is None or std is None:
        option = "--mean" if mean is None else "--std"
        if not saved and settings.mean is None and settings.std is None:
            raise missing_normalization(source)
        raise ConfigError(f"{source}: {option} is missing: the normalisation needs both --mean "
                          "and --std (with --scale)")
    if len(mean) != len(std):
        raise ConfigError(f"{source}: --mean has {len(mean)} values but --std {len(std)}")
    channels = settings.channels or saved.get("channels") or "rgb"
    return [float(v) for v in mean], [float(v) for v in std], channels


CHANNELS_NOTE = "channels: rgb (assumed; --channels bgr if the model reads BGR)"


def _generic_classes_note(num_classes: int) -> list[str]:
    return [f"classes: class_0..class_{int(num_classes) - 1} (the model names none: --classes "
            "FILE names them; seglab eval takes the dataset's)"]


def _probe_classes(model: Any, bands: int, settings: ModelSettings, source: Any) -> int:
    """The class count a model answers, from one forward pass on a blank image."""
    size = tuple(settings.size) if settings.size else PROBE_SIZE
    try:
        with torch.inference_mode():
            out = model(torch.zeros(1, bands, *size))
    except SeglabError:
        raise  # already says what is wrong (e.g. an answer that holds no logits)
    except Exception as exc:  # any model's own failure: say what was tried
        raise ConfigError(f"{source}: could not learn its class count from a {size[0]}x"
                          f"{size[1]} test input ({type(exc).__name__}: {exc}); give "
                          "--num-classes and --size") from exc
    logits = out["out"] if isinstance(out, dict) else out
    return int(logits.shape[1])


def apply_settings(loaded: InferenceModel, settings: ModelSettings) -> InferenceModel:
    """``loaded`` with the given settings overriding its saved ones (a seglab-saved model)."""
    if settings.mean is None and settings.std is None and settings.channels is None:
        return _apply_rest(loaded, settings)
    rgb_mean, rgb_std = list(loaded.mean), list(loaded.std)
    saved = {"mean": model_order_to_rgb(rgb_mean, loaded.channels),
             "std": model_order_to_rgb(rgb_std, loaded.channels), "channels": loaded.channels}
    mean, std, channels = _model_order(saved, settings, loaded.source)
    reverse = (channels == "bgr") != (loaded.channels == "bgr")
    if reverse:
        if not isinstance(loaded.model, nn.Module):
            loaded.model.reverse_channels = channels == "bgr"
        elif isinstance(loaded.model, AdaptedModule):
            loaded.model.reverse_channels = channels == "bgr"
        else:
            loaded.model = AdaptedModule(loaded.model, True, loaded.source).eval()
    loaded.inference = replace(
        loaded.inference, mean=tuple(model_order_to_rgb(mean, channels)),
        std=tuple(model_order_to_rgb(std, channels)), channels=channels)
    return _apply_rest(loaded, settings)


def _apply_rest(loaded: InferenceModel, settings: ModelSettings) -> InferenceModel:
    """Classes and inference settings from ``settings`` (after the normalisation is settled)."""
    classmap = resolve_classmap(settings.classes, loaded.classmap.num_classes, loaded.source)
    if classmap is not None:
        loaded.classmap = classmap
        loaded.notes = [n for n in loaded.notes if not n.startswith("classes:")]
    if settings.num_classes is not None and settings.num_classes != loaded.classmap.num_classes:
        raise ConfigError(f"--num-classes {settings.num_classes}: {loaded.source} predicts "
                          f"{loaded.classmap.num_classes} classes")
    loaded.inference = loaded.inference.overridden(
        size=settings.size, mode=settings.mode, crop=settings.crop, stride=settings.stride,
        scales=settings.scales, flip=settings.flip)
    return loaded


def _load_module(module: nn.Module, device: torch.device,
                 settings: ModelSettings) -> InferenceModel:
    """A Python ``nn.Module``: normalisation from ``settings``, class count from a forward."""
    spec = getattr(module, "seglab_spec", None)
    notes: list[str] = []
    if isinstance(spec, dict) and settings.mean is None and settings.std is None:
        # A registry model: its pretrained encoders expect ImageNet statistics (RGB), as
        # save_pretrained assumes; said in the notes, never silent.
        bands = input_bands(spec)
        imagenet = bands == 3
        settings = settings.with_defaults(
            mean=list(IMAGENET_MEAN) if imagenet else [0.0] * bands,
            std=list(IMAGENET_STD) if imagenet else [1.0] * bands, scale=1)
        notes.append("normalisation: " + ("ImageNet mean/std" if imagenet else "none")
                     + f" (the default of seglab's registry model {spec.get('name')}; give "
                     "mean/std/scale if it was trained otherwise)")
    model_order = _model_order(None, settings, type(module).__name__)
    model = AdaptedModule(module, model_order[2] == "bgr", type(module).__name__)
    model = model.to(device).eval()
    num_classes = settings.num_classes or (spec or {}).get("num_classes")
    if num_classes is None:
        num_classes = _probe_classes(lambda x: model(x.to(device)), len(model_order[0]),
                                     settings, type(module).__name__)
    loaded = InferenceModel(
        model=model,
        classmap=saved_classmap(None, int(num_classes)),
        inference=_inference(model_order),
        source=Path(f"<{type(module).__name__}>"),
        spec=spec if isinstance(spec, dict) else None,
        notes=[*notes, *_generic_classes_note(num_classes)],
    )
    if spec is None and settings.channels is None:
        loaded.notes.insert(0, CHANNELS_NOTE)
    return _apply_rest(loaded, settings)


def read_weights_only(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a torch file or ``.safetensors``, never unpickling an object.

    Checkpoint layouts ``{"state_dict": ...}``, ``{"model": ...}`` are unwrapped and a
    ``module.`` prefix (DataParallel) is dropped.
    """
    if path.suffix.lower() != ".safetensors":
        try:
            torch.load(path, map_location="meta", weights_only=True)
        except pickle.UnpicklingError:
            raise ModelError(
                f"{path} pickles Python objects (e.g. a whole model saved with "
                "torch.save(model)); seglab reads weights only and never unpickles code: save "
                "model.state_dict() instead, or export the model to ONNX or TorchScript"
            ) from None
        except Exception:  # noqa: BLE001 - read_state_dict below names the problem
            pass
    state = read_state_dict(path)
    prefix = "module."
    if state and all(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _load_state_dict(path: Path, device: torch.device,
                     settings: ModelSettings) -> InferenceModel:
    """A state dict loaded strictly into the registry model ``settings.model``."""
    if settings.model is None:
        raise ConfigError(
            f"{path} holds weights only (a state dict): name the architecture to load them "
            "into with --model NAME (`seglab models list` lists them) and --num-classes N"
        )
    num_classes = settings.num_classes
    if num_classes is None and settings.classes is not None:
        num_classes = _count(settings.classes)
    if num_classes is None:
        raise ConfigError(f"{path}: give --num-classes N (or --classes FILE) to build "
                          f"{settings.model} for these weights")
    state = read_weights_only(path)
    model_order = _model_order(None, settings, path)
    name, options = split_model_entry(settings.model)  # "unet:base_channels=8" works too
    options = {**options, **settings.model_options}
    defaults = model_info(name).defaults
    untrained = {k: None for k in WEIGHT_OPTIONS if k in defaults
                 and k not in options}  # the file brings every weight
    model = build_model(name, num_classes, **untrained, **options)
    load_matching(model, state, source=str(path))
    if model_order[2] == "bgr":
        model = AdaptedModule(model, True, path)
    loaded = InferenceModel(
        model=model.to(device).eval(),
        classmap=saved_classmap(None, num_classes),  # --classes applied below
        inference=_inference(model_order),
        source=path,
        spec=getattr(model, "seglab_spec", None),
        notes=[*([CHANNELS_NOTE] if settings.channels is None else []),
               *_generic_classes_note(num_classes)],
    )
    return _apply_rest(loaded, settings)


def _count(classes: Any) -> int:
    """How many classes a ``--classes`` value lists."""
    if isinstance(classes, ClassMap):
        return classes.num_classes
    if isinstance(classes, dict):
        return len(classes["names"])
    if isinstance(classes, str | Path):
        return len(read_class_table(classes))
    return len(list(classes))


def _load_pretrained(folder: Path, device: torch.device, settings: ModelSettings,
                     provider: str | None) -> InferenceModel:
    runtime = read_config(folder).get("runtime")
    if isinstance(runtime, dict):  # written by seglab import around an ONNX/TorchScript file
        config = read_config(folder)
        file = folder / str(runtime.get("file", ""))
        if not file.is_file():
            raise ModelError(f"{folder}: {rundir.MODEL_CONFIG_FILE} names runtime file "
                             f"{runtime.get('file')!r}, which is not in the folder")
        loaded = load_runtime_file(file, settings, provider, saved=config)
        loaded.source = folder
        return loaded
    model, config = from_pretrained(folder, map_location=device)
    model = model.to(device).eval()
    spec = getattr(model, "seglab_spec", None) or config["model"]
    norm = config.get("normalization") or {}
    recipe = config.get("recipe")
    channels = norm.get("channels") or "rgb"
    mean = norm.get("mean", IMAGENET_MEAN)
    std = norm.get("std", IMAGENET_STD)
    if channels == "bgr":
        model = AdaptedModule(model, True, folder).eval()
    recipe = recipe if isinstance(recipe, dict) else rundir.find_recipe(folder)
    # The saved inference section first; what it leaves unsaid, the recipe's eval settings.
    loaded = InferenceModel(
        model=model,
        classmap=saved_classmap(config.get("classes"), int(spec["num_classes"])),
        inference=_inference((mean, std, channels), config.get("inference"),
                             recipe_inference(recipe)),
        source=folder,
        spec=spec,
        recipe=recipe,
    )
    return apply_settings(loaded, settings)


def _load_checkpoint(path: Path, device: torch.device) -> InferenceModel:
    """A Lightning checkpoint of ``seglab.engine``'s module, read without unpickling objects."""
    checkpoint = rundir.read_checkpoint(path)
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
    return InferenceModel(
        model=model.to(device).eval(),
        classmap=classmap,
        inference=_inference((data.get("mean") or IMAGENET_MEAN, data.get("std") or IMAGENET_STD,
                              "rgb"), recipe_inference(recipe)),
        source=path,
        spec=model.seglab_spec,
        recipe=recipe,
    )
