"""What may change when a run is resumed, and the refusal of everything else.

``--resume`` continues from ``last.ckpt``: the weights, the optimiser state (its learning
rates included), the schedule position, the early-stopping counters and the data order all
come from the checkpoint. A recipe edit that the checkpoint would silently override (a new
``optim.lr``) or that no longer fits it (another model, dataset or class table) is refused
naming the key, before anything is written. The edits in :data:`RESUMABLE` are applied.

The reference is the recipe saved inside the checkpoint (what the run really trained with),
so an edited ``recipe.yaml`` in the run folder is judged the same way as an override.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seglab.config import Recipe
from seglab.errors import ConfigError, SeglabError
from seglab.yaml_limits import short_repr

# Dotted keys (or section prefixes ending in ".") that a resumed run applies.
RESUMABLE: tuple[str, ...] = (
    "name",
    "trainer.max_epochs",  # the schedule is stretched to the new length
    "trainer.max_minutes",
    "trainer.loggers",
    "trainer.progress",
    "trainer.log_every_n_steps",
    "trainer.checkpoint_every_n_steps",
    "trainer.val_every",
    "trainer.precision",
    "trainer.channels_last",
    "trainer.deterministic",
    "trainer.grad_clip",
    "trainer.accelerator",
    # Where it runs: a multi-process (or multi-node) checkpoint resumes on fewer processes;
    # the weights, optimiser state and schedule position carry over as they are.
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.sync_batchnorm",
    "data.num_workers",
    "data.eval_batch_size",
    "data.cache",
    "eval.",  # the final evaluation and the exported model's inference settings
)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def resumable(key: str) -> bool:
    """Whether a change of recipe key ``key`` is applied on ``--resume``."""
    return any(key == allowed or (allowed.endswith(".") and key.startswith(allowed))
               for allowed in RESUMABLE)


def _normalised(recipe: dict[str, Any]) -> dict[str, Any]:
    # An older checkpoint's recipe lacks newer fields: fill their defaults before comparing.
    try:
        return Recipe.from_dict(recipe).to_dict()
    except SeglabError:
        return recipe


def refused_changes(saved: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key (old -> new)`` for every change between two recipes that resume cannot apply."""
    old, now = _flatten(_normalised(saved)), _flatten(new)
    missing = object()
    changes = []
    for key in sorted(set(old) | set(now)):
        before, after = old.get(key, missing), now.get(key, missing)
        if before == after or resumable(key):
            continue
        shown = [("(absent)" if v is missing else short_repr(v, 60)) for v in (before, after)]
        changes.append(f"{key} ({shown[0]} -> {shown[1]})")
    return changes


def check_resume_edits(checkpoint: dict[str, Any], recipe: dict[str, Any],
                       classmap: dict[str, Any], path: Path) -> None:
    """ConfigError naming every key of ``recipe`` (and the class table) that differs from the
    run saved in ``checkpoint`` (read from ``path``) in a way ``--resume`` cannot apply."""
    hparams = checkpoint.get("hyper_parameters") or {}
    saved = hparams.get("recipe")
    if not isinstance(saved, dict):
        return  # not a seglab module's checkpoint: the run folder's recipe is all there is
    changes = refused_changes(saved, recipe)
    saved_classes = hparams.get("classmap")
    if isinstance(saved_classes, dict) and _flatten(saved_classes) != _flatten(classmap):
        changes.append("the dataset's class table (names, colours, count or ignore index)")
    if changes:
        raise ConfigError(
            f"cannot resume from {path} with a changed {'; '.join(changes)}: the checkpoint's "
            "weights and optimiser state would not follow. On --resume only these may change: "
            f"{', '.join(k.rstrip('.') for k in RESUMABLE if k != 'name')}. Start a new run "
            "(another --name) to train with other settings"
        )
