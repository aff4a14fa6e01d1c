"""Training and evaluation: ``fit(recipe)`` writes a run folder, ``evaluate(source)`` scores it.

``seglab.engine.training`` (fit, the Lightning wiring), ``.evaluation`` (evaluate),
``.module`` (the LightningModule), ``.callbacks``, ``.schedules``, ``.kfold`` and
``.inference`` (predict_logits). Lightning itself loads only when training starts.
"""

from __future__ import annotations

from seglab.engine.evaluation import evaluate
from seglab.engine.training import fit

__all__ = ["fit", "evaluate"]
