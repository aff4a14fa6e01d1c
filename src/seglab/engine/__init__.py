"""Training and evaluation: ``fit(recipe)`` writes a run folder, ``evaluate(source)`` scores it.

``seglab.engine.fitting`` (fit) sits above ``.training`` (train_one, the Lightning wiring)
and ``.kfold`` (cross_validate, which calls train_one); ``.evaluation`` (evaluate),
``.module`` (the LightningModule), ``.callbacks``, ``.schedules`` and ``.inference``
(predict_logits) lie below them. Lightning itself loads only when training starts.
"""

from __future__ import annotations

from seglab.engine.evaluation import evaluate
from seglab.engine.fitting import fit

__all__ = ["fit", "evaluate"]
