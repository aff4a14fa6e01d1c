"""The model card: a ``README.md`` written into every exported model folder.

It says what the model is (architecture, classes and their colours, input normalisation),
how it was trained (the recipe's main fields, then the whole recipe), how well it scores
(the test metrics, per-class IoU) and how fast it ran when that is known, with the lines that
load it. The Hugging Face Hub shows it as the repository's page; its YAML front matter holds
the Hub's metadata (library, task, tags, ``model-index`` results).

``save_pretrained`` writes a first card from ``config.json``; once a run's final evaluation is
known, :func:`write_model_card` with ``run_dir`` rewrites it with the metrics.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any

import yaml

from seglab.errors import ModelError
from seglab.io_utils import atomic_write_text

CARD_FILE = "README.md"
CURVES_FILE = "curves.png"
# Marks a card seglab wrote (and may rewrite); a card without it was written by hand.
MARKER = "<!-- seglab model card: rewritten by seglab; delete this line to keep your edits -->"


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _pct(value: Any) -> str:
    number = _number(value)
    return "n/a" if number is None else f"{100 * number:.2f}"


def _cell(text: Any) -> str:
    """A Markdown table cell: a class name holding '|' must not split the row, and one
    holding ``<script>`` is shown as text (Markdown passes HTML through)."""
    return _text(text).replace("|", "\\|")


def _text(text: Any) -> str:
    """User-given text (class or run names) made inert in Markdown: HTML escaped."""
    return html.escape(str(text), quote=False)


def _hex(color: Any) -> str:
    try:
        r, g, b = (int(c) for c in color)
    except (TypeError, ValueError):
        return "n/a"
    return f"#{r:02x}{g:02x}{b:02x}"


def _bands(norm: dict[str, Any]) -> str:
    count = len(norm.get("mean") or (0, 0, 0))
    return "RGB" if count == 3 else f"{count} bands"


def _title(config: dict[str, Any], repo_id: str | None) -> str:
    recipe = config.get("recipe") if isinstance(config.get("recipe"), dict) else {}
    return repo_id or recipe.get("name") or config["model"]["name"]


def _front_matter(config: dict[str, Any], metrics: dict[str, Any] | None, title: str) -> str:
    meta: dict[str, Any] = {
        "library_name": "seglab",
        "pipeline_tag": "image-segmentation",
        "tags": ["seglab", "semantic-segmentation", "image-segmentation", "pytorch",
                 config["model"]["name"]],
    }
    metrics = metrics or {}
    split = str(metrics.get("split") or "test")
    scores = [
        {"type": kind, "name": f"{label} ({split})", "value": round(value, 4)}
        for key, kind, label in (("miou", "mean_iou", "mIoU"),
                                 ("pixel_acc", "pixel_accuracy", "pixel accuracy"))
        if (value := _number(metrics.get(key))) is not None
    ]
    if scores:
        dataset = str(metrics.get("data") or "folder")
        kind = dataset.split(":", 1)[0] if ":" in dataset else "folder"
        meta["model-index"] = [{
            "name": title,
            "results": [{
                "task": {"type": "image-segmentation", "name": "Semantic segmentation"},
                "dataset": {"name": kind, "type": kind, "split": split},
                "metrics": scores,
            }],
        }]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _classes_section(config: dict[str, Any]) -> list[str]:
    classes = config.get("classes") or {}
    names = classes.get("names") or [f"class {i}" for i in range(config["model"]["num_classes"])]
    colors = classes.get("colors") or []
    if classes:
        intro = f"{len(names)} classes; label value {classes.get('ignore_index', 255)} is ignored."
    else:
        intro = f"{len(names)} classes (no names were saved with the model)."
    lines = ["## Classes", "", intro, "", "| index | name | colour (RGB) |", "|---:|---|---|"]
    for i, name in enumerate(names):
        color = colors[i] if i < len(colors) else None
        rgb = ", ".join(str(int(c)) for c in color) if color is not None else "n/a"
        lines.append(f"| {i} | {_cell(name)} | {_hex(color)} ({rgb}) |")
    return [*lines, ""]


def _recipe_section(config: dict[str, Any]) -> list[str]:
    recipe = config.get("recipe")
    if not isinstance(recipe, dict):
        return ["## Training", "", "No training recipe was saved with this model.", ""]
    data, augment = recipe.get("data") or {}, recipe.get("augment") or {}
    optim, schedule = recipe.get("optim") or {}, recipe.get("schedule") or {}
    loss, trainer = recipe.get("loss") or {}, recipe.get("trainer") or {}
    rows = [
        ("data", data.get("spec")),
        ("batch size", data.get("batch_size")),
        ("crop", augment.get("crop_size")),
        ("train resize", augment.get("resize")),
        ("eval resize", augment.get("eval_resize")),
        ("loss", f"{loss.get('name')} (class weights: {loss.get('class_weights') or 'none'})"),
        ("optimiser", f"{optim.get('name')}, lr {optim.get('lr')}, "
                      f"weight decay {optim.get('weight_decay')}"),
        ("schedule", schedule.get("name")),
        ("epochs (max)", trainer.get("max_epochs")),
        ("time budget (min)", trainer.get("max_minutes")),
        ("precision", trainer.get("precision")),
        ("seed", trainer.get("seed")),
    ]
    lines = ["## Training", "", "| setting | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in rows if value is not None]
    lines += ["", "<details><summary>The full recipe (seglab train accepts this file)</summary>",
              "", "```yaml", yaml.safe_dump(recipe, sort_keys=False).rstrip(), "```", "",
              "</details>", ""]
    return lines


def _metrics_section(metrics: dict[str, Any] | None) -> list[str]:
    if not metrics:
        return ["## Evaluation", "", "Not evaluated yet (no metrics.json beside this model).", ""]
    split = metrics.get("split", "test")
    lines = [
        "## Evaluation", "",
        f"On the {split} split of `{metrics.get('data')}` ({metrics.get('num_images')} images):",
        "", "| metric | value (%) |", "|---|---:|",
    ]
    for key, label in (("miou", "mIoU"), ("pixel_acc", "pixel accuracy"),
                       ("mean_acc", "mean class accuracy"), ("fw_iou", "frequency-weighted IoU"),
                       ("mean_dice", "mean Dice")):
        if key in metrics:
            lines.append(f"| {label} | {_pct(metrics[key])} |")
    per_class = metrics.get("per_class")
    if isinstance(per_class, dict) and per_class:
        lines += ["", "| class | IoU (%) | accuracy (%) |", "|---|---:|---:|"]
        for name, row in per_class.items():
            row = row if isinstance(row, dict) else {}
            lines.append(f"| {_cell(name)} | {_pct(row.get('iou'))} | {_pct(row.get('acc'))} |")
    return [*lines, ""]


def _speed_section(metrics: dict[str, Any] | None, speed: dict[str, Any] | None) -> list[str]:
    lines = []
    metrics = metrics or {}
    evaluated = _number(metrics.get("eval_time_s"))
    if evaluated and metrics.get("num_images"):
        rate = float(metrics["num_images"]) / evaluated
        lines.append(f"- evaluation: {rate:.2f} images/s ({metrics['num_images']} images in "
                     f"{evaluated:.1f} s, data loading included, as the run measured it)")
    trained = _number(metrics.get("train_time_s"))
    if trained:
        lines.append(f"- training: {trained / 60:.1f} min for {metrics.get('epochs')} epochs")
    for key, value in (speed or {}).items():
        lines.append(f"- {key}: {value}")
    if not lines:
        return []
    return ["## Speed", "", *lines, ""]


def render_model_card(
    config: dict[str, Any],
    *,
    metrics: dict[str, Any] | None = None,
    speed: dict[str, Any] | None = None,
    repo_id: str | None = None,
    curves: str | None = None,
) -> str:
    """The card's Markdown for a model folder's ``config.json`` (and metrics when known).

    ``speed`` adds free ``label: value`` lines (e.g. a bench result); ``curves`` is the
    relative link to the run's ``curves.png``; ``repo_id`` is used in the loading example.
    """
    title = _title(config, repo_id)
    spec = config["model"]
    source = repo_id or "path/to/this/folder"
    options = json.dumps(spec.get("options") or {})
    norm = config.get("normalization") or {}
    how = (f"imported into seglab {config.get('seglab_version', '')} from "
           f"`{_text(config['imported_from'])}`" if config.get("imported_from")
           else f"trained with seglab {config.get('seglab_version', '')}")
    order = " in B, G, R order" if norm.get("channels") == "bgr" else ""
    lines = [
        f"# {_text(title)}", "",
        f"A semantic segmentation model {how}:"
        f" `{spec['name']}` with options `{options}`, {spec['num_classes']} classes.", "",
        "## Use it", "", "```python", "from seglab import Predictor", "",
        f'predictor = Predictor("{source}")', 'mask = predictor.predict("image.png")  # HxW',
        "```", "", "```bash", f"seglab predict {source} image.png --out predictions/", "```", "",
        f"Input: {_bands(norm)}{order} on a 0..1 scale, normalised with mean "
        f"{norm.get('mean')} and std {norm.get('std')} (Predictor does this).", "",
    ]
    lines += _classes_section(config)
    lines += _metrics_section(metrics)
    lines += _speed_section(metrics, speed)
    if curves:
        lines += ["## Training curves", "", f"![loss, val mIoU and learning rate]({curves})", ""]
    lines += _recipe_section(config)
    return _front_matter(config, metrics, title) + MARKER + "\n\n" + "\n".join(lines)


def is_generated_card(path: str | os.PathLike) -> bool:
    """True when the card at ``path`` is one seglab wrote (so rewriting it loses nothing)."""
    try:
        return MARKER in Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False


def _read_config(directory: Path) -> dict[str, Any]:
    # Read here, not through artifacts.pretrained (which writes cards: no import cycle).
    from seglab.artifacts.rundir import MODEL_CONFIG_FILE

    path = directory / MODEL_CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{directory} is not a model folder: {path.name} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise ModelError(f"{path} has no valid 'model' entry")
    return config


def write_model_card(
    directory: str | os.PathLike,
    config: dict[str, Any] | None = None,
    *,
    run_dir: str | os.PathLike | None = None,
    metrics: dict[str, Any] | None = None,
    speed: dict[str, Any] | None = None,
    repo_id: str | None = None,
) -> Path:
    """Write ``README.md`` into a model folder and return its path.

    ``config`` defaults to the folder's ``config.json``; ``run_dir`` (default: the run folder
    holding this ``model/``, if any) supplies ``metrics.json`` and ``curves.png`` when present.
    """
    from seglab.artifacts import rundir

    directory = Path(directory)
    if config is None:
        config = _read_config(directory)
    if run_dir is None:
        run_dir = rundir.run_dir_of(directory) if directory.name == rundir.MODEL_DIR else None
    curves = CURVES_FILE if (directory / CURVES_FILE).is_file() else None
    if run_dir is not None:
        run_dir = Path(run_dir)
        if metrics is None and rundir.metrics_path(run_dir).is_file():
            metrics = rundir.read_metrics(run_dir)
        if curves is None and (run_dir / CURVES_FILE).is_file():
            curves = os.path.relpath(run_dir / CURVES_FILE, directory).replace(os.sep, "/")
    text = render_model_card(config, metrics=metrics, speed=speed, repo_id=repo_id,
                             curves=curves)
    path = directory / CARD_FILE
    atomic_write_text(path, text)
    return path
