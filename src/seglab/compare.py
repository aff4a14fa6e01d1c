"""``seglab compare``: train (or reuse, or evaluate) several models on one split, benchmark, report.

Each entry is a registry model name (trained under one shared recipe into
``runs/<name>/<model>/``, reused when that run already finished) or an existing run folder,
model folder, ``.ckpt``, ONNX, TorchScript or state-dict file (evaluated as it is; the
``settings`` given apply to the files, which say less than a seglab folder). The report lands
in ``runs/<name>/compare/``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seglab.artifacts import rundir
from seglab.artifacts.loader import STATE_DICT_SUFFIXES, load_inference_model
from seglab.artifacts.runtimes import ONNX_SUFFIX, TORCHSCRIPT_SUFFIXES
from seglab.artifacts.settings import ModelSettings
from seglab.class_ids import class_ids
from seglab.engine.run_result import FitResult
from seglab.errors import ConfigError
from seglab.io_utils import json_safe
from seglab.models.registry import split_model_entry
from seglab.parallel_training import TrainingJob, check_jobs, run_trainings
from seglab.paths import RUNS_ROOT
from seglab.report import GallerySample, ModelResult, ReportFiles, ReportInfo, write_report
from seglab.report.runs import load_run
from seglab.report.significance import WORST_IMAGES, worst_images

Progress = Callable[[str], None]

_FOLDER_SAFE = re.compile(r"[\w.+-]+")  # a label is also its run folder's name
LATENCY_METHOD = (
    "Latency: seglab bench, batch of 1 image at the evaluation size, {mode} on CPU, "
    "{warmup} warm-up runs, median of {repeats} under inference_mode; "
    "GFLOPs = multiply-adds / 1e9 (torchvision's convention) from torch.utils.flop_counter; "
    "size = MiB of the fp32 state dict."
)


@dataclass
class CompareOutcome:
    """What :func:`compare` produced."""

    results: list[ModelResult]
    report: ReportFiles
    significance: dict[str, Any] | None = None
    seeds: dict[str, Any] | None = None


def parse_model_entry(entry: str) -> tuple[str, dict[str, str], str]:
    """Split ``"unet:base_channels=16,depth=3"`` into (name, options, label).

    Options apply to that model only (the shared recipe applies to all); the reserved option
    ``label=NAME`` names the model in the report and its run folder.
    """
    name, options = split_model_entry(entry, typed=False)
    label = options.pop("label", None)
    if label is not None and not _FOLDER_SAFE.fullmatch(label):
        raise ConfigError(f"model entry {entry!r}: label={label!r} names a run folder; use "
                          "letters, digits and . _ + - only")
    if label is None:  # family names (smp:unet/resnet34) hold ':' and '/': one folder, not three
        label = "-".join([name] + [f"{k}{v}" for k, v in options.items()])
        label = re.sub(r"[^\w.+-]+", "_", label)
    return name, options, label


def _is_existing_model(entry: str) -> bool:
    return Path(entry).expanduser().exists()


def _label_for(entry: str, taken: set[str]) -> str:
    label = rundir.source_name(entry)
    base, n = label, 2
    while label in taken:
        label, n = f"{base}_{n}", n + 1
    return label


def _same_spec(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    fa, _, pa = a.partition(":")
    fb, _, pb = b.partition(":")
    return fa == fb and Path(pa).expanduser().resolve() == Path(pb).expanduser().resolve()


def _plan_training(
    entry: str,
    data: str,
    recipe_file: str | None,
    overrides: Sequence[str],
    epochs: int | None,
    run_dir: Path,
    label: str | None = None,
) -> TrainingJob | None:
    """The training ``entry`` needs (its recipe checked here), or None for a finished run."""
    model_name, options, parsed_label = parse_model_entry(entry)
    label = label or parsed_label
    from seglab.config import Recipe
    from seglab.models.registry import model_info

    model_info(model_name)  # a misspelt name fails here (did you mean ...?), before any training

    # A shared recipe's model options belong to its own model (e.g. LR-ASPP's `weights`);
    # another architecture starts from its defaults, then takes the --set overrides.
    reset = [] if _recipe_model_name(recipe_file) in (None, model_name) else ["model.options={}"]
    extra = [f"name={label}", f"model.name={model_name}", f"data.spec={data}"]
    extra += [f"model.options.{key}={value}" for key, value in options.items()]
    if epochs is not None:
        extra.append(f"trainer.max_epochs={epochs}")
    recipe = Recipe.from_yaml(recipe_file, [*reset, *overrides, *extra])
    if rundir.is_finished(run_dir):
        differences = recipe_differences(rundir.read_recipe(run_dir) or {}, recipe.to_dict())
        if differences:
            raise ConfigError(
                f"{run_dir} is a finished run of another recipe ({'; '.join(differences[:4])}"
                f"{'; ...' if len(differences) > 4 else ''}): delete that folder to retrain "
                "it, or compare under another --name"
            )
        return None
    return TrainingJob(label, run_dir, recipe.to_dict(), resume=rundir.can_resume(run_dir))


# What a run records but does not change its weights: the name, how it printed and loaded.
_NOT_THE_RECIPE = frozenset({"name", "trainer.progress", "data.num_workers"})


def _flat(doc: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(doc, dict) and doc:
        out: dict[str, Any] = {}
        for key, value in doc.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: doc}


def recipe_differences(finished: dict[str, Any], asked: dict[str, Any]) -> list[str]:
    """``key: the run had A, this asks B`` for every field where a finished run's recipe
    differs from the one asked (``trainer.precision: auto`` matches the choice it made;
    ``data.spec`` compares resolved paths)."""
    have, want = _flat(finished), _flat(asked)
    lines = []
    for key in sorted(set(have) | set(want)):
        old, new = have.get(key), want.get(key)
        if old == new or key in _NOT_THE_RECIPE:
            continue
        if key == "trainer.precision" and new == "auto":
            continue
        if key == "data.spec" and _same_spec(old, new):
            continue
        lines.append(f"{key}: the run had {old!r}, this asks {new!r}")
    return lines


def _recipe_model_name(recipe_file: str | None) -> str | None:
    if recipe_file is None:
        return None
    from seglab.config import read_recipe_text

    text = read_recipe_text(Path(recipe_file))  # unreadable or not UTF-8: a clear error
    from seglab.yaml_limits import YamlTooLarge, load_yaml

    try:
        raw = load_yaml(text, f"recipe file {recipe_file}") or {}
    except YamlTooLarge:
        raise
    except ConfigError:
        return None  # Recipe.from_yaml reports the problem with the file's name
    model = raw.get("model") if isinstance(raw, dict) else None
    return model.get("name") if isinstance(model, dict) else None


def settings_for(entry: str | Path, settings: ModelSettings | None) -> ModelSettings | None:
    """The settings that apply to one entry: a model file's; a folder or .ckpt keeps its own."""
    path = Path(entry).expanduser()
    files = (ONNX_SUFFIX, *TORCHSCRIPT_SUFFIXES, *STATE_DICT_SUFFIXES)
    return settings if path.is_file() and path.suffix.lower() in files else None


def _evaluate_existing(
    entry: str, label: str, data: str, split: str, eval_dir: Path, progress: Progress,
    settings: ModelSettings | None = None,
) -> ModelResult:
    path = Path(entry).expanduser()
    if rundir.is_finished(path):
        metrics = rundir.read_metrics(path)
        recipe_spec = ((rundir.read_recipe(path) or {}).get("data") or {}).get("spec")
        if metrics.get("split") == split and _same_spec(recipe_spec, data):
            progress(f"reusing {path} (finished run, scored on the {split} split of {data})")
            return load_run(path, label=label, status="reused")
    from seglab.engine import evaluate

    progress(f"evaluating {path} on the {split} split of {data}")
    evaluate(path, data, split, out_dir=eval_dir, num_panels=0,
             settings=settings_for(path, settings))
    if path.is_dir() and (rundir.holds_run(path) or rundir.metrics_path(path).is_file()):
        return load_run(path, label=label, metrics_dir=eval_dir, status="evaluated")
    result = load_run(eval_dir, label=label, status="evaluated")
    result.source = str(path)
    return result


def latency_backend() -> str:
    """seglab's default inference path on this CPU: bf16 where the CPU computes it, else fp32."""
    from seglab.artifacts.device import cpu_bf16_native

    return "bf16" if cpu_bf16_native() else "eager"


def benchmark_model(
    loaded: Any, size: tuple[int, int], warmup: int, repeats: int
) -> dict[str, Any]:
    """Report figures for one loaded model, measured by :func:`seglab.bench.benchmark`."""
    from seglab.bench import benchmark
    from seglab.bench.runtime_file import FILE_BACKEND, benchmarkable

    device = torch.device("cpu")
    model, stats = benchmarkable(loaded.model)  # a model file runs in its own runtime
    figures = benchmark(model, size, device=device,
                        backend=latency_backend() if stats is None else FILE_BACKEND,
                        warmup=warmup, repeats=repeats, stats=stats)
    return {
        "params": figures["params"],
        "trainable_params": figures["trainable_params"],
        "size_mb": figures["weight_mb"],
        "gflops": figures["gflops"],
        "latency_ms": figures["latency_ms"],
        "latency_p90_ms": figures["latency_p90_ms"],
        "gpu_mem_mb": figures["peak_mem_mb"] if device.type == "cuda" else None,
        "device": str(device),
        "input": f"{size[0]}x{size[1]}",
    }


def _eval_size(result: ModelResult, fallback: tuple[int, int],
               saved_size: Any = None) -> tuple[int, int]:
    size = ((result.recipe or {}).get("augment") or {}).get("eval_resize") or saved_size
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[0]), int(size[1])
    if isinstance(size, int):
        return size, size
    return fallback


def _sample(results: list[ModelResult], loaded: dict[str, Any], dataset: Any,
            index: int) -> GallerySample:  # fmt: skip
    """Image ``index`` of ``dataset`` with each of ``results``' models' prediction on it."""
    from seglab.engine.inference import predict_logits

    image, mask = dataset[index]
    preds = {}
    for result in results:
        model = loaded[result.label]
        size = _eval_size(result, tuple(image.shape[-2:]), model.settings.get("size"))
        with torch.inference_mode():
            probs = predict_logits(model.model, image[None],
                                   **{**model.inference.predict_options(), "size": size})
        preds[result.label] = class_ids(probs)[0].numpy()
    name = Path(dataset.pairs[index][0]).name
    return GallerySample(name, image.permute(1, 2, 0).numpy(), mask.numpy(), preds)


def _gallery(
    results: list[ModelResult], loaded: dict[str, Any], data: str, split: str, count: int,
    worst: int = WORST_IMAGES,
) -> tuple[list[GallerySample], dict[str, list[GallerySample]], Any]:
    """``count`` evenly spaced images with every model's prediction, and each model's
    ``worst`` hardest images (lowest per-image mIoU) with its own prediction."""
    from seglab.data.formats import open_source

    source = open_source(data)
    dataset = source.dataset(split)
    if len(dataset) == 0:
        return [], {}, source.classmap
    shown = max(0, min(count, len(dataset)))
    indices = np.linspace(0, len(dataset) - 1, num=shown).round().astype(int)
    samples = [_sample(results, loaded, dataset, i) for i in dict.fromkeys(indices.tolist())]
    # Per-image ids are the image files' stems (seglab.engine.evaluation).
    by_stem = {Path(pair[0]).stem: i for i, pair in enumerate(dataset.pairs)}
    hardest: dict[str, list[GallerySample]] = {}
    by_label = {r.label: r for r in results}
    for row in worst_images(results, worst) if worst > 0 else []:
        found = [by_stem[i["image"]] for i in row["images"] if i["image"] in by_stem]
        hardest[row["label"]] = [_sample([by_label[row["label"]]], loaded, dataset, index)
                                 for index in found]  # fmt: skip
    return samples, hardest, source.classmap


def compare(
    models: Sequence[str],
    data: str,
    *,
    recipe: str | None = None,
    overrides: Sequence[str] = (),
    name: str = "compare",
    epochs: int | None = None,
    runs_root: str | Path = RUNS_ROOT,
    split: str = "test",
    gallery_size: int = 4,
    title: str | None = None,
    command: str = "",
    jobs: int = 1,
    progress: Progress = print,
    settings: ModelSettings | None = None,
    seeds: int = 1,
) -> CompareOutcome:
    """Train/reuse/evaluate ``models`` on ``data``, benchmark them and write the report.

    ``seeds=N`` (N > 1) trains each registry model with ``trainer.seed`` 0..N-1 into
    ``runs/<name>/<label>-seed<k>/`` (finished ones reused) and summarises them
    (:mod:`seglab.seeds`: mean, std, interval over seeds); run folders are evaluated once.

    ``jobs`` trainings run at once, each in its own process with an equal share of the CPU
    threads (:mod:`seglab.parallel_training`; their output in ``runs/<name>/logs/``).
    ``settings`` (mean/std/scale, channels, classes, ...) apply to the ONNX, TorchScript and
    state-dict files among ``models`` (see :func:`settings_for`).
    Returns the per-model results and the report's paths (``runs/<name>/compare/``).
    """
    if not models:
        raise ConfigError("compare needs at least one model name, run folder or checkpoint")
    check_jobs(jobs)
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    _recipe_model_name(recipe)  # an unreadable recipe fails before any folder exists
    from seglab.artifacts.lock import folder_lock

    root = Path(runs_root) / name
    # One compare per folder: a second one into it is refused (each model's run is locked
    # again by its training, so a `seglab train` into one of them is refused too).
    with folder_lock(root, "seglab compare"):
        return _compare_locked(models, data, recipe, overrides, epochs, root, split,
                               gallery_size, title or f"Model comparison: {name}", command,
                               jobs, progress, settings, seeds)  # fmt: skip


def _compare_locked(
    models: Sequence[str],
    data: str,
    recipe: str | None,
    overrides: Sequence[str],
    epochs: int | None,
    root: Path,
    split: str,
    gallery_size: int,
    title: str,
    command: str,
    jobs: int,
    progress: Progress,
    settings: ModelSettings | None = None,
    seeds: int = 1,
) -> CompareOutcome:
    from seglab.seeds import seed_label, seed_overrides, seed_table

    # Every entry and recipe is checked before the first training starts.
    plans: list[tuple[str, str, str, TrainingJob | None]] = []  # (entry, label, kind, job)
    labels: set[str] = set()
    seed_groups: dict[str, dict[int, str]] = {}  # configuration -> {seed: run label}
    for entry in models:
        if _is_existing_model(entry):
            label = _label_for(entry, labels)
            plans.append((entry, label, "evaluated", None))
            labels.add(label)
            continue
        base = parse_model_entry(entry)[2]
        for seed in range(seeds) if seeds > 1 else [None]:
            label = base if seed is None else seed_label(base, seed)
            if label in labels:
                raise ConfigError(f"model {entry!r} is listed twice")
            seeded = overrides if seed is None else seed_overrides(overrides, seed)
            job = _plan_training(entry, data, recipe, seeded, epochs, root / label, label)
            plans.append((entry, label, "trained" if job else "reused", job))
            labels.add(label)
            if seed is not None:
                seed_groups.setdefault(base, {})[seed] = label
    trained = run_trainings([job for *_, job in plans if job is not None], jobs, root / "logs",
                            progress)

    results: list[ModelResult] = []
    for entry, label, kind, _ in plans:
        if kind == "evaluated":
            result = _evaluate_existing(entry, label, data, split, root / "evals" / label, progress,
                                        settings)
        elif label in trained and trained[label].confusion is not None:
            result = _trained_result(trained[label], label)
        else:
            if kind == "reused":
                progress(f"reusing finished run {root / label} (delete it to retrain)")
            result = load_run(root / label, label=label, status=kind)
        results.append(result)

    from seglab.bench.backends import BACKEND_NOTES
    from seglab.data.formats import open_source

    # Models without a recipe eval size are benchmarked at the data's own image size.
    test_set = open_source(data).dataset(split)
    data_size = tuple(test_set[0][0].shape[-2:]) if len(test_set) else (512, 512)
    loaded = {}
    warmup, repeats = 3, 10
    for result in results:
        source = Path(result.source)
        loaded[result.label] = load_inference_model(source, "cpu",
                                                    settings=settings_for(source, settings))
        size = _eval_size(result, data_size, loaded[result.label].settings.get("size"))
        progress(f"benchmarking {result.label} at {size[0]}x{size[1]}")
        result.bench = benchmark_model(loaded[result.label], size, warmup, repeats)
    progress(f"rendering predictions on {gallery_size} {split} images")
    gallery, hardest, classmap = _gallery(results, loaded, data, split, gallery_size)
    info = ReportInfo(
        title=title,
        data=data,
        split=split,
        bench_note=LATENCY_METHOD.format(mode=BACKEND_NOTES[latency_backend()], warmup=warmup,
                                         repeats=repeats),
        command=command,
        method=[
            "Training time is the wall-clock time of fit() (validation included), "
            f"as recorded in each run's {rundir.METRICS_FILE}.",
            f"Torch threads: {torch.get_num_threads()}.",
        ],
    )
    significance = paired_significance(results, progress)
    by_label = {r.label: r.metrics for r in results}
    seed_summary = seed_table({
        base: {seed: by_label[label] for seed, label in runs.items()}
        for base, runs in seed_groups.items()
    }) if seed_groups else None
    report = write_report(results, classmap, root / "compare", gallery=gallery, info=info,
                          significance=significance, seeds=seed_summary, worst=hardest)
    return CompareOutcome(results, report, significance, seed_summary)


def _trained_result(fitted: FitResult, label: str) -> ModelResult:
    """The report's entry for a model trained just now, from the value ``fit`` returned (what
    :func:`seglab.report.runs.load_run` would read back from its folder)."""
    recipe = fitted.plan.recipe.to_dict() if fitted.plan is not None else None
    return ModelResult(label=label, metrics=json_safe(fitted.metrics),
                       history=list(fitted.history), confusion=fitted.confusion, recipe=recipe,
                       source=str(fitted.run_dir), status="trained", per_image=fitted.per_image)


def paired_significance(results: list[ModelResult], progress: Progress) -> dict[str, Any] | None:
    """The paired tests of :mod:`seglab.paired` between the models with per-image counts.

    Models scored before per-image counts existed are left out (and named); fewer than two
    models with counts, or models scored on different images, give None with a message.
    """
    from seglab.errors import DataError
    from seglab.paired import significance_table

    counted = {r.label: r.per_image for r in results if r.per_image is not None}
    missing = [r.label for r in results if r.per_image is None]
    if missing:
        progress(f"no per-image counts for {', '.join(missing)} (scored by an older seglab): "
                 "left out of the significance table; re-evaluate them to include them")
    if len(counted) < 2:
        return None
    try:
        table = significance_table(counted)
    except DataError as exc:
        progress(f"no significance table: {exc}")
        return None
    table["left_out"] = missing
    return table
