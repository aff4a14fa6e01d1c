"""``import_model``: any model seglab can load, plus its settings, as an ordinary model folder.

The folder is what every verb and the Hub path read (``config.json`` + weights + model card):

- a registry model (a state dict loaded with ``--model``, a ``.ckpt``, a model folder, an
  ``nn.Module`` from :func:`seglab.build_model`): ``model.safetensors``, as ``save_pretrained``;
- an ONNX or TorchScript file: the file itself, copied as ``model.onnx`` / ``model.pt``, named
  by ``config.json``'s ``runtime`` entry;
- any other ``nn.Module``: traced to TorchScript (``model.pt``) at ``settings.size``.

``config.json`` records the normalisation on the 0..1 scale in the model's channel order with
``channels``, the classes and the input size (schema: ``docs/model_files.md``).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from seglab.artifacts.adapted import inner_module
from seglab.artifacts.loader import load_inference_model
from seglab.artifacts.model_card import write_model_card
from seglab.artifacts.pretrained import CONFIG_FILE, save_pretrained, seglab_version
from seglab.artifacts.runtimes import ONNX_SUFFIX, first_tensor
from seglab.artifacts.settings import ModelSettings, model_order_to_rgb
from seglab.errors import ConfigError, ModelError
from seglab.io_utils import atomic_dir

ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.pt"


class _Logits(nn.Module):
    """The logits tensor of any module's answer (what a TorchScript trace records)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        return first_tensor(self.module(x), type(self.module).__name__)


def import_model(source: Any, out: str | os.PathLike,
                 settings: ModelSettings | None = None) -> Path:
    """Write ``source`` (anything :func:`load_inference_model` reads) as a model folder ``out``.

    ``settings`` are the model's (``mean``/``std``/``scale``, ``channels``, ``classes``,
    ``size``, ``num_classes``, ``model``); what the source lacks and changes results must be
    given, as for every verb. ``out`` is replaced atomically. Returns ``out``.

    Raises:
        ConfigError: a missing setting (named) or a plain module without ``settings.size``.
        ModelError: the source cannot be read, or a traced module does not reproduce itself.
    """
    settings = settings or ModelSettings()
    out = Path(out)
    loaded = load_inference_model(source, "cpu", settings=settings)
    generic = any(note.startswith("classes:") for note in loaded.notes)
    mean = model_order_to_rgb(loaded.mean, loaded.channels)  # back to the model's order
    std = model_order_to_rgb(loaded.std, loaded.channels)
    classes = None if generic else loaded.classmap.to_dict()
    inference = loaded.inference.saved()
    origin = loaded.source.name if isinstance(loaded.source, Path) else str(loaded.source)
    model = inner_module(loaded.model)
    if isinstance(model, nn.Module) and isinstance(getattr(model, "seglab_spec", None), dict):
        extra = {"inference": inference, "imported_from": origin}
        return save_pretrained(model, out, classmap=classes, mean=mean, std=std,
                               channels=loaded.channels, extra=extra)
    config: dict[str, Any] = {
        "seglab_version": seglab_version(),
        "model": {"name": Path(origin).stem or "model",
                  "num_classes": loaded.classmap.num_classes, "options": {}},
        "classes": classes,
        "normalization": {"mean": mean, "std": std, "channels": loaded.channels},
        "inference": inference,
        "imported_from": origin,
    }
    with atomic_dir(out) as tmp:
        if isinstance(model, nn.Module):
            config["runtime"] = {"format": "torchscript", "file": TORCHSCRIPT_FILE}
            _trace(model, len(mean), settings, tmp / TORCHSCRIPT_FILE)
            config["inference"].setdefault("size", list(settings.size))
        else:
            onnx = Path(model.path).suffix.lower() == ONNX_SUFFIX
            name = ONNX_FILE if onnx else TORCHSCRIPT_FILE
            config["runtime"] = {"format": "onnx" if onnx else "torchscript", "file": name}
            shutil.copyfile(model.path, tmp / name)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        write_model_card(tmp, config)
    return out


def _trace(module: nn.Module, bands: int, settings: ModelSettings, path: Path) -> None:
    """Trace ``module`` at ``settings.size`` to ``path``, checked on a random input."""
    if settings.size is None:
        raise ConfigError(f"{type(module).__name__} is a Python module without a registry "
                          "spec: it is saved as a TorchScript trace, which needs the input "
                          "size it will run at (--size HxW, size=(H, W))")
    wrapper = _Logits(module).eval()
    x = torch.randn(1, bands, *settings.size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trace and deprecation chatter; checked just below
        try:
            traced = torch.jit.trace(wrapper, x, check_trace=False)
        except Exception as exc:  # tracing raises many types; all mean "cannot trace"
            raise ModelError(f"cannot trace {type(module).__name__} to TorchScript: "
                             f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}") from exc
        expected, answer = wrapper(x), traced(x)
        torch.jit.save(traced, str(path))
    if not torch.allclose(expected, answer, atol=1e-5, rtol=1e-4):
        raise ModelError(f"the TorchScript trace of {type(module).__name__} does not reproduce "
                         "it (its forward branches on tensor values): export it yourself")
