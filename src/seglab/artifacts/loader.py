"""The one loader of saved models: any saved form -> :class:`InferenceModel` (mmseg's init_model).

Accepted sources:

- a ``save_pretrained`` folder (``config.json`` + ``model.safetensors``);
- a run folder: its ``model/``, else ``checkpoints/best.ckpt``, else ``last.ckpt``;
- a Lightning ``.ckpt`` written by ``seglab train`` (read as plain data, nothing unpickled);
- an exported ``.onnx`` (ONNX Runtime) or TorchScript file (``.pt``, ``.ts``, ``.torchscript``).

Evaluation, predict, export, bench and compare all load through :func:`load_inference_model`,
so what a folder or file is gets decided here only.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from seglab.artifacts import rundir
from seglab.artifacts.device import resolve_device
from seglab.artifacts.hub import resolve_model_source
from seglab.artifacts.model import InferenceModel, saved_classmap, saved_settings
from seglab.artifacts.runtimes import ONNX_SUFFIX, TORCHSCRIPT_SUFFIXES
from seglab.data.classes import ClassMap
from seglab.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from seglab.errors import ConfigError, ModelError


def load_inference_model(
    source: str | os.PathLike, device: str | torch.device = "cpu",
    provider: str | None = None,
) -> InferenceModel:
    """Load a model folder, run folder, ``.ckpt``, ``.onnx`` or TorchScript file for inference.

    The model is in eval mode on ``device`` (``"auto"`` allowed; exported files answer CPU
    tensors). An ``.onnx`` runs on the ONNX Runtime execution ``provider`` (``cpu``,
    ``cuda``, ``tensorrt``, ``openvino``, ...; default the CPU). The result carries the
    classes, normalisation, saved inference settings and, when one was saved, the training
    recipe.

    Raises:
        ConfigError: ``source`` does not exist or is not a kind of saved model seglab knows.
        ModelError: the file is a known kind but cannot be read.
    """
    device = resolve_device(device)
    path = Path(resolve_model_source(source)).expanduser()  # a Hub repo id: its snapshot
    if not path.exists():
        raise ConfigError(f"model not found: {path} (give a run folder, model folder or file)")
    if path.is_dir():
        if rundir.is_model_dir(path):
            return _load_pretrained(path, device)
        saved = rundir.model_source(path)
        if saved is None:
            raise ConfigError(
                f"{path} is neither a model folder ({rundir.MODEL_CONFIG_FILE}) nor a run "
                f"folder ({rundir.MODEL_DIR}/ or {rundir.CHECKPOINT_DIR}/"
                f"{rundir.BEST}{rundir.CHECKPOINT_SUFFIX})"
            )
        return load_inference_model(saved, device, provider)
    suffix = path.suffix.lower()
    if suffix == rundir.CHECKPOINT_SUFFIX:
        return _load_checkpoint(path, device)
    if suffix == ONNX_SUFFIX:
        from seglab.artifacts.runtimes import load_onnx_model

        return load_onnx_model(path, provider=provider)
    if suffix in TORCHSCRIPT_SUFFIXES:
        from seglab.artifacts.runtimes import load_torchscript_model

        return load_torchscript_model(path)
    known = ", ".join((rundir.CHECKPOINT_SUFFIX, ONNX_SUFFIX, *TORCHSCRIPT_SUFFIXES))
    raise ConfigError(
        f"{path}: unknown model file type {suffix!r} (expected a folder or one of {known})"
    )


def _load_pretrained(folder: Path, device: torch.device) -> InferenceModel:
    from seglab.artifacts.pretrained import from_pretrained

    model, config = from_pretrained(folder, map_location=device)
    model = model.to(device).eval()
    spec = getattr(model, "seglab_spec", None) or config["model"]
    norm = config.get("normalization") or {}
    recipe = config.get("recipe")
    return InferenceModel(
        model=model,
        classmap=saved_classmap(config.get("classes"), int(spec["num_classes"])),
        mean=norm.get("mean", IMAGENET_MEAN),
        std=norm.get("std", IMAGENET_STD),
        source=folder,
        spec=spec,
        settings=saved_settings(config.get("inference")),
        recipe=recipe if isinstance(recipe, dict) else rundir.find_recipe(folder),
    )


def _load_checkpoint(path: Path, device: torch.device) -> InferenceModel:
    """A Lightning checkpoint of ``seglab.engine``'s module, read without unpickling objects."""
    from seglab.models.registry import rebuild_spec
    from seglab.models.weights import load_matching

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
    augment = recipe.get("augment") or {}
    evaluation = recipe.get("eval") or {}
    return InferenceModel(
        model=model.to(device).eval(),
        classmap=classmap,
        mean=data.get("mean") or IMAGENET_MEAN,
        std=data.get("std") or IMAGENET_STD,
        source=path,
        spec=model.seglab_spec,
        settings=saved_settings({"size": augment.get("eval_resize"), **evaluation}),
        recipe=recipe,
    )
