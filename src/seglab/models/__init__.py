"""The model zoo: ``build_model(name, num_classes, **options)`` and ``list_models()``.

Each model module registers its builders beside its own code (``register_model`` at import
time); the imports below are what put them in the registry. Adding a model is one new module
plus one import line here (see docs/internals.md, "How to add a model").
"""

# The model modules, imported for their registrations (one line per module).
import seglab.models.adapters  # noqa: F401  (the smp: and hf: families)
import seglab.models.composed  # noqa: F401
import seglab.models.encdec  # noqa: F401
import seglab.models.fcn8s  # noqa: F401
import seglab.models.realtime.bisenetv2  # noqa: F401
import seglab.models.realtime.cgnet  # noqa: F401
import seglab.models.realtime.ddrnet  # noqa: F401
import seglab.models.realtime.enet  # noqa: F401
import seglab.models.realtime.fastscnn  # noqa: F401
import seglab.models.realtime.pidnet  # noqa: F401
import seglab.models.realtime.stdc  # noqa: F401
import seglab.models.torchvision_zoo  # noqa: F401
import seglab.models.unet  # noqa: F401
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
