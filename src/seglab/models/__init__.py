"""The model zoo: ``build_model(name, num_classes, **options)`` and ``list_models()``."""

from seglab.models.registry import (
    ModelInfo,
    build_model,
    list_models,
    model_info,
    model_names,
    register_model,
)

__all__ = ["ModelInfo", "build_model", "list_models", "model_info", "model_names",
           "register_model"]
