"""seglab: choose, fine-tune, compare and ship semantic segmentation models."""

from __future__ import annotations

import importlib
from typing import Any

from seglab.threads import apply_defaults as _apply_thread_defaults

__version__ = "0.1.0"

# Before any seglab module imports torch: passive OpenMP waiting, a sane thread count.
_apply_thread_defaults()

# Public API, imported lazily so `import seglab` and the CLI start fast.
_LAZY = {
    "build_model": "seglab.models.registry",
    "list_models": "seglab.models.registry",
    "save_pretrained": "seglab.artifacts.pretrained",
    "from_pretrained": "seglab.artifacts.pretrained",
    "push_to_hub": "seglab.artifacts.hub",
    "Predictor": "seglab.predict",
    "ClassMap": "seglab.data.classes",
    "load_dataset": "seglab.data.formats",
    "evaluate": "seglab.engine.evaluation",
    "import_model": "seglab.artifacts.importing",
    "ModelSettings": "seglab.artifacts.settings",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'seglab' has no attribute {name!r}")
