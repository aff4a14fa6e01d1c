"""Training and evaluation: ``fit(recipe)`` writes a run folder, ``evaluate(source)`` scores it.

The functions are imported here eagerly so that ``seglab.engine.fit`` / ``.evaluate`` name the
functions rather than their submodules; Lightning itself loads only when training starts.
"""

from __future__ import annotations

from seglab.engine.evaluate import evaluate
from seglab.engine.fit import fit

__all__ = ["fit", "evaluate"]
