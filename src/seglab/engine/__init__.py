"""Training and evaluation: ``fit(recipe)`` writes a run folder, ``evaluate(source)`` scores it.

``seglab.engine.fitting`` (fit: the folder's lock) sits above ``.training`` (train_one: resolve
the run once with ``.run_plan``, train with Lightning, score) and ``.kfold`` (cross_validate,
which calls train_one); ``fit`` returns a ``.run_result.FitResult``. ``.evaluation``
(evaluate), ``.module`` (the LightningModule), ``.callbacks``, ``.schedules`` and
``.inference`` (predict_logits) lie below them.
"""

from __future__ import annotations

from seglab.engine.evaluation import evaluate
from seglab.engine.fitting import fit

__all__ = ["fit", "evaluate"]
