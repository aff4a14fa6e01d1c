"""Evaluate a trained model on a dataset split, scored at the labels' own resolution.

The model sees each image as the recipe's evaluation settings say (whole image, sliding
window, multi-scale + flip, optional input resize) through the one inference path,
:func:`seglab.engine.inference.predict_logits`; its probabilities come back at the image's
size, so labels are never resized. Every score comes from one dataset-level confusion matrix.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seglab.artifacts import rundir
from seglab.artifacts.device import accelerator_device, resolve_device
from seglab.artifacts.loader import load_inference_model
from seglab.artifacts.settings import ModelSettings, model_settings
from seglab.bootstrap import check_level, confidence_intervals
from seglab.boundary import boundary_rows
from seglab.class_ids import class_ids
from seglab.data.formats import open_source
from seglab.engine import distributed
from seglab.engine.health import one_class_warning
from seglab.engine.inference import predict_logits
from seglab.errors import ConfigError, DataError
from seglab.io_utils import atomic_path, atomic_write_text, json_safe
from seglab.metrics.boundary import boundary_scores
from seglab.metrics.confusion import SegMetric
from seglab.per_image import PerImageCounts, image_rows, row_width, save_counts, table_csv
from seglab.stops import ignore_in_worker
from seglab.viz import panel

log = logging.getLogger(__name__)

PER_CLASS_COLUMNS = ("class", "iou", "acc", "dice", "precision", "recall", "f1", "support")


def _batches(
    dataset: Any, batch_size: int, num_workers: int, indices: range | None = None
) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """(indices, uint8 images, int64 masks) with consecutive same-size images stacked.

    ``indices`` (a contiguous range, this process's shard) limits the walk; the indices
    returned are the dataset's own.
    """
    indices = indices if indices is not None else range(len(dataset))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, indices), batch_size=None, shuffle=False,
        num_workers=num_workers, worker_init_fn=ignore_in_worker if num_workers else None,
    )
    pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    def flush() -> tuple[list[int], torch.Tensor, torch.Tensor]:
        idx = [p[0] for p in pending]
        images = torch.stack([p[1] for p in pending])
        masks = torch.stack([p[2] for p in pending])
        pending.clear()
        return idx, images, masks

    for index, (image, mask) in zip(indices, loader, strict=True):
        if pending and (pending[0][1].shape != image.shape or len(pending) >= batch_size):
            yield flush()
        pending.append((index, image, mask))
    if pending:
        yield flush()


@dataclass(frozen=True)
class EvalOptions:
    """How an evaluation runs and what it writes (not how the model computes: that is the
    model's :class:`~seglab.artifacts.model.InferenceSettings`).

    ``out_dir``: folder for ``metrics.json``, ``per_class.csv``, ``confusion.npy``,
    ``per_image.npz``/``.csv`` and ``panels/`` (nothing written when None); ``num_panels``:
    image|truth|prediction panels (None: the recipe's ``eval.num_panels``, else 4);
    ``data_options``: options of the dataset format; ``precision``: ``auto``, ``bf16``,
    ``fp16`` or ``fp32``; ``device``; ``devices``/``accelerator``: processes scoring disjoint
    shards; ``extra``: keys added to the document; ``boundary``: Boundary IoU and BF scores;
    ``ci``: the level of the bootstrap intervals.
    """

    out_dir: str | os.PathLike | None = None
    num_panels: int | None = None
    data_options: dict[str, Any] | None = None
    batch_size: int = 4
    num_workers: int = 2
    precision: str = "auto"
    device: str = "auto"
    devices: int = 1
    accelerator: str | None = None
    extra: dict[str, Any] | None = None
    boundary: bool = True
    ci: float = 0.95


@dataclass(frozen=True)
class Scores:
    """One evaluation as values: the metrics ``document`` (what :func:`evaluate` returns; NaN
    where ``metrics.json`` writes null), the dataset ``confusion`` matrix and the ``per_image``
    counts (``confusion.npy``, ``per_image.npz``), for callers that go on in the same process."""

    document: dict[str, Any]
    confusion: np.ndarray
    per_image: PerImageCounts


_OPTION_KEYS = tuple(f.name for f in fields(EvalOptions))
_SETTING_KEYS = tuple(f.name for f in fields(ModelSettings))


def evaluate(
    source: str | os.PathLike | torch.nn.Module,
    data_spec: str | Any | None = None,
    split: str = "test",
    *,
    settings: ModelSettings | None = None,
    options: EvalOptions | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    **keywords: Any,
) -> dict[str, Any]:
    """Score ``source`` on ``split`` of a dataset.

    ``source`` is anything :func:`seglab.artifacts.loader.load_inference_model` reads (run or
    model folder, ``.ckpt``, ONNX, TorchScript or state-dict file, ``nn.Module``), run with
    the inference settings it was saved with (:class:`~seglab.artifacts.model.
    InferenceSettings`: ``size``, ``mode``, ``crop``, ``stride``, ``scales``, ``flip``, from
    its folder, checkpoint recipe or embedded config), which ``settings``
    (:class:`~seglab.artifacts.settings.ModelSettings`: those and ``mean``, ``std``,
    ``scale``, ``channels``, ``classes``, ``num_classes``, ``model``) override or complete;
    a model without class names takes the dataset's (said in the document's ``notes``).
    ``options`` (:class:`EvalOptions`) say how to run and what to write. Every field of
    either is also taken as a keyword (``evaluate(run, spec, flip=False, out_dir=...)``).
    ``data_spec`` is ``'<format>:<path>'`` or an opened ``DataSource``; None: the recipe's.
    Returns the metrics document (:func:`seglab.metrics.metrics_from_confusion` plus
    ``split``, ``num_images``, ``data``, ``inference``, ``eval_time_s``, ``ci``: bootstrap
    intervals at level ``ci`` (:mod:`seglab.bootstrap`), and with ``boundary``
    ``boundary_miou``, ``mean_bf`` and ``boundary`` (:mod:`seglab.boundary`)).

    Distributed: ``devices=N`` starts N processes (``accelerator`` ``cpu``: Gloo, ``gpu``: NCCL,
    one GPU each) and returns rank 0's document. Called inside a process group (after DDP
    training, under torchrun) it scores this process's shard. Shards never overlap, so every
    image is scored exactly once; the confusion matrices are summed and rank 0 alone writes
    ``out_dir``. The metrics equal a single process's. ``progress("scoring <split>", done,
    total)`` is called after each batch with the images scored so far (rank 0's shard).

    Raises:
        TypeError: a keyword that is neither a setting nor an option.
    """
    return score(source, data_spec, split, settings=settings, options=options,
                 progress=progress, **keywords).document


def score(
    source: str | os.PathLike | torch.nn.Module,
    data_spec: str | Any | None = None,
    split: str = "test",
    *,
    settings: ModelSettings | None = None,
    options: EvalOptions | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    **keywords: Any,
) -> Scores:
    """:func:`evaluate`, returning the confusion matrix and per-image counts with the document
    (:class:`Scores`)."""
    settings, options = _grouped(settings, options, keywords)
    try:
        options = replace(options, ci=check_level(options.ci))
    except ValueError as exc:
        raise ConfigError(f"--ci {options.ci}: {exc}") from None
    if options.accelerator is not None and options.device == "auto":
        options = replace(options, device=accelerator_device(options.accelerator))
    if options.devices > 1 and distributed.world()[1] == 1:
        accelerator = options.accelerator  # from --device: one process per GPU, or CPU ones
        if accelerator is None:
            accelerator = "gpu" if resolve_device(options.device).type == "cuda" else "cpu"
        kwargs = {"source": source, "data_spec": data_spec, "split": split,
                  "settings": settings, "options": options}  # progress stays here
        return distributed.run_processes(_evaluate_shard, options.devices, accelerator, kwargs)
    if options.devices < 1:
        raise ConfigError(f"devices must be at least 1, got {options.devices}")
    return _evaluate(source, data_spec, split, settings, options, progress)


def _grouped(settings: ModelSettings | None, options: EvalOptions | None,
             keywords: dict[str, Any]) -> tuple[ModelSettings, EvalOptions]:
    """``settings`` and ``options`` with the keywords of each set on them."""
    unknown = sorted(set(keywords) - set(_OPTION_KEYS) - set(_SETTING_KEYS))
    if unknown:
        raise TypeError(f"evaluate() got an unexpected keyword argument {unknown[0]!r}")
    given = {k: v for k, v in keywords.items() if k in _OPTION_KEYS}
    settings = model_settings(settings, **{k: v for k, v in keywords.items()
                                           if k in _SETTING_KEYS})
    return settings, replace(options or EvalOptions(), **given)


def _evaluate(source: Any, data_spec: Any, split: str, settings: ModelSettings,
              options: EvalOptions, progress: Callable[[str, int, int], None] | None
              ) -> Scores:
    """One process's evaluation (see :func:`evaluate`)."""
    rank, world_size = distributed.world()
    loaded = load_inference_model(source, resolve_device(options.device), settings=settings)
    source = loaded.source if isinstance(source, torch.nn.Module) else source
    recipe = loaded.recipe or {}
    data_cfg = recipe.get("data") or {}
    data_options = options.data_options
    if data_spec is None:
        data_spec = data_cfg.get("spec")
        if data_options is None:
            data_options = data_cfg.get("options") or {}
        if data_spec is None:
            raise ConfigError(f"{source} has no saved recipe: pass the dataset with --data SPEC")
    inference = loaded.inference.predict_options()
    num_panels = options.num_panels
    if num_panels is None:
        num_panels = int((recipe.get("eval") or {}).get("num_panels", 4))

    if isinstance(data_spec, str):
        data = open_source(data_spec, **(data_options or {}))
    else:
        data, data_spec = data_spec, data_spec.spec
    if split not in data.splits or not data.splits[split]:
        available = ", ".join(k for k, v in data.splits.items() if v) or "none"
        raise DataError(f"{data_spec} has no '{split}' split (available: {available})")
    classmap = loaded.classmap
    if data.classmap.num_classes != classmap.num_classes:
        raise DataError(
            f"{data_spec} has {data.classmap.num_classes} classes but the model predicts "
            f"{classmap.num_classes} ({source}): evaluate on the dataset it was trained for"
        )
    notes = list(loaded.notes)
    if any(note.startswith("classes:") for note in notes):  # the model names no classes
        classmap = data.classmap
        notes = [n for n in notes if not n.startswith("classes:")]
        notes.append(f"classes: the dataset's ({', '.join(classmap.names)}); the model names "
                     "none (--classes FILE to give its own)")
    dataset = data.dataset(split)  # no transform: labels stay at their own resolution
    # Synced explicitly below (all_reduce_sum), on the device the process group needs.
    metric = SegMetric(
        classmap.num_classes, data.classmap.ignore_index, names=classmap.names,
        sync_on_compute=False,
    )
    writes = options.out_dir is not None and rank == 0
    panel_dir = rundir.panels_dir(options.out_dir) if writes else None
    indices = distributed.shard(len(dataset), rank, world_size, block=options.batch_size)
    # Each process fills its own images' rows; the sum over processes is every image's row.
    num_classes = classmap.num_classes
    rows = torch.zeros(len(dataset), row_width(num_classes), dtype=torch.long)
    edges = (torch.zeros(len(dataset), 7, num_classes, dtype=torch.long)
             if options.boundary else None)
    panels_written = scored = 0
    started = time.perf_counter()
    for batch_indices, images, masks in _batches(dataset, options.batch_size,
                                                 options.num_workers, indices):
        probs = predict_logits(loaded.model, images, precision=options.precision, **inference)
        preds = class_ids(probs).cpu()
        batch_rows = image_rows(preds, masks, num_classes, data.classmap.ignore_index)
        rows[batch_indices] = batch_rows
        if batch_rows.shape[1] == num_classes * num_classes:
            # The rows are the images' confusion matrices: their sum is the batch's matrix,
            # so one bincount serves both (integer sums: the same matrix, exactly).
            metric.update(confusion=batch_rows.sum(0).view(num_classes, num_classes))
        else:
            metric.update(preds, masks)
        if edges is not None:
            edges[batch_indices] = boundary_rows(preds, masks, num_classes,
                                                 data.classmap.ignore_index)
        scored += len(batch_indices)
        if progress is not None and rank == 0:
            progress(f"scoring {split}", scored, len(indices))
        if panel_dir is not None and panels_written < num_panels:
            panels_written += _write_panels(
                dataset, batch_indices, images, masks, preds, data.classmap, panel_dir,
                num_panels - panels_written,
            )
    metric.confmat = distributed.all_reduce_sum(metric.confmat)
    counts = PerImageCounts.from_rows(
        [Path(pair[0]).stem for pair in dataset.pairs], list(classmap.names),
        distributed.all_reduce_sum(rows).numpy(),
        distributed.all_reduce_sum(edges).numpy() if edges is not None else None,
    )
    elapsed = time.perf_counter() - started

    doc = metric.scores()
    if counts.boundary is not None:
        doc.update(boundary_scores(counts.boundary, counts.names))
    doc["ci"] = confidence_intervals(counts, level=options.ci)
    doc.update(
        {
            "split": split,
            "num_images": len(dataset),
            "data": data_spec,
            "model": str(source),
            "inference": {**loaded.inference.resolved(), "precision": options.precision},
            "eval_time_s": elapsed,
            "processes": world_size,
            **({"notes": notes} if notes else {}),
            **(options.extra or {}),
        }
    )
    confusion = metric.compute().cpu().numpy()
    said = one_class_warning(confusion, data.classmap.names)
    if said:
        log.warning("%s", said)
        doc["warnings"] = [*doc.get("warnings", []), said]
    if writes:
        write_evaluation(doc, confusion, options.out_dir, counts)
    distributed.barrier()  # the files exist for every process once evaluate returns
    return Scores(doc, confusion, counts)


def _evaluate_shard(device: str, source: Any, data_spec: Any, split: str,
                    settings: ModelSettings, options: EvalOptions) -> Scores:
    """One process of a ``devices=N`` evaluation (run by ``distributed.run_processes``)."""
    return score(source, data_spec, split, settings=settings,
                    options=replace(options, device=device))


def _write_panels(
    dataset: Any,
    indices: list[int],
    images: torch.Tensor,
    masks: torch.Tensor,
    preds: torch.Tensor,
    classmap: Any,
    folder: Path,
    limit: int,
) -> int:
    written = 0
    for i, index in enumerate(indices[:limit]):
        stem = Path(dataset.pairs[index][0]).stem
        panel(
            images[i].permute(1, 2, 0).numpy(),
            masks[i].numpy(),
            {"prediction": preds[i].numpy()},
            classmap,
            folder / f"{stem}.png",
            title=stem,
        )
        written += 1
    return written


def write_evaluation(
    doc: dict[str, Any],
    confusion: np.ndarray,
    out_dir: str | os.PathLike,
    per_image: PerImageCounts | None = None,
) -> None:
    """Write ``metrics.json``, ``per_class.csv``, ``confusion.npy`` (and, given the per-image
    counts, ``per_image.npz`` and ``per_image.csv``) atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(rundir.metrics_path(out), json.dumps(json_safe(doc), indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(PER_CLASS_COLUMNS)
    for name, row in doc["per_class"].items():
        writer.writerow([name, *(_cell(row[k]) for k in PER_CLASS_COLUMNS[1:])])
    atomic_write_text(rundir.per_class_path(out), buffer.getvalue())
    with atomic_path(rundir.confusion_path(out)) as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.asarray(confusion, dtype=np.int64))
    if per_image is not None:
        with atomic_path(rundir.per_image_path(out)) as tmp, open(tmp, "wb") as handle:
            save_counts(per_image, handle)
        atomic_write_text(rundir.per_image_table_path(out), table_csv(per_image))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if value != value else f"{value:.6f}"
    return str(value)
